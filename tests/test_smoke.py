"""The environment the set-up builds: compiled mmcv ops, mmseg, mmpretrain,
mmdet, and our registries reachable from every OpenMMLab scope; and a
repository that cites only files it contains."""
import importlib
import shutil
import subprocess
from pathlib import Path

import pytest
import torch


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('module,registry,name', [
    ('mmseg.models', 'mmseg.registry', 'EncoderDecoder'),
    ('mmpretrain.models', 'mmpretrain.registry', 'ImageClassifier'),
    ('mmdet.models', 'mmdet.registry', 'Mask2FormerHead'),
    ('mmrankkd', 'mmrankkd.registry', 'LogitDistiller'),
])
def test_importing_a_package_registers_its_models(module, registry, name):
    """Each package imports and its import registers its models (the
    registries a config builds from)."""
    importlib.import_module(module)
    cls = importlib.import_module(registry).MODELS.get(name)
    assert isinstance(cls, type) and cls.__name__ == name


def test_mmseg_mask_heads_are_mmdets():
    """Without mmdet, mmseg silently replaces its Mask2Former/MaskFormer heads
    by an empty BaseModule; with the set-up's mmdet they are the real ones."""
    from mmdet.models.dense_heads import Mask2FormerHead, MaskFormerHead
    from mmseg.models.decode_heads import mask2former_head, maskformer_head
    assert issubclass(mask2former_head.Mask2FormerHead, Mask2FormerHead)
    assert issubclass(maskformer_head.MaskFormerHead, MaskFormerHead)


@pytest.mark.skipif(shutil.which('git') is None
                    or not (REPO / '.git').exists(),
                    reason='needs a git checkout')
def test_no_file_cites_notes_the_repository_does_not_contain():
    """Sources and docs cite docs/papers.md, not private notes outside the
    repository (tracked and new, not ignored, files)."""
    # The patterns are written so that they do not match this file.
    out = subprocess.run(
        ['git', 'grep', '-n', '-I', '--untracked', '-e', 'REFERENC[E]', '-e',
         r'\.\./share[d]'], cwd=REPO, capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    assert out.stdout == '', (
        'these lines cite files outside the repository; cite '
        'docs/papers.md (its sections keep the same numbers):\n' + out.stdout)


def test_mmcv_ops_are_compiled():
    # nms runs through mmcv's compiled _ext on CPU; mmcv-lite has no _ext.
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]


@pytest.mark.parametrize('registry_module', [
    'mmrankkd.registry', 'mmseg.registry', 'mmpretrain.registry',
    'mmengine.registry'
])
def test_our_losses_build_from_every_scope(registry_module):
    """`type='mmrankkd.X'` reaches our registry from any OpenMMLab scope."""
    from mmrankkd.models.losses import KDLoss
    models = importlib.import_module(registry_module).MODELS
    loss = models.build(dict(type='mmrankkd.KDLoss', temperature=2.0))
    assert type(loss) is KDLoss


def test_default_scope_mmrankkd_builds_bare_names():
    from mmengine.registry import MODELS, DefaultScope

    from mmrankkd.models.losses import KendallRankLoss
    with DefaultScope.overwrite_default_scope('mmrankkd'):
        assert type(MODELS.build(dict(type='KendallRankLoss'))) is \
            KendallRankLoss


def test_custom_imports_alone_registers_our_modules(tmp_path):
    """What OpenMMLab's tools/train.py does with a config: import the names in
    custom_imports, then build from a registry (in a fresh interpreter)."""
    import subprocess
    import sys
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("custom_imports = dict(imports=['mmrankkd'], "
                   "allow_failed_imports=False)\n"
                   "loss = dict(type='mmrankkd.BalanceDivergenceLoss')\n")
    code = (
        'from mmengine.config import Config\n'
        'from mmseg.registry import MODELS\n'
        f'cfg = Config.fromfile({str(cfg)!r})\n'  # imports custom_imports
        'print(type(MODELS.build(cfg.loss)).__name__)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == 'BalanceDivergenceLoss'
