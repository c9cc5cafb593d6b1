"""Distributed runs without GPUs (``torchrun`` on CPU, gloo backend).

MMEngine 0.10.7's ``init_dist('pytorch')`` calls ``torch.cuda.set_device``
and its runner wraps models in DDP with ``device_ids=[LOCAL_RANK]``; both
fail on a CPU-only machine. :func:`setup_cpu_distributed` initialises the
process group with gloo itself (so the runner skips ``init_dist``) and asks
for a DDP wrapper without ``device_ids``. It does nothing when CUDA is
available or the launcher is ``'none'``.
"""
import torch
import torch.distributed as dist
from mmengine.config import Config


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
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    return True
