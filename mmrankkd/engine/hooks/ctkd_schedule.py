"""CTKD's curriculum: the gradient-reversal strength of the learnable
temperature, and a log of the temperature, every iteration.

The authors (zhengli97/CTKD, train_student.py ``CosineDecay``) set, before
every epoch ``e`` (counted from 1),

    lambda(e) = (cos(pi * min(e, L) / L) + 1) / 2 * (max - min) + min

with ``max = 0``, ``min = -1`` (``--decay_max 0 --decay_min -1``) and
``L = --decay_loops``: 10 on CIFAR-100 (scripts/run_cifar_distill.sh), 5 on
ImageNet (scripts/run_imagenet_distill.sh). Their gradient reversal
multiplies the temperature parameter's gradient by ``lambda``, so it goes
from -0.024 at epoch 1 to -1 from epoch L on: the temperature is trained
to *increase* the KD loss, more and more.

``CTKDScheduleHook`` sets ``grl_lambda`` of the named ``CTKDLoss`` entries
of ``model.distill_losses`` before every training iteration from
``runner.epoch`` (or ``runner.iter`` with ``by_epoch=False``), so it holds
no state: a resumed run continues the curriculum exactly (the temperature
parameter itself is in the model's state_dict, its momentum in the
optimizer's). After every iteration it logs, per loss, the temperature
that iteration used and lambda: ``ctkd_temperature.<name without loss_>``
and ``ctkd_lambda.<...>`` (message-hub scalars ``train/...``; in the log
line and the visualisation backends).

Config (CIFAR-100)::

    custom_hooks = [dict(type='mmrankkd.CTKDScheduleHook', decay_loops=10)]
"""
import math
from typing import Optional, Sequence, Union

from mmengine.hooks import Hook
from mmengine.runner import IterBasedTrainLoop

from mmrankkd.registry import HOOKS
from .loss_weight_schedule import _distiller


def cosine_decay(step: int, max_value: float, min_value: float,
                 num_loops: float) -> float:
    """The authors' ``CosineDecay.get_value(step)``."""
    step = min(max(step, 0), num_loops)
    value = (math.cos(step * math.pi / num_loops) + 1.0) * 0.5
    return value * (max_value - min_value) + min_value


def _short(name: str) -> str:
    return name[len('loss_'):] if name.startswith('loss_') else name


@HOOKS.register_module()
class CTKDScheduleHook(Hook):
    """Set CTKD's gradient-reversal strength from its cosine curriculum and
    log the learnt temperature.

    Args:
        losses (str | Sequence[str], optional): Entries of
            ``model.distill_losses`` to drive; None (default) drives every
            entry with a ``grl_lambda`` (every ``CTKDLoss``).
        decay_loops (int): L, the curriculum's length in epochs (or
            iterations): 10 for CIFAR-100, 5 for ImageNet in the authors'
            scripts. Defaults to 10.
        decay_max (float): lambda at step 0. Defaults to 0.
        decay_min (float): lambda from step L on. Defaults to -1.
        by_epoch (bool): Count epochs (as the authors) or iterations.
            Defaults to True.
    """

    priority = 'NORMAL'

    def __init__(self,
                 losses: Optional[Union[str, Sequence[str]]] = None,
                 decay_loops: int = 10,
                 decay_max: float = 0.0,
                 decay_min: float = -1.0,
                 by_epoch: bool = True) -> None:
        if isinstance(losses, str):
            losses = [losses]
        if losses is not None and not list(losses):
            raise ValueError(
                'CTKDScheduleHook: `losses` is empty. Fix: name the CTKD '
                "losses (e.g. losses=['loss_ctkd']) or pass None for all.")
        if isinstance(decay_loops, bool) or not isinstance(
                decay_loops, int) or decay_loops < 1:
            raise ValueError(
                'CTKDScheduleHook: `decay_loops` must be a positive integer '
                f'(epochs or iterations), got {decay_loops!r}.')
        self.losses = None if losses is None else list(losses)
        self.decay_loops = decay_loops
        self.decay_max = float(decay_max)
        self.decay_min = float(decay_min)
        self.by_epoch = by_epoch
        self.names = []

    def value(self, step: int) -> float:
        """lambda at 1-based epoch/iteration ``step``."""
        return cosine_decay(step, self.decay_max, self.decay_min,
                            self.decay_loops)

    def _step(self, runner) -> int:
        return (runner.epoch if self.by_epoch else runner.iter) + 1

    def before_train(self, runner) -> None:
        if self.by_epoch and isinstance(runner.train_loop,
                                        IterBasedTrainLoop):
            raise ValueError(
                'CTKDScheduleHook(by_epoch=True) with an iteration-based '
                'train loop: the epoch never advances. Fix: set '
                'by_epoch=False (and `decay_loops` in iterations).')
        losses = _distiller(runner).distill_losses
        if self.losses is None:
            names = [n for n, loss in losses.items()
                     if hasattr(loss, 'grl_lambda')]
            if not names:
                raise KeyError(
                    'CTKDScheduleHook: model.distill_losses has no CTKD '
                    'loss (an entry with grl_lambda; it has: '
                    f'{", ".join(map(repr, losses.keys())) or "none"}). '
                    "Fix: add dict(type='mmrankkd.CTKDLoss') or remove the "
                    'hook.')
        else:
            names = self.losses
            bad = [n for n in names if n not in losses
                   or not hasattr(losses[n], 'grl_lambda')]
            if bad:
                raise KeyError(
                    f'CTKDScheduleHook: {", ".join(map(repr, bad))} is not a '
                    'CTKD loss of model.distill_losses (it has: '
                    f'{", ".join(map(repr, losses.keys())) or "none"}). Fix: '
                    'make `losses` name mmrankkd.CTKDLoss entries.')
        self.names = names
        self._apply(runner)

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:
        self._apply(runner)

    def _apply(self, runner) -> None:
        losses = _distiller(runner).distill_losses
        value = self.value(self._step(runner))
        for name in self.names:
            losses[name].grl_lambda = value

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:
        losses = _distiller(runner).distill_losses
        hub = runner.message_hub
        for name in self.names:
            loss = losses[name]
            short = _short(name)
            hub.update_scalar(f'train/ctkd_lambda.{short}', loss.grl_lambda)
            if loss.last_temperature is not None:
                # one scalar read per iteration (the runner reads every
                # loss value anyway)
                hub.update_scalar(f'train/ctkd_temperature.{short}',
                                  float(loss.last_temperature))
