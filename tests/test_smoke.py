"""The environment the set-up builds: compiled mmcv ops, mmseg, mmpretrain, and
our registries reachable from every OpenMMLab scope."""
import importlib

import pytest
import torch


@pytest.mark.parametrize('module', ['mmcv.ops', 'mmseg.models',
                                    'mmpretrain.models', 'mmrankkd'])
def test_imports(module):
    importlib.import_module(module)


def test_mmcv_ops_are_compiled():
    # nms runs through mmcv's compiled _ext on CPU; mmcv-lite has no _ext.
    from mmcv.ops import nms
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [20., 20., 30., 30.]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    _, keep = nms(boxes, scores, iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
