"""Teacher-student agreement during validation."""
from typing import Optional, Sequence

import torch
from mmengine.evaluator import BaseMetric

from mmrankkd.models.losses.pairwise import pairwise_sign_agreement
from mmrankkd.registry import METRICS


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall's tau-a between matching rows of ``a`` and ``b`` (R, C).

    ``tau = 2 / (C (C-1)) * sum_{i<j} sgn(a_i - a_j) sgn(b_i - b_j)``.
    Returns (R,) values in [-1, 1]. Computed by the losses' memory-bounded
    pairwise kernel (pairs i < j of rows sorted by ``b``, blocks within
    256 MiB), not with (R, C, C) tensors.
    """
    c = a.shape[1]
    with torch.no_grad():
        agreement = pairwise_sign_agreement(a, b, surrogate='sign')
    # The kernel sums ordered pairs: each unordered pair twice.
    return agreement / (c * (c - 1))


@METRICS.register_module()
class TeacherStudentAgreement(BaseMetric):
    """How often the student predicts what the teacher predicts, and how
    well their class rankings agree.

    Reports ``agreement/top1`` (classification: fraction of samples with the
    same top-1 class; segmentation: fraction of valid pixels with the same
    predicted class) and ``agreement/kendall_tau`` (mean Kendall tau-a
    between the student's and the teacher's class-score vectors; for
    segmentation over ``max_pixels`` randomly chosen valid pixels per
    image, with a fixed seed). Pixels labelled ``ignore_index`` are left
    out when ground truth is present.

    Needs the teacher's predictions on the data samples
    (``teacher_pred_sem_seg``/``teacher_seg_logits`` or
    ``teacher_pred_label``/``teacher_pred_score``), which
    ``mmrankkd.DistillValLoop`` / ``DistillTestLoop`` attach.

    Args:
        ignore_index (int, optional): Label ignored in segmentation.
            Defaults to None: the student's (its decode head's
            ``ignore_index``, filled in by the distill loops); a different
            value is refused there.
        max_pixels (int): Pixels per image used for Kendall tau.
            Defaults to 2048.
        seed (int): Seed of the pixel sampling. Defaults to 0.
        collect_device (str): See :class:`BaseMetric`.
        prefix (str, optional): Defaults to ``'agreement'``.
    """
    default_prefix = 'agreement'
    #: Tells the distill loops that this metric reads teacher predictions.
    needs_teacher = True

    def __init__(self,
                 ignore_index: Optional[int] = None,
                 max_pixels: int = 2048,
                 seed: int = 0,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = ignore_index
        self.max_pixels = max_pixels
        self.seed = seed

    def _missing(self):
        return ValueError(
            'TeacherStudentAgreement found no teacher predictions on the '
            "data samples. Fix: set val_cfg=dict(type='mmrankkd."
            "DistillValLoop') (test_cfg=dict(type='mmrankkd."
            "DistillTestLoop')) so validation runs the teacher too.")

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        for ds in data_samples:
            if 'pred_sem_seg' in ds:
                self.results.append(self._process_seg(ds))
            else:
                self.results.append(self._process_cls(ds))

    def _process_seg(self, ds: dict) -> tuple:
        if 'teacher_pred_sem_seg' not in ds:
            raise self._missing()
        s_pred = ds['pred_sem_seg']['data'].squeeze(0)
        t_pred = ds['teacher_pred_sem_seg']['data'].squeeze(0).to(
            s_pred.device)
        valid = torch.ones_like(s_pred, dtype=torch.bool)
        if 'gt_sem_seg' in ds:
            gt = ds['gt_sem_seg']['data'].squeeze(0).to(s_pred.device)
            if gt.shape == valid.shape:
                if self.ignore_index is None:
                    raise ValueError(
                        'TeacherStudentAgreement does not know the ignore '
                        'label. Fix: validate with mmrankkd.DistillValLoop '
                        '(it takes the student\'s), or set ignore_index.')
                valid = gt != self.ignore_index
        n_valid = int(valid.sum())
        agree = int((s_pred == t_pred)[valid].sum())
        tau_sum, tau_n = 0.0, 0
        if 'seg_logits' in ds and 'teacher_seg_logits' in ds and n_valid:
            s_log = ds['seg_logits']['data'].flatten(1)
            t_log = ds['teacher_seg_logits']['data'].flatten(1).to(
                s_log.device)
            idx = valid.flatten().nonzero().squeeze(1)
            if idx.numel() > self.max_pixels:
                g = torch.Generator().manual_seed(self.seed)
                pick = torch.randperm(idx.numel(), generator=g)
                idx = idx[pick[:self.max_pixels].to(idx.device)]
            tau = kendall_tau(s_log[:, idx].t().float(),
                              t_log[:, idx].t().float())
            tau_sum, tau_n = float(tau.sum()), int(tau.numel())
        return agree, n_valid, tau_sum, tau_n

    def _process_cls(self, ds: dict) -> tuple:
        if 'teacher_pred_label' not in ds:
            raise self._missing()
        s, t = ds['pred_label'].flatten(), ds['teacher_pred_label'].flatten()
        agree = int((s[:1] == t[:1].to(s.device)).all())
        tau_sum, tau_n = 0.0, 0
        if 'pred_score' in ds and 'teacher_pred_score' in ds:
            tau = kendall_tau(ds['pred_score'].float().view(1, -1),
                              ds['teacher_pred_score'].float().view(1, -1))
            tau_sum, tau_n = float(tau.sum()), 1
        return agree, 1, tau_sum, tau_n

    def compute_metrics(self, results: list) -> dict:
        agree = sum(r[0] for r in results)
        total = sum(r[1] for r in results)
        tau_sum = sum(r[2] for r in results)
        tau_n = sum(r[3] for r in results)
        metrics = dict(top1=100.0 * agree / max(total, 1))
        if tau_n:
            metrics['kendall_tau'] = tau_sum / tau_n
        return metrics
