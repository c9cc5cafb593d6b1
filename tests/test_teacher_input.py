"""The teacher gets the input it was trained on: a teacher whose
preprocessing differs from the student's (mean/std, channel order, [0, 1]
vs [0, 255] pixels, padding) sees exactly what running it alone on the raw
images gives it; unreconcilable settings are refused; batch mixing is
refused for losses that need hard labels."""
import copy

import pytest
import torch

import mmrankkd  # noqa: F401
from mmrankkd.models.distillers import LogitDistiller, TeacherInput
from test_distiller import KD, save_teacher, tiny_cls, tiny_seg

RAW_SEG = dict(type='SegDataPreProcessor', mean=[0., 0., 0.],
               std=[1., 1., 1.], bgr_to_rgb=False, pad_val=0,
               seg_pad_val=255, size=(32, 32))
UNIT_CLS = dict(type='ClsDataPreprocessor', mean=[0., 0., 0.],
                std=[255., 255., 255.], to_rgb=False, num_classes=10)


def _seg_data(n=2):
    """Raw uint8 BGR images smaller than the pad size (28x30 -> 32x32)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(
            data=torch.randint(0, 19, (1, 28, 30), generator=g))
        s.set_metainfo(dict(img_shape=(28, 30), ori_shape=(28, 30)))
        samples.append(s)
    inputs = [torch.randint(0, 256, (3, 28, 30), generator=g).to(torch.uint8)
              for _ in range(n)]
    return dict(inputs=inputs, data_samples=samples)


def _cls_data(n=4):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    return dict(
        inputs=[torch.randint(0, 256, (3, 32, 32), generator=g).to(
            torch.uint8) for _ in range(n)],
        data_samples=[DataSample().set_gt_label(i % 10) for i in range(n)])


def _alone(teacher, data, kind):
    """The teacher's logits when it preprocesses the raw batch itself."""
    batch = teacher.data_preprocessor(copy.deepcopy(data), True)
    with torch.no_grad():
        feats = teacher.extract_feat(batch['inputs'])
        if kind == 'seg':
            return teacher.decode_head.forward(feats)
        return teacher.head(feats)


def _via_distiller(model, data):
    batch = model.data_preprocessor(copy.deepcopy(data), True)
    return model.teacher_logits(batch['inputs'], batch['data_samples'])


def test_seg_teacher_with_other_preprocessing_sees_its_own_inputs(tmp_path):
    teacher_cfg = tiny_seg(16)
    teacher_cfg['data_preprocessor'] = RAW_SEG
    ckpt, _ = save_teacher(teacher_cfg, tmp_path / 't.pth')
    model = LogitDistiller(student=tiny_seg(8), teacher=teacher_cfg,
                           teacher_ckpt=ckpt, distill_losses=KD)
    data = _seg_data()
    expected = _alone(model.teacher, data, 'seg')
    torch.testing.assert_close(_via_distiller(model, data), expected,
                               rtol=1e-4, atol=1e-4)
    # Control: handing it the student's normalised input is far off.
    same = LogitDistiller(student=tiny_seg(8), teacher=teacher_cfg,
                          teacher_ckpt=ckpt, distill_losses=KD,
                          teacher_data_preprocessor='student')
    assert (_via_distiller(same, data) - expected).abs().max() > 1e-2


def test_cls_teacher_on_unit_range_rgb_pixels(tmp_path):
    student_cfg = tiny_cls(8)
    student_cfg['data_preprocessor'] = dict(
        type='ClsDataPreprocessor', mean=[125.3, 123.0, 113.9],
        std=[63.0, 62.1, 66.7], to_rgb=True, num_classes=10)
    teacher_cfg = tiny_cls(16)
    teacher_cfg['data_preprocessor'] = UNIT_CLS
    ckpt, _ = save_teacher(teacher_cfg, tmp_path / 't.pth')
    model = LogitDistiller(student=student_cfg, teacher=teacher_cfg,
                           teacher_ckpt=ckpt, distill_losses=KD)
    data = _cls_data()
    torch.testing.assert_close(_via_distiller(model, data),
                               _alone(model.teacher, data, 'cls'),
                               rtol=1e-4, atol=1e-4)


def test_teacher_preprocessor_given_in_the_distiller_config(tmp_path):
    ckpt, _ = save_teacher(tiny_seg(16), tmp_path / 't.pth')
    model = LogitDistiller(student=tiny_seg(8), teacher=tiny_seg(16),
                           teacher_ckpt=ckpt, distill_losses=KD,
                           teacher_data_preprocessor=RAW_SEG)
    assert not model.teacher_input.identity
    assert model.teacher_input.perm == [2, 1, 0]  # student made RGB


def test_unreconcilable_padding_names_both_settings(tmp_path):
    teacher_cfg = tiny_seg(16)
    teacher_cfg['data_preprocessor'] = dict(RAW_SEG, size=(64, 64))
    ckpt, _ = save_teacher(teacher_cfg, tmp_path / 't.pth')
    with pytest.raises(ValueError) as err:
        LogitDistiller(student=tiny_seg(8), teacher=teacher_cfg,
                       teacher_ckpt=ckpt, distill_losses=KD)
    message = str(err.value)
    assert '(32, 32)' in message and '(64, 64)' in message
    assert "teacher_data_preprocessor='student'" in message
    # The explicit opt-out builds.
    LogitDistiller(student=tiny_seg(8), teacher=teacher_cfg,
                   teacher_ckpt=ckpt, distill_losses=KD,
                   teacher_data_preprocessor='student')


def test_mapping_is_identity_for_equal_preprocessors():
    from mmseg.models import SegDataPreProcessor
    pre = SegDataPreProcessor(mean=[1., 2., 3.], std=[4., 5., 6.],
                              bgr_to_rgb=True)
    mapping = TeacherInput(pre, copy.deepcopy(pre))
    x = torch.randn(2, 3, 4, 4)
    assert mapping.identity and mapping(x) is x


MIXUP = [dict(type='Mixup', alpha=0.8)]


@pytest.mark.parametrize('loss,refused', [
    (dict(type='mmrankkd.PlackettLuceLoss'), True),
    (dict(type='mmrankkd.DKDLoss'), True),
    (dict(type='mmrankkd.KDLoss'), False),
])
def test_batch_mixing_with_label_losses_is_refused(loss, refused, tmp_path):
    student_cfg = tiny_cls(8)
    student_cfg['data_preprocessor'] = dict(
        type='ClsDataPreprocessor', num_classes=10, batch_augments=dict(
            augments=MIXUP))
    ckpt, _ = save_teacher(tiny_cls(16), tmp_path / 't.pth')
    args = dict(student=student_cfg, teacher=tiny_cls(16), teacher_ckpt=ckpt,
                distill_losses=dict(loss_x=loss))
    if refused:
        with pytest.raises(ValueError, match='Mixup'):
            LogitDistiller(**args)
    else:
        model = LogitDistiller(**args)
        batch = model.data_preprocessor(_cls_data(), True)
        assert 'gt_score' in batch['data_samples'][0]
        losses = model.loss(**batch)
        assert torch.isfinite(losses['distill.loss_x'])
        assert 'cls.loss' in losses


def test_teacher_autocast_and_channels_last(tmp_path):
    ckpt, _ = save_teacher(tiny_seg(16), tmp_path / 't.pth')
    args = dict(student=tiny_seg(8), teacher=tiny_seg(16),
                teacher_ckpt=ckpt, distill_losses=KD)
    data = _seg_data()
    fp32 = _via_distiller(LogitDistiller(**args), data)
    fast = LogitDistiller(teacher_autocast='bf16', teacher_channels_last=True,
                          **args)
    assert fast.teacher.decode_head.conv_seg.weight.is_contiguous(
        memory_format=torch.channels_last)
    low = _via_distiller(fast, data)
    assert low.dtype == torch.float32 and not torch.equal(low, fp32)
    torch.testing.assert_close(low, fp32, rtol=0.05, atol=0.05)
    with pytest.raises(ValueError, match='teacher_autocast'):
        LogitDistiller(teacher_autocast='int8', **args)


@pytest.mark.parametrize('bgr_to_rgb', [True, False])
@pytest.mark.parametrize('normalise', [True, False])
def test_mmengine_img_preprocessor_channel_order_is_read(bgr_to_rgb,
                                                         normalise):
    from mmengine.model import ImgDataPreprocessor

    from mmrankkd.models.distillers.teacher_input import _pre_settings
    norm = dict(mean=[1., 2., 3.], std=[2., 4., 8.]) if normalise else {}
    pre = ImgDataPreprocessor(bgr_to_rgb=bgr_to_rgb, pad_size_divisor=32,
                              **norm)
    settings = _pre_settings(pre)
    assert settings['flip'] is bgr_to_rgb
    if normalise:
        assert settings['std'].tolist() == [2., 4., 8.]
