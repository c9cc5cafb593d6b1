"""Batches with several views of each image (MLKD's weak and strong).

A train pipeline ending in mmpretrain's ``MultiView`` + ``PackInputs``
gives each sample ``inputs = [view_0, view_1]``; the dataloader's collate
turns that into one list of images per view (``pseudo_collate``: a list of
per-view sequences of (C, H, W) tensors; ``default_collate``: a list of
per-view (N, C, H, W) tensors). :func:`preprocess_views` runs the model's
data preprocessor on each view, so the distiller's ``loss`` gets
``inputs = [batch_0, batch_1]`` of the same samples.
"""
from typing import Sequence

import torch

#: Log-key names of the views, in the pipeline's order.
VIEW_NAMES = ('weak', 'strong')


def is_multi_view(inputs) -> bool:
    """Whether collated ``inputs`` hold several views of each sample."""
    if not isinstance(inputs, (list, tuple)) or not inputs:
        return False
    first = inputs[0]
    return isinstance(first, (list, tuple)) or (
        isinstance(first, torch.Tensor) and first.dim() == 4)


def preprocess_views(preprocessor, data: dict, num_views: int,
                     training: bool) -> dict:
    """``data`` preprocessed view by view: ``inputs`` becomes a list of
    ``num_views`` (N, C, H, W) batches; the data samples are the first
    view's (every view holds the same samples and labels)."""
    inputs = data['inputs']
    if not is_multi_view(inputs) or len(inputs) != num_views:
        found = len(inputs) if is_multi_view(inputs) else 1
        raise ValueError(
            f'The distill losses take {num_views} views of each image '
            f'({", ".join(VIEW_NAMES[:num_views])}), but the batch holds '
            f'{found}. Fix: end the train pipeline with '
            "dict(type='MultiView', num_views=[1, 1], transforms=[[<weak>], "
            "[<weak>, dict(type='mmrankkd.MLKDRandAugment')]]) before "
            "PackInputs (see configs/cifar100/mlkd_*.py).")
    outs = [
        preprocessor(dict(inputs=view, data_samples=data.get('data_samples')),
                     training) for view in inputs
    ]
    return dict(inputs=[out['inputs'] for out in outs],
                data_samples=outs[0]['data_samples'])


def check_views(views: Sequence[torch.Tensor], num_views: int) -> None:
    """A named error unless ``views`` is a list of ``num_views`` batches
    (e.g. ``forward(mode='loss')`` called with one batch)."""
    if not isinstance(views, (list, tuple)) or len(views) != num_views:
        raise ValueError(
            f'The distill losses take {num_views} views of each image: '
            "forward(mode='loss') needs inputs=[weak batch, strong batch], "
            f'got {type(views).__name__}. Fix: train through train_step '
            'with a MultiView pipeline (see configs/cifar100/mlkd_*.py).')
