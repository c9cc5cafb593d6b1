"""Give the teacher the input it was trained on.

The runner preprocesses each batch once, with the distiller's (the
student's) data preprocessor. A teacher trained with another normalisation
or channel order (another mean/std, BGR instead of RGB, [0, 1] instead of
[0, 255] pixels) would silently get wrong inputs. :class:`TeacherInput`
maps the student's preprocessed batch to the teacher's: it undoes the
student's normalisation and channel conversion and applies the teacher's,
per channel, on the same (already augmented and cropped) pixels, and puts
the teacher's padding value into padded pixels. With the standard mmseg
``SegDataPreProcessor`` and mmpretrain ``ClsDataPreprocessor`` on both
sides this equals running the teacher's own preprocessor on the raw batch.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model import ImgDataPreprocessor
from torch import Tensor


def _converts_channels(pre: nn.Module, mean, std) -> bool:
    """Whether an mmengine ``ImgDataPreprocessor`` reverses the channel
    order, read from what it does to one 3-channel pixel (it keeps the
    setting in a private attribute)."""
    pixel = torch.tensor([10., 20., 30.]).view(3, 1, 1)
    out = pre(dict(inputs=[pixel]), False)['inputs'][0]
    out = out[:, 0, 0].float()  # the pixel itself, not the padding
    if mean is not None:
        out = out * std.flatten().float() + mean.flatten().float()
    return bool(torch.allclose(out, pixel.flatten().flip(0)))


def _pre_settings(pre: nn.Module) -> dict:
    """Normalisation, channel flip and padding of a standard image data
    preprocessor, or raise TypeError for one we cannot reason about."""
    mean, std = getattr(pre, 'mean', None), getattr(pre, 'std', None)
    if hasattr(pre, 'channel_conversion'):  # mmseg SegDataPreProcessor
        flip = bool(pre.channel_conversion)
        pad = dict(size=pre.size, size_divisor=pre.size_divisor)
        pad_value = pre.pad_val
    elif hasattr(pre, 'to_rgb'):  # mmpretrain ClsDataPreprocessor & co.
        flip = bool(pre.to_rgb)
        pad = dict(size_divisor=getattr(pre, 'pad_size_divisor', 1))
        pad_value = getattr(pre, 'pad_value', 0)
    elif isinstance(pre, ImgDataPreprocessor):  # mmengine's, and subclasses
        flip = _converts_channels(pre, mean, std)
        pad = dict(size_divisor=getattr(pre, 'pad_size_divisor', 1))
        pad_value = getattr(pre, 'pad_value', 0)
    else:
        raise TypeError(type(pre).__name__)
    if mean is None:
        mean, std = torch.zeros(1), torch.ones(1)
    return dict(mean=mean.detach().float().reshape(-1),
                std=std.detach().float().reshape(-1),
                flip=flip, pad=pad, pad_value=float(pad_value))


class TeacherInput(nn.Module):
    """Maps the student's preprocessed inputs to the teacher's.

    ``teacher = (raw' - mean_t) / std_t`` with ``raw = student * std_s +
    mean_s`` and ``raw'`` the raw pixels in the teacher's channel order; as
    one affine map per channel: ``teacher = student[perm] * scale + shift``.
    Pixels outside each sample's ``img_shape`` (padding) get the teacher's
    padding value.

    Args:
        student_pre (nn.Module): The distiller's data preprocessor.
        teacher_pre (nn.Module): The teacher's own data preprocessor.

    Raises:
        ValueError: When the two cannot be reconciled (padding/size
            settings differ, or a preprocessor is not a standard image one);
            the message names both and the way out
            (``teacher_data_preprocessor='student'``).
    """

    def __init__(self, student_pre: nn.Module, teacher_pre: nn.Module):
        super().__init__()
        try:
            s = _pre_settings(student_pre)
            t = _pre_settings(teacher_pre)
        except TypeError as e:
            raise ValueError(
                f'Cannot map the student\'s preprocessing '
                f'({type(student_pre).__name__}) to the teacher\'s '
                f'({type(teacher_pre).__name__}): {e} is not a standard '
                'image data preprocessor. Fix: give the teacher the '
                'student\'s inputs unchanged with model.teacher_data_'
                "preprocessor='student' if they were trained alike.") from None
        if s['pad'] != t['pad']:
            raise ValueError(
                'The teacher\'s data preprocessor pads/resizes differently '
                f'from the student\'s (student {s["pad"]}, teacher '
                f'{t["pad"]}), so one batch cannot serve both. Fix: make the '
                'size/size_divisor settings agree, or give the teacher the '
                "student's inputs with model.teacher_data_preprocessor="
                "'student'.")
        channels = max(len(s['mean']), len(t['mean']))
        s_mean, s_std = (s['mean'].expand(channels),
                         s['std'].expand(channels))
        t_mean, t_std = (t['mean'].expand(channels),
                         t['std'].expand(channels))
        # The student's channel c holds raw channel perm[c] when exactly
        # one side flips the channel order.
        flip = s['flip'] != t['flip'] and channels == 3
        perm = [2, 1, 0] if flip else list(range(channels))
        s_mean, s_std = s_mean[perm], s_std[perm]
        scale = s_std / t_std
        shift = (s_mean - t_mean) / t_std
        self.identity = not flip and bool(
            torch.allclose(scale, torch.ones_like(scale))
            and torch.allclose(shift, torch.zeros_like(shift)))
        self.perm: Optional[List[int]] = perm if flip else None
        self.register_buffer('scale', scale.view(1, -1, 1, 1), False)
        self.register_buffer('shift', shift.view(1, -1, 1, 1), False)
        self.pad_value = t['pad_value']
        self.student_pad_value = s['pad_value']

    def describe(self) -> str:
        if self.identity:
            return 'the student\'s inputs (same preprocessing)'
        return ('the student\'s inputs mapped to its own preprocessing '
                f'(scale {self.scale.flatten().tolist()}, shift '
                f'{[round(v, 4) for v in self.shift.flatten().tolist()]}'
                f'{", channels reversed" if self.perm else ""})')

    def forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        if self.identity:
            return inputs
        out = inputs[:, self.perm] if self.perm else inputs
        out = out * self.scale + self.shift
        for i, shape in enumerate(_img_shapes(data_samples, out)):
            h, w = shape
            if h < out.size(-2):
                out[i, :, h:] = self.pad_value
            if w < out.size(-1):
                out[i, :, :, w:] = self.pad_value
        return out


def _img_shapes(data_samples, inputs: Tensor) -> List[Tuple[int, int]]:
    """Each sample's unpadded (h, w) (``img_shape``), if recorded."""
    if not data_samples or inputs.dim() != 4:
        return []
    shapes = []
    for sample in data_samples:
        shape = sample.metainfo.get('img_shape') if hasattr(
            sample, 'metainfo') else None
        if shape is None:
            return []
        shapes.append(tuple(int(v) for v in shape[:2]))
    return shapes
