"""Runs without GPUs: ``torchrun`` on CPU (gloo backend) and SyncBN.

MMEngine 0.10.7's ``init_dist('pytorch')`` calls ``torch.cuda.set_device``
and its runner wraps models in DDP with ``device_ids=[LOCAL_RANK]``; both
fail on a CPU-only machine. :func:`setup_cpu_distributed` initialises the
process group with gloo itself (so the runner skips ``init_dist``) and asks
for :class:`CPUDistributedDataParallel`, a DDP wrapper without
``device_ids`` that turns SyncBN layers (GPU only; every Cityscapes config
uses them) into BN first, as mmseg's own CPU tools do. It does nothing when
CUDA is available or the launcher is ``'none'``.
"""
import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

from mmrankkd.registry import MODEL_WRAPPERS


def has_sync_bn(model: nn.Module) -> bool:
    """Whether ``model`` holds any SyncBatchNorm layer."""
    return any(isinstance(m, nn.SyncBatchNorm) for m in model.modules())


def revert_sync_bn_for_cpu(model: nn.Module) -> nn.Module:
    """``model`` with SyncBN turned into BN (logged once) when it has any."""
    if not has_sync_bn(model):
        return model
    print_log(
        'No GPU: SyncBatchNorm layers are turned into BatchNorm (statistics '
        'per process).', logger='current')
    return revert_sync_batchnorm(model)


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """``MMDistributedDataParallel`` for CPU processes (gloo): no
    ``device_ids``, SyncBN reverted to BN before wrapping."""

    def __init__(self, module: nn.Module, **kwargs):
        kwargs.pop('device_ids', None)
        super().__init__(
            module=revert_sync_bn_for_cpu(module), device_ids=None, **kwargs)


def setup_cpu_distributed(cfg: Config) -> bool:
    """Prepare ``cfg`` (and the process group) for a CPU pytorch launch.

    Returns:
        bool: Whether the CPU path was taken.
    """
    if cfg.get('launcher', 'none') != 'pytorch' or torch.cuda.is_available():
        return False
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    dist_cfg['backend'] = 'gloo'
    if not dist.is_initialized():
        dist.init_process_group(backend='gloo')
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') in (
            'MMDistributedDataParallel', 'mmrankkd.CPUDistributedDataParallel'):
        wrapper['type'] = 'mmrankkd.CPUDistributedDataParallel'
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True



def close_distributed() -> None:
    """End a distributed run cleanly: every rank waits for the others, then
    the process group is destroyed. MMEngine leaves it to interpreter exit,
    where a gloo rank can abort ('terminate called without an active
    exception') after training finished and fail the whole torchrun."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
