"""Student parameters that get no gradient, frozen and named.

With ``student_task_loss=False`` the student trains on the distillation
losses alone, which read only its class logits. Every parameter that does
not lead to those logits (an auxiliary head, PointRend's point head, the
side branches of DDRNet, PIDNet and EncNet, ...) then gets no gradient: it
would silently never train, and DDP (``find_unused_parameters=False``, the
default) would wait for its gradient and fail at the next iteration.

The runner wraps the model in DDP as soon as it is built, before any batch
is seen, and DDP registers every parameter that requires a gradient at that
moment. So the distiller finds these parameters when it is built: it runs
the student's path to its logit module once on a synthetic batch (eval
mode, no gradient step, random state and buffers untouched) and walks the
autograd graph of the logits back to the leaf parameters
(:func:`unreached_parameters`); the rest are frozen and named in the log
(:func:`freeze`). The first training step checks the real losses' graph the
same way (:func:`unreached_parameters` on the loss), so a parameter the
build-time pass could not see is still frozen (single process) or named in
an error (distributed) instead of training silently or hanging DDP.
"""
import logging
from typing import Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from torch import Tensor

from .logit_taps import LogitTap
from .teacher import forward_to_logits

NamedParameters = List[Tuple[str, nn.Parameter]]


def reached_leaves(roots: Iterable[Tensor]) -> set:
    """``id`` of every leaf tensor that requires grad and that a backward
    from ``roots`` would reach (the ``AccumulateGrad`` nodes of their
    autograd graph)."""
    seen, leaves = set(), set()
    stack = [t.grad_fn for t in roots if t.grad_fn is not None]
    stack += [t for t in roots if t.grad_fn is None and t.requires_grad]
    while stack:
        node = stack.pop()
        if isinstance(node, Tensor):  # a root that is itself a leaf
            leaves.add(id(node))
            continue
        if node is None or node in seen:
            continue
        seen.add(node)
        variable = getattr(node, 'variable', None)
        if variable is not None:
            leaves.add(id(variable))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return leaves


def unreached_parameters(module: nn.Module, roots: Sequence[Tensor],
                         prefix: str = '') -> NamedParameters:
    """``module``'s trainable parameters that no backward from ``roots``
    reaches, with their names (``prefix`` + name)."""
    reached = reached_leaves(roots)
    return [(prefix + name, p) for name, p in module.named_parameters()
            if p.requires_grad and id(p) not in reached]


def _probe_size(model: nn.Module, kind: str) -> Tuple[int, int]:
    """The synthetic batch's (H, W): a segmentor's preprocessor ``size``
    (its training crop in mmseg configs), else 512x512; a classifier's
    backbone ``img_size``, else 224x224."""
    if kind == 'seg':
        size = getattr(model.data_preprocessor, 'size', None) or (512, 512)
    else:
        size = getattr(getattr(model, 'backbone', None), 'img_size',
                       None) or 224
    if isinstance(size, int):
        size = (size, size)
    return int(size[0]), int(size[1])


def _probe_batch(model: nn.Module, kind: str):
    h, w = _probe_size(model, kind)
    channels = getattr(getattr(model, 'backbone', None), 'in_channels', 3)
    if not isinstance(channels, int):
        channels = 3
    inputs = torch.randn(1, channels, h, w)
    if kind == 'cls':
        return inputs, None
    from mmseg.structures import SegDataSample
    sample = SegDataSample(metainfo=dict(
        img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w)))
    return inputs, [sample]


def probe_unreached_parameters(model: nn.Module, kind: str,
                               tap: LogitTap) -> NamedParameters:
    """The trainable parameters of ``model`` that do not lead to the class
    logits ``tap`` reads, found by one eval-mode forward on a synthetic
    batch (the random state, buffers and train/eval modes are restored).

    Raises:
        RuntimeError: When the model cannot run on the synthetic batch;
            the message names the batch and the fix.
    """
    modes = {m: m.training for m in model.modules()}
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            inputs, samples = _probe_batch(model, kind)
            model.eval()
            with tap:
                try:
                    forward_to_logits(model, kind, tap, inputs, samples)
                except Exception as e:
                    raise RuntimeError(
                        'student_task_loss=False: mmrankkd runs the '
                        'student\'s logit path once on a synthetic batch of '
                        f'shape {tuple(inputs.shape)} to find (and freeze) '
                        'the parameters the distillation losses cannot '
                        f'train, and the student failed on it: {e!r}. Fix: '
                        "set the student's data_preprocessor.size (dense "
                        'models) or backbone img_size (classifiers) to its '
                        'training input size.') from e
                logits = tap.logits
            return unreached_parameters(model, [logits])
    finally:
        for module, mode in modes.items():
            module.training = mode
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def freeze(named: NamedParameters, why: str,
           level: int = logging.INFO) -> None:
    """Set ``requires_grad=False`` on ``named`` and log their names."""
    if not named:
        return
    for _, p in named:
        p.requires_grad_(False)
    count = sum(p.numel() for _, p in named)
    print_log(
        f'{why}: {len(named)} student parameter tensors ({count} values) '
        'get no gradient and are frozen: '
        f'{", ".join(name for name, _ in named)}.', logger='current',
        level=level)


def distributed_world_size() -> int:
    """The number of processes of the default group (1 when not
    distributed)."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def check_first_step(model: nn.Module, losses: Sequence[Tensor],
                     prefix: str = 'student.') -> Optional[NamedParameters]:
    """On the first training step: the student parameters the losses'
    graph does not reach. Single process: frozen (and logged as a
    warning). Distributed: a RuntimeError naming them, since DDP has
    already registered them and would fail at the next step."""
    missed = unreached_parameters(model, list(losses), prefix)
    if not missed:
        return None
    if distributed_world_size() > 1:
        raise RuntimeError(
            'student_task_loss=False: these student parameters get no '
            'gradient from the distillation losses, and DDP is waiting for '
            f'theirs: {", ".join(name for name, _ in missed)}. Fix: freeze '
            'them before the runner wraps the model (requires_grad=False, '
            'e.g. in the student config), or set model_wrapper_cfg=dict('
            'find_unused_parameters=True).')
    freeze(missed, 'student_task_loss=False (first training step)',
           logging.WARNING)
    return missed
