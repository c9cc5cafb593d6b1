"""MLKD's strong view: the FixMatch-style RandAugment of the MLKD authors.

MLKD (Jin et al., CVPR 2023) trains on two views of each image: weak (the
usual crop + flip) and strong (crop + flip + this RandAugment). Both come
from mmpretrain's ``MultiView`` wrapper, one pipeline per view::

    dict(type='MultiView', num_views=[1, 1], transforms=[
        [crop, flip],                                   # weak
        [crop, flip, dict(type='mmrankkd.MLKDRandAugment')],  # strong
    ])

``PackInputs`` then packs each sample's ``inputs`` as ``[weak, strong]``
and :class:`~mmrankkd.models.LogitDistiller` runs student and teacher on
both (see its ``num_views``).
"""
import random

import numpy as np
from mmcv.transforms import BaseTransform
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from mmrankkd.registry import TRANSFORMS


def _shear_x(img, v):
    return img.transform(img.size, Image.AFFINE, (1, v, 0, 0, 1, 0))


def _shear_y(img, v):
    return img.transform(img.size, Image.AFFINE, (1, 0, 0, v, 1, 0))


def _translate_x(img, v):
    return img.transform(img.size, Image.AFFINE,
                         (1, 0, v * img.size[0], 0, 1, 0))


def _translate_y(img, v):
    return img.transform(img.size, Image.AFFINE,
                         (1, 0, 0, 0, 1, v * img.size[1]))


#: (name, op(img, v), min v, max v): the authors' ``augment_list``
#: (mdistiller/dataset/cifar100.py of Jin-Ying/Multi-Level-Logit-
#: Distillation).
OPS = (
    ('AutoContrast', lambda img, v: ImageOps.autocontrast(img), 0, 1),
    ('Brightness', lambda img, v: ImageEnhance.Brightness(img).enhance(v),
     0.05, 0.95),
    ('Color', lambda img, v: ImageEnhance.Color(img).enhance(v), 0.05,
     0.95),
    ('Contrast', lambda img, v: ImageEnhance.Contrast(img).enhance(v), 0.05,
     0.95),
    ('Equalize', lambda img, v: ImageOps.equalize(img), 0, 1),
    ('Identity', lambda img, v: img, 0, 1),
    ('Posterize', lambda img, v: ImageOps.posterize(img, max(1, int(v))), 4,
     8),
    ('Rotate', lambda img, v: img.rotate(v), -30, 30),
    ('Sharpness', lambda img, v: ImageEnhance.Sharpness(img).enhance(v),
     0.05, 0.95),
    ('ShearX', _shear_x, -0.3, 0.3),
    ('ShearY', _shear_y, -0.3, 0.3),
    ('Solarize', lambda img, v: ImageOps.solarize(img, v), 0, 256),
    ('TranslateX', _translate_x, -0.3, 0.3),
    ('TranslateY', _translate_y, -0.3, 0.3),
)

#: The cutout fill colour of the authors' code, RGB.
CUTOUT_FILL = (125, 123, 114)


def cutout(img: Image.Image, fraction: float) -> Image.Image:
    """A square of side ``fraction`` x width at a uniform random centre,
    clipped to the image, filled with :data:`CUTOUT_FILL` (the authors'
    ``Cutout`` / ``CutoutAbs``)."""
    if fraction <= 0.:
        return img
    v = fraction * img.size[0]
    w, h = img.size
    x0 = int(max(0, np.random.uniform(w) - v / 2.))
    y0 = int(max(0, np.random.uniform(h) - v / 2.))
    x1, y1 = min(w, x0 + v), min(h, y0 + v)
    img = img.copy()
    ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), CUTOUT_FILL)
    return img


@TRANSFORMS.register_module()
class MLKDRandAugment(BaseTransform):
    """The MLKD authors' strong augmentation (their ``RandAugment(2, 10)``):
    ``num_ops`` operations drawn with replacement from :data:`OPS`, each at
    a magnitude uniform in its range, then a cutout of a random size up to
    half the width.

    The magnitude argument of the authors' class is unused by their code
    (every magnitude is drawn at random), so there is none here.

    Required keys: ``img`` (H, W, 3) uint8, RGB (mmpretrain's CIFAR100
    yields RGB). Modified keys: ``img``.

    Args:
        num_ops (int): Operations per image. Defaults to 2.
        max_cutout (float): Largest cutout side, as a fraction of the
            width. Defaults to 0.5.
    """

    def __init__(self, num_ops: int = 2, max_cutout: float = 0.5):
        if int(num_ops) < 0:
            raise ValueError(f'MLKDRandAugment: num_ops must be >= 0, got '
                             f'{num_ops}.')
        if not 0. <= max_cutout <= 1.:
            raise ValueError('MLKDRandAugment: max_cutout must be in [0, 1], '
                             f'got {max_cutout}.')
        self.num_ops = int(num_ops)
        self.max_cutout = float(max_cutout)

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise ValueError(
                'MLKDRandAugment needs an (H, W, 3) uint8 RGB image, got '
                f'shape {img.shape} dtype {img.dtype}.')
        pil = Image.fromarray(img)
        for _, op, low, high in random.choices(OPS, k=self.num_ops):
            pil = op(pil, low + float(high - low) * random.random())
        pil = cutout(pil, random.random() * self.max_cutout)
        results['img'] = np.asarray(pil).copy()
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_ops={self.num_ops}, '
                f'max_cutout={self.max_cutout})')
