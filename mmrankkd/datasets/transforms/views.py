"""Augmentations with finitely many outcomes that say which one they took.

The CIFAR recipe's ``RandomCrop(32, padding=4)`` + horizontal ``RandomFlip``
makes one of 81 x 2 = 162 views of each image. :class:`ViewRandomCrop` and
:class:`ViewRandomFlip` are those two transforms (same random draws, same
pixels: they subclass mmpretrain's ``RandomCrop`` and mmcv's ``RandomFlip``)
that also append ``(index, count)`` of the view they made to
``results['teacher_view']``. ``PackInputs(meta_keys=(..., 'teacher_view'))``
carries it into each data sample's metainfo, where
:class:`~mmrankkd.models.distillers.teacher_store.StoredTeacher` reads it.

They also make a *given* view (:meth:`ViewRandomCrop.apply_view`), which is
how ``tools/build_teacher_store.py`` enumerates every view of every image
with the very code that training runs.
"""
import copy
from typing import List, Sequence, Tuple

import mmcv
import numpy as np
from mmcv.transforms import RandomFlip
from mmpretrain.datasets.transforms import RandomCrop

from mmrankkd.registry import TRANSFORMS

#: The results / metainfo key holding ``((index, count), ...)``, one pair
#: per view transform, in pipeline order.
VIEW_KEY = 'teacher_view'


def _record(results: dict, index: int, count: int) -> None:
    results[VIEW_KEY] = tuple(results.get(VIEW_KEY, ())) + ((index, count), )


def view_id(parts: Sequence[Tuple[int, int]]) -> int:
    """One integer for a view: the parts' indices in mixed radix, the first
    transform's index most significant."""
    vid = 0
    for index, count in parts:
        vid = vid * count + int(index)
    return vid


@TRANSFORMS.register_module()
class ViewRandomCrop(RandomCrop):
    """mmpretrain's ``RandomCrop`` that records its crop offset.

    The view index is ``offset_h * n_w + offset_w`` of the crop in the
    padded image (``n_w`` the number of horizontal offsets); for CIFAR's
    ``crop_size=32, padding=4`` there are 9 x 9 = 81. Arguments as
    ``RandomCrop``.
    """

    def _padded(self, img: np.ndarray) -> np.ndarray:
        # The same padding as RandomCrop.transform.
        if self.padding is not None:
            img = mmcv.impad(img, padding=self.padding, pad_val=self.pad_val)
        if self.pad_if_needed:
            h_pad = int(np.ceil(max(0, self.crop_size[0] - img.shape[0]) / 2))
            w_pad = int(np.ceil(max(0, self.crop_size[1] - img.shape[1]) / 2))
            img = mmcv.impad(img, padding=(w_pad, h_pad, w_pad, h_pad),
                             pad_val=self.pad_val,
                             padding_mode=self.padding_mode)
        return img

    def _grid(self, img: np.ndarray) -> Tuple[int, int, int, int]:
        """(rows, cols) of crop offsets and the crop's (h, w)."""
        h, w = img.shape[:2]
        th, tw = min(h, self.crop_size[0]), min(w, self.crop_size[1])
        return h - th + 1, w - tw + 1, th, tw

    def _crop(self, results, img, off_h, off_w, th, tw, count) -> dict:
        results['img'] = mmcv.imcrop(
            img, np.array([off_w, off_h, off_w + tw - 1, off_h + th - 1]))
        results['img_shape'] = results['img'].shape
        n_w = self._grid(img)[1]
        _record(results, off_h * n_w + off_w, count)
        return results

    def num_views(self, results: dict) -> int:
        """How many crops this image has."""
        rows, cols, _, _ = self._grid(self._padded(results['img']))
        return rows * cols

    def transform(self, results: dict) -> dict:
        img = self._padded(results['img'])
        off_h, off_w, th, tw = self.rand_crop_params(img)
        rows, cols, _, _ = self._grid(img)
        return self._crop(results, img, off_h, off_w, th, tw, rows * cols)

    def apply_view(self, results: dict, index: int) -> dict:
        """Make crop number ``index`` (no randomness)."""
        img = self._padded(results['img'])
        rows, cols, th, tw = self._grid(img)
        if not 0 <= index < rows * cols:
            raise IndexError(f'crop view {index} of {rows * cols}')
        return self._crop(results, img, index // cols, index % cols, th, tw,
                          rows * cols)


@TRANSFORMS.register_module()
class ViewRandomFlip(RandomFlip):
    """mmcv's ``RandomFlip`` that records its choice: view 0 is no flip,
    view ``i >= 1`` is the ``i``-th of ``direction``. Arguments as
    ``RandomFlip``."""

    def _directions(self) -> List[str]:
        if isinstance(self.direction, str):
            return [self.direction]
        return list(self.direction)

    def num_views(self, results: dict) -> int:
        return len(self._directions()) + 1

    def _apply(self, results: dict, direction) -> dict:
        if direction is None:
            results['flip'] = False
            results['flip_direction'] = None
            index = 0
        else:
            results['flip'] = True
            results['flip_direction'] = direction
            self._flip(results)
            index = self._directions().index(direction) + 1
        _record(results, index, self.num_views(results))
        return results

    def transform(self, results: dict) -> dict:
        return self._apply(results, self._choose_direction())

    def apply_view(self, results: dict, index: int) -> dict:
        """Make view ``index`` (0: unflipped) without randomness."""
        if not 0 <= index < self.num_views(results):
            raise IndexError(f'flip view {index} of {self.num_views(results)}')
        return self._apply(
            results, None if index == 0 else self._directions()[index - 1])


def _is_view(transform) -> bool:
    return hasattr(transform, 'apply_view') and hasattr(transform,
                                                        'num_views')


def pipeline_view_counts(transforms: Sequence, results: dict) -> List[int]:
    """The view count of each view transform of ``transforms`` for one
    sample (running the deterministic transforms before each)."""
    results = copy.deepcopy(results)
    counts = []
    for t in transforms:
        if _is_view(t):
            counts.append(t.num_views(results))
            results = t.apply_view(results, 0)
        else:
            results = t(results)
    return counts


def apply_pipeline_view(transforms: Sequence, results: dict,
                        vid: int, counts: Sequence[int]) -> dict:
    """Run ``transforms`` on a copy of ``results`` making view ``vid``
    (:func:`view_id` of the parts): the view transforms make their given
    part, the others run as they are (the caller has checked that they are
    deterministic)."""
    parts = []
    for count in reversed(counts):
        parts.append(vid % count)
        vid //= count
    parts.reverse()
    results = copy.deepcopy(results)
    for t in transforms:
        if _is_view(t):
            results = t.apply_view(results, parts.pop(0))
        else:
            results = t(results)
        if results is None:
            raise ValueError(f'{t!r} dropped the sample')
    return results
