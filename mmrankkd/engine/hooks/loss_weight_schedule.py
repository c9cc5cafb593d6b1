"""A schedule for the weights of a distiller's distillation losses.

``DistillLossWeightScheduleHook`` scales the ``loss_weight`` of named entries
of ``model.distill_losses`` by a linear warm-up factor

    factor(t) = min(t / warmup, 1.0),   t = 1, 2, 3, ...

where ``t`` is the 1-based number of the current epoch (``by_epoch=True``:
constant within an epoch) or of the current iteration (``by_epoch=False``).
With ``by_epoch=True`` this is mdistiller's DKD warm-up exactly: its trainer
counts epochs from 1 and its ``DKD.forward_train`` multiplies the loss by
``min(epoch / warmup, 1.0)`` (``warmup=20`` on CIFAR-100, 1 on ImageNet),
so the first epoch trains with 1/20 of the DKD weight and epoch 20 onwards
with all of it.

The weight is recomputed before every training iteration from the
configured weight (read once, when training starts) and ``runner.epoch`` /
``runner.iter``, so it holds no state of its own: a resumed run continues
with exactly the weights an uninterrupted run would have used. Each loss's
current weight is logged as ``distill_weight.<name without loss_>`` (e.g.
``distill_weight.dkd`` for ``loss_dkd``; the message-hub scalar
``train/distill_weight.dkd``), shown in the training log line and sent to
the visualisation backends. The key avoids the word "loss": MMEngine's log
processor would otherwise print a moving average instead of the weight.

Config::

    custom_hooks = [
        dict(type='mmrankkd.DistillLossWeightScheduleHook',
             losses=['loss_dkd'], warmup=20, by_epoch=True),
    ]
"""
from typing import Dict, Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import IterBasedTrainLoop

from mmrankkd.registry import HOOKS


def log_key(name: str) -> str:
    """Message-hub key of the weight of distill loss ``name``."""
    short = name[len('loss_'):] if name.startswith('loss_') else name
    return f'train/distill_weight.{short}'


def _distiller(runner):
    model = runner.model
    if is_model_wrapper(model):
        model = model.module
    if not hasattr(model, 'distill_losses'):
        raise TypeError(
            'DistillLossWeightScheduleHook needs a distiller with '
            f'`distill_losses` (e.g. mmrankkd.LogitDistiller), got '
            f'{type(model).__name__}. Fix: remove the hook from '
            'custom_hooks, or train a distiller.')
    return model


@HOOKS.register_module()
class DistillLossWeightScheduleHook(Hook):
    """Linearly warm up the weights of distillation losses.

    Args:
        losses (str | Sequence[str], optional): Names of the entries of
            ``model.distill_losses`` to schedule (e.g. ``'loss_dkd'``).
            None schedules all of them. Defaults to None.
        warmup (int): Length of the warm-up in epochs (``by_epoch=True``)
            or iterations. The weight reaches the configured
            ``loss_weight`` at epoch/iteration ``warmup`` (1-based).
        by_epoch (bool): Count epochs (the factor is constant within an
            epoch) or iterations. Defaults to True.
    """

    priority = 'NORMAL'

    def __init__(self,
                 losses: Optional[Union[str, Sequence[str]]] = None,
                 warmup: int = 1,
                 by_epoch: bool = True) -> None:
        if isinstance(losses, str):
            losses = [losses]
        if losses is not None:
            losses = list(losses)
            if not losses:
                raise ValueError(
                    'DistillLossWeightScheduleHook: `losses` is empty. Fix: '
                    "name the losses to schedule (e.g. losses=['loss_dkd']) "
                    'or pass None for all of them.')
        if isinstance(warmup, bool) or not isinstance(warmup, int) \
                or warmup < 1:
            raise ValueError(
                'DistillLossWeightScheduleHook: `warmup` must be a positive '
                f'integer (epochs or iterations), got {warmup!r}.')
        self.losses = losses
        self.warmup = warmup
        self.by_epoch = by_epoch
        # name -> configured loss_weight, read once from the fresh model.
        self.base_weights: Dict[str, float] = {}

    def factor(self, step: int) -> float:
        """The warm-up factor at 1-based epoch/iteration ``step``."""
        return min(step / self.warmup, 1.0)

    def _step(self, runner) -> int:
        return (runner.epoch if self.by_epoch else runner.iter) + 1

    def before_train(self, runner) -> None:
        if self.by_epoch and isinstance(runner.train_loop,
                                        IterBasedTrainLoop):
            raise ValueError(
                'DistillLossWeightScheduleHook(by_epoch=True) with an '
                'iteration-based train loop: the epoch never advances, so '
                'the warm-up would never end. Fix: set by_epoch=False (and '
                '`warmup` in iterations).')
        losses = _distiller(runner).distill_losses
        names = list(losses.keys()) if self.losses is None else self.losses
        missing = [n for n in names if n not in losses]
        if missing:
            raise KeyError(
                'DistillLossWeightScheduleHook: distill loss '
                f'{", ".join(repr(n) for n in missing)} is not in '
                f'model.distill_losses (it has: '
                f'{", ".join(repr(n) for n in losses.keys()) or "none"}). '
                'Fix: make `losses` of the hook name entries of '
                'model.distill_losses.')
        for name in names:
            if name not in self.base_weights:
                self.base_weights[name] = float(losses[name].loss_weight)
        self._apply(runner)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._apply(runner)

    def _apply(self, runner) -> None:
        losses = _distiller(runner).distill_losses
        factor = self.factor(self._step(runner))
        for name, base in self.base_weights.items():
            weight = base * factor
            losses[name].loss_weight = weight
            runner.message_hub.update_scalar(log_key(name), weight)
