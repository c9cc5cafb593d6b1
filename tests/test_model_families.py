"""Every model family of the installed mmseg and mmpretrain distils, as
student and as teacher.

One representative config per family, taken from the installed packages'
own configs (random weights, SyncBN reverted to BN as on any CPU run): the
family's model is distilled into itself, so it is both the student and the
teacher; and across families, each family teaches a standard student
(PSPNet-R18 / ResNet-18) and learns from a standard teacher, which catches
what only a foreign partner sees (e.g. a query head's ``forward`` reading
sample metainfo that only its own ``loss()`` writes). One training step
(the host's own ``loss()`` plus KD on the tapped logits, then backward)
and one validation step (student and teacher predictions) run at a small
input size on CPU.

The default run covers a representative subset; ``pytest -m matrix
tests/test_model_families.py`` runs the whole matrix (see the README for
its run time).
"""
import copy

import pytest
import torch
from mmengine.config import Config

import mmrankkd  # noqa: F401
from mmrankkd.models.distillers import (LogitDistiller,
                                        build_model_from_source)
from mmrankkd.models.distillers.model_source import _package_config_path

# family -> config inside the installed mmseg package.
SEG_FAMILIES = {
    'ann': 'ann/ann_r50-d8_4xb4-80k_ade20k-512x512.py',
    'apcnet': 'apcnet/apcnet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'beit': 'beit/beit-base_upernet_8xb2-160k_ade20k-640x640.py',
    'bisenetv1': 'bisenetv1/bisenetv1_r18-d32_4xb4-160k_cityscapes-1024x1024.py',  # noqa: E501
    'bisenetv2': 'bisenetv2/bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py',
    'ccnet': 'ccnet/ccnet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'cgnet': 'cgnet/cgnet_fcn_4xb4-60k_cityscapes-680x680.py',
    'convnext': 'convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py',  # noqa: E501
    'danet': 'danet/danet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'ddrnet': 'ddrnet/ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py',  # noqa: E501
    'deeplabv3': 'deeplabv3/deeplabv3_r50-d8_4xb4-80k_ade20k-512x512.py',
    'deeplabv3plus': 'deeplabv3plus/deeplabv3plus_r18-d8_4xb4-80k_loveda-512x512.py',  # noqa: E501
    'dmnet': 'dmnet/dmnet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'dnlnet': 'dnlnet/dnl_r50-d8_4xb4-80k_ade20k-512x512.py',
    'dpt': 'dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py',
    'emanet': 'emanet/emanet_r50-d8_4xb2-80k_cityscapes-512x1024.py',
    'encnet': 'encnet/encnet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'erfnet': 'erfnet/erfnet_fcn_4xb4-160k_cityscapes-512x1024.py',
    'fastfcn': 'fastfcn/fastfcn_r50-d32_jpu_psp_4xb4-80k_ade20k-512x512.py',
    'fastscnn': 'fastscnn/fast_scnn_8xb4-160k_cityscapes-512x1024.py',
    'fcn': 'fcn/fcn_r50-d8_4xb4-80k_ade20k-512x512.py',
    'gcnet': 'gcnet/gcnet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'hrnet': 'hrnet/fcn_hr18_4xb4-80k_ade20k-512x512.py',
    'icnet': 'icnet/icnet_r18-d8_4xb2-80k_cityscapes-832x832.py',
    'isanet': 'isanet/isanet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'knet': 'knet/knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py',
    'mae': 'mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
    'mask2former': 'mask2former/mask2former_r50_8xb2-160k_ade20k-512x512.py',
    'maskformer': 'maskformer/maskformer_r50-d32_8xb2-160k_ade20k-512x512.py',
    'mobilenet_v2': 'mobilenet_v2/mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512.py',  # noqa: E501
    'mobilenet_v3': 'mobilenet_v3/mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py',  # noqa: E501
    'nonlocal_net': 'nonlocal_net/nonlocal_r50-d8_4xb4-80k_ade20k-512x512.py',
    'ocrnet': 'ocrnet/ocrnet_hr18_4xb4-80k_ade20k-512x512.py',
    'pidnet': 'pidnet/pidnet-s_2xb6-120k_1024x1024-cityscapes.py',
    'point_rend': 'point_rend/pointrend_r50_4xb4-160k_ade20k-512x512.py',
    'poolformer': 'poolformer/fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py',
    'psanet': 'psanet/psanet_r50-d8_4xb4-80k_ade20k-512x512.py',
    'pspnet': 'pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-512x1024.py',
    'resnest': 'resnest/resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512.py',
    'segformer': 'segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py',
    'segmenter': 'segmenter/segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py',
    'segnext': 'segnext/segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py',
    'sem_fpn': 'sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py',
    'setr': 'setr/setr_vit-l_pup_8xb2-160k_ade20k-512x512.py',
    'stdc': 'stdc/stdc1_4xb12-80k_cityscapes-512x1024.py',
    'swin': 'swin/swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',  # noqa: E501
    'twins': 'twins/twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py',
    'unet': 'unet/unet-s5-d16_fcn_4xb4-40k_drive-64x64.py',
    'upernet': 'upernet/upernet_r18_4xb4-80k_ade20k-512x512.py',
    'vit': 'vit/vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py',
}
# family -> config inside the installed mmpretrain package (supervised
# image classifiers; self-supervised, retrieval and multi-modal models have
# no class head to distil).
CLS_FAMILIES = {
    'conformer': 'conformer/conformer-tiny-p16_8xb128_in1k.py',
    'convmixer': 'convmixer/convmixer-768-32_10xb64_in1k.py',
    'convnext': 'convnext/convnext-tiny_32xb128_in1k.py',
    'convnext_v2': 'convnext_v2/convnext-v2-atto_32xb32_in1k.py',
    'cspnet': 'cspnet/cspresnet50_8xb32_in1k.py',
    'davit': 'davit/davit-tiny_4xb256_in1k.py',
    'deit3': 'deit3/deit3-small-p16_64xb64_in1k.py',
    'densenet': 'densenet/densenet121_4xb256_in1k.py',
    'edgenext': 'edgenext/edgenext-xxsmall_8xb256_in1k.py',
    'efficientnet': 'efficientnet/efficientnet-b0_8xb32_in1k.py',
    'efficientnet_v2': 'efficientnet_v2/efficientnetv2-b0_8xb32_in1k.py',
    'eva02': 'eva02/eva02-tiny-p14_in1k.py',
    'hivit': 'hivit/hivit-tiny-p16_16xb64_in1k.py',
    'hornet': 'hornet/hornet-tiny_8xb128_in1k.py',
    'hrnet': 'hrnet/hrnet-w18_4xb32_in1k.py',
    'inception_v3': 'inception_v3/inception-v3_8xb32_in1k.py',
    'mlp_mixer': 'mlp_mixer/mlp-mixer-base-p16_64xb64_in1k.py',
    'mobilenet_v2': 'mobilenet_v2/mobilenet-v2_8xb32_in1k.py',
    'mobilenet_v3': 'mobilenet_v3/mobilenet-v3-small_8xb128_in1k.py',
    'mobileone': 'mobileone/mobileone-s0_8xb32_in1k.py',
    'mobilevit': 'mobilevit/mobilevit-xxsmall_8xb128_in1k.py',
    'mvit': 'mvit/mvitv2-tiny_8xb256_in1k.py',
    'poolformer': 'poolformer/poolformer-s12_32xb128_in1k.py',
    'regnet': 'regnet/regnetx-400mf_8xb128_in1k.py',
    'replknet': 'replknet/replknet-31B_32xb64_in1k.py',
    'repmlp': 'repmlp/repmlp-base_8xb64_in1k.py',
    'repvgg': 'repvgg/repvgg-A0_8xb32_in1k.py',
    'res2net': 'res2net/res2net50-w14-s8_8xb32_in1k.py',
    'resnest': 'resnest/resnest50_32xb64_in1k.py',
    'resnet': 'resnet/resnet18_8xb32_in1k.py',
    'resnext': 'resnext/resnext50-32x4d_8xb32_in1k.py',
    'revvit': 'revvit/revvit-small_8xb256_in1k.py',
    'riformer': 'riformer/riformer-s12_8xb128_in1k.py',
    'seresnet': 'seresnet/seresnet50_8xb32_in1k.py',
    'shufflenet_v1': 'shufflenet_v1/shufflenet-v1-1x_16xb64_in1k.py',
    'shufflenet_v2': 'shufflenet_v2/shufflenet-v2-1x_16xb64_in1k.py',
    'swin_transformer': 'swin_transformer/swin-tiny_16xb64_in1k.py',
    'swin_transformer_v2': 'swin_transformer_v2/swinv2-tiny-w8_16xb64_in1k-256px.py',  # noqa: E501
    't2t_vit': 't2t_vit/t2t-vit-t-14_8xb64_in1k.py',
    'tinyvit': 'tinyvit/tinyvit-5m_8xb256_in1k.py',
    'tnt': 'tnt/tnt-s-p16_16xb64_in1k.py',
    'twins': 'twins/twins-pcpvt-small_8xb128_in1k.py',
    'van': 'van/van-tiny_8xb128_in1k.py',
    'vgg': 'vgg/vgg11_8xb32_in1k.py',
    'vig': 'vig/vig-tiny_8xb128_in1k.py',
    'vision_transformer': 'vision_transformer/vit-base-p16_64xb64_in1k.py',
    'wrn': 'wrn/wide-resnet50_8xb32_in1k.py',
    'xcit': 'xcit/xcit-nano-12-p8_8xb128_in1k.py',
}
# Distillation-token heads: mmpretrain refuses to train them, so they are
# teachers only (the student here is ResNet-18); DeiT's we train
# (tests/test_deit_token.py).
CLS_TEACHER_ONLY = {
    'deit': 'deit/deit-tiny-distilled_4xb256_in1k.py',
    'efficientformer': 'efficientformer/efficientformer-l1_8xb128_in1k.py',
    'levit': 'levit/levit-128_8xb256_in1k.py',
}
# Run by default (the rest with -m matrix): EncoderDecoder, a cascade, a
# query-based segmentor, a ViT classifier, VGG, SwinV2 (its load hooks) and
# a distillation-token teacher.
FAST = {
    ('seg', 'pspnet'), ('seg', 'ocrnet'), ('seg', 'mask2former'),
    ('cls', 'vision_transformer'), ('cls', 'vgg'),
    ('cls', 'swin_transformer_v2'), ('cls', 'deit'),
}
# The standard partner of the cross-family cases, per task.
STANDARD = {'seg': 'pspnet', 'cls': 'resnet'}
# Cross-family cases run by default (the rest with -m matrix): a query-based
# teacher (MaskFormer: issue 15 item 4) of the standard student, a cascade
# student of the standard teacher, and a ViT (DeiT III-S) teacher of
# ResNet-18.
FAST_CROSS = {
    ('seg', 'maskformer', 'teacher'), ('seg', 'ocrnet', 'student'),
    ('cls', 'deit3', 'teacher'),
}
SEG_SIZE = 64
# Model settings that differ from the family's config, and why.
SEG_SIZES = {
    # LR-ASPP pools with a 49x49 window at stride 8: 392+ pixel inputs.
    'mobilenet_v3': 512,
}
MODEL_OVERRIDES = {
    # Relative position tables are built for the configured image size.
    'beit': dict(backbone=dict(img_size=(SEG_SIZE, SEG_SIZE))),
    'mae': dict(backbone=dict(img_size=(SEG_SIZE, SEG_SIZE))),
}
# mmseg's CrossEntropyLoss with class_weight indexes the weights with every
# label, the ignore label included (IndexError for 255): a host limitation
# that plain mmseg training on CGNet and PIDNet hits too (their configs
# weight the classes), so no ignored pixels for them here.
NO_IGNORE = {'cgnet', 'pidnet'}
# mmpretrain 1.2.0's replknet configs cannot be loaded (their model base
# imports a module at top level, which MMEngine's config parser rejects);
# the model they describe, written out:
REPLKNET = dict(
    type='ImageClassifier',
    backbone=dict(type='RepLKNet', arch='31B', out_indices=(3, )),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(type='LinearClsHead', num_classes=1000, in_channels=1024,
              loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
              topk=(1, 5)),
    data_preprocessor=dict(
        num_classes=1000, mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375], to_rgb=True))
KD = dict(loss_kd=dict(type='mmrankkd.KDLoss', temperature=2.0))


def revert_sync_bn_cfg(cfg):
    """A copy of a model config with every ``SyncBN`` turned into ``BN``."""
    if isinstance(cfg, dict):
        out = type(cfg)((k, revert_sync_bn_cfg(v)) for k, v in cfg.items())
        if out.get('type') == 'SyncBN':
            out['type'] = 'BN'
        return out
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(revert_sync_bn_cfg(v) for v in cfg)
    return cfg


def _case(kind, family):
    marks = () if (kind, family) in FAST else (pytest.mark.matrix, )
    return pytest.param(kind, family, marks=marks, id=f'{kind}-{family}')


def _cross_case(kind, family, role):
    marks = () if (kind, family, role) in FAST_CROSS else (
        pytest.mark.matrix, )
    return pytest.param(kind, family, role, marks=marks,
                        id=f'{kind}-{family}-as-{role}')


def family_model(package: str, rel: str, family: str = ''):
    """The config's model (with its config-level data_preprocessor), SyncBN
    reverted, seg inputs padded to the small test size."""
    if family == 'replknet':
        return Config(dict(model=dict(REPLKNET, _scope_='mmpretrain'))).model
    path, scope = _package_config_path(f'{package}::{rel}')
    cfg = Config.fromfile(path)
    model = copy.deepcopy(cfg.model)
    if model.get('data_preprocessor') is None and cfg.get(
            'data_preprocessor') is not None:
        model['data_preprocessor'] = copy.deepcopy(cfg.data_preprocessor)
    model = revert_sync_bn_cfg(model)
    if family in MODEL_OVERRIDES:
        for key, value in MODEL_OVERRIDES[family].items():
            model[key].update(value)
    if package == 'mmseg':
        size = SEG_SIZES.get(family, SEG_SIZE)
        model.data_preprocessor.size = (size, size)
    model['_scope_'] = cfg.get('default_scope', scope)
    return model


def _save_teacher(cfg, path):
    torch.manual_seed(0)
    model = build_model_from_source(cfg, 'teacher')
    torch.save({'state_dict': model.state_dict()}, path)
    return str(path)


def _seg_batch(num_classes, size=SEG_SIZE, ignore=True):
    """Two raw images with labels (a band of ignored pixels) and edge maps
    (PIDNet's boundary loss reads them)."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    samples, inputs = [], []
    g = torch.Generator().manual_seed(0)
    for _ in range(2):
        s = SegDataSample()
        label = torch.randint(0, num_classes, (1, size, size), generator=g)
        if ignore:
            label[:, :4] = 255
        s.gt_sem_seg = PixelData(data=label)
        s.gt_edge_map = PixelData(data=(label != label.roll(1, -1)).long())
        s.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size)))
        samples.append(s)
        inputs.append(torch.randint(0, 256, (3, size, size),
                                    generator=g).to(torch.uint8))
    return dict(inputs=inputs, data_samples=samples)


def _cls_batch(num_classes, size):
    from mmpretrain.structures import DataSample
    g = torch.Generator().manual_seed(0)
    samples = [DataSample(metainfo=dict(img_shape=(size, size))).set_gt_label(
        int(torch.randint(0, num_classes, (1, ), generator=g)))
               for _ in range(2)]
    inputs = [torch.randint(0, 256, (3, size, size), generator=g).to(
        torch.uint8) for _ in range(2)]
    return dict(inputs=inputs, data_samples=samples)


def _cls_input_size(model_cfg) -> int:
    backbone = model_cfg.get('backbone', {})
    size = backbone.get('img_size', 224)
    return size if isinstance(size, int) else size[0]


def _distil_one_step(model: LogitDistiller, data: dict) -> dict:
    model.train()
    batch = model.data_preprocessor(copy.deepcopy(data), True)
    losses = model.loss(**batch)
    assert 'distill.loss_kd' in losses
    task = [k for k in losses if not k.startswith('distill.') and 'loss' in k]
    assert task, f'no task losses from the host: {sorted(losses)}'
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.student.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in model.teacher.parameters())
    # The KD term alone reaches the student through the tapped logits.
    model.zero_grad()
    batch = model.data_preprocessor(copy.deepcopy(data), True)
    model.loss(**batch)['distill.loss_kd'].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0
               for p in model.student.parameters())
    model.eval()
    model.predict_with_teacher = True
    with torch.no_grad():
        outputs = model.val_step(copy.deepcopy(data))
    return outputs[0]


@pytest.mark.parametrize(
    'kind,family',
    [_case('seg', f) for f in SEG_FAMILIES] +
    [_case('cls', f) for f in CLS_FAMILIES])
def test_family_distils_into_itself(kind, family, tmp_path):
    if family in ('mask2former', 'maskformer'):
        pytest.importorskip('mmdet')
    package = 'mmseg' if kind == 'seg' else 'mmpretrain'
    rel = (SEG_FAMILIES if kind == 'seg' else CLS_FAMILIES)[family]
    cfg = family_model(package, rel, family)
    ckpt = _save_teacher(cfg, tmp_path / 'teacher.pth')
    torch.manual_seed(1)
    model = LogitDistiller(student=cfg, teacher=copy.deepcopy(cfg),
                           teacher_ckpt=ckpt, distill_losses=KD)
    if kind == 'seg':
        size = SEG_SIZES.get(family, SEG_SIZE)
        data = _seg_batch(model.num_classes or 19, size,
                          ignore=family not in NO_IGNORE)
        out = _distil_one_step(model, data)
        assert out.pred_sem_seg.shape == (size, size)
        assert out.teacher_pred_sem_seg.shape == (size, size)
    else:
        data = _cls_batch(model.num_classes or 1000, _cls_input_size(cfg))
        out = _distil_one_step(model, data)
        assert out.pred_score.shape == out.teacher_pred_score.shape


def _class_count(cfg) -> int:
    """The first ``num_classes`` in a (head) config, depth first (K-Net
    keeps it in its kernel-generating head)."""
    if isinstance(cfg, dict):
        if 'num_classes' in cfg:
            return cfg['num_classes']
        cfg = list(cfg.values())
    if isinstance(cfg, (list, tuple)):
        for value in cfg:
            found = _class_count(value)
            if found is not None:
                return found
    return None


def standard_partner(kind: str, family_cfg) -> dict:
    """PSPNet-R18 (seg) or ResNet-18 (cls) predicting the family's classes
    and padding its inputs like the family (one batch serves both)."""
    package = 'mmseg' if kind == 'seg' else 'mmpretrain'
    families = SEG_FAMILIES if kind == 'seg' else CLS_FAMILIES
    model = family_model(package, families[STANDARD[kind]], STANDARD[kind])
    num_classes = _class_count(
        family_cfg.head if kind == 'cls' else family_cfg.decode_head) or 1000
    if kind == 'cls':
        model.head.num_classes = num_classes
        model.data_preprocessor.num_classes = num_classes
        keys = ('pad_size_divisor', 'pad_value')
    else:
        model.decode_head.num_classes = num_classes
        model.auxiliary_head.num_classes = num_classes
        keys = ('size', 'size_divisor')
    family_pre = family_cfg.get('data_preprocessor') or {}
    for key in keys:
        if key in family_pre:
            model.data_preprocessor[key] = family_pre[key]
        else:
            model.data_preprocessor.pop(key, None)
    return model


@pytest.mark.parametrize(
    'kind,family,role',
    [_cross_case('seg', f, r) for f in SEG_FAMILIES if f != 'pspnet'
     for r in ('teacher', 'student')] +
    [_cross_case('cls', f, r) for f in CLS_FAMILIES if f != 'resnet'
     for r in ('teacher', 'student')])
def test_family_distils_across_families(kind, family, role, tmp_path):
    """The family teaches the standard student (role='teacher') or learns
    from the standard teacher (role='student')."""
    if family in ('mask2former', 'maskformer'):
        pytest.importorskip('mmdet')
    package = 'mmseg' if kind == 'seg' else 'mmpretrain'
    rel = (SEG_FAMILIES if kind == 'seg' else CLS_FAMILIES)[family]
    cfg = family_model(package, rel, family)
    other = standard_partner(kind, cfg)
    teacher, student = (cfg, other) if role == 'teacher' else (other, cfg)
    ckpt = _save_teacher(teacher, tmp_path / 'teacher.pth')
    torch.manual_seed(1)
    model = LogitDistiller(student=student, teacher=teacher,
                           teacher_ckpt=ckpt, distill_losses=KD)
    if kind == 'seg':
        size = SEG_SIZES.get(family, SEG_SIZE)
        data = _seg_batch(model.num_classes or 19, size,
                          ignore=student is other or family not in NO_IGNORE)
        out = _distil_one_step(model, data)
        assert out.pred_sem_seg.shape == (size, size)
        assert out.teacher_pred_sem_seg.shape == (size, size)
    else:
        data = _cls_batch(model.num_classes or 1000, _cls_input_size(cfg))
        out = _distil_one_step(model, data)
        assert out.pred_score.shape == out.teacher_pred_score.shape


@pytest.mark.parametrize(
    'kind,family', [_case('cls', f) for f in CLS_TEACHER_ONLY])
def test_distillation_token_heads_teach_but_are_refused_as_students(
        kind, family, tmp_path):
    teacher = family_model('mmpretrain', CLS_TEACHER_ONLY[family])
    student = family_model('mmpretrain', CLS_FAMILIES['resnet'])
    ckpt = _save_teacher(teacher, tmp_path / 'teacher.pth')
    model = LogitDistiller(student=student, teacher=teacher,
                           teacher_ckpt=ckpt, distill_losses=KD)
    _distil_one_step(model, _cls_batch(1000, _cls_input_size(teacher)))
    if family == 'deit':  # trainable: tests/test_deit_token.py
        assert LogitDistiller(student=teacher, teacher=teacher,
                              teacher_ckpt=ckpt,
                              distill_losses=KD).distillation_token
        return
    with pytest.raises(ValueError, match='distillation token'):
        LogitDistiller(student=teacher, teacher=teacher, teacher_ckpt=ckpt,
                       distill_losses=KD)
