"""The synthetic data set reads through mmseg's real CityscapesDataset."""
import os.path as osp

import numpy as np
import pytest

from mmrankkd.datasets import make_synthetic_cityscapes

PIPELINE = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]


def _dataset(root, split):
    from mmseg.datasets import CityscapesDataset
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return CityscapesDataset(
        data_root=root,
        data_prefix=dict(
            img_path=f'leftImg8bit/{split}', seg_map_path=f'gtFine/{split}'),
        pipeline=PIPELINE)


@pytest.fixture(scope='module')
def root(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('cityscapes'))
    return make_synthetic_cityscapes(
        path, num_train=4, num_val=2, height=64, width=128, seed=0)


def test_layout_and_labels_through_cityscapes_dataset(root):
    train, val = _dataset(root, 'train'), _dataset(root, 'val')
    assert len(train) == 4 and len(val) == 2
    present = set()
    for i in range(len(train)):
        sample = train[i]
        img = sample['inputs']
        labels = sample['data_samples'].gt_sem_seg.data.numpy()
        assert tuple(img.shape) == (3, 64, 128)
        assert labels.shape == (1, 64, 128)
        values = set(np.unique(labels).tolist())
        assert values <= set(range(19)) | {255}, values
        present |= values - {255}
    # a street scene: road, sidewalk, sky and several other classes
    assert {0, 1, 10} <= present
    assert len(present) >= 8, present
    # the file names are Cityscapes' own
    info = train.get_data_info(0)
    assert info['img_path'].endswith('_leftImg8bit.png')
    assert info['seg_map_path'].endswith('_gtFine_labelTrainIds.png')
    assert osp.basename(osp.dirname(info['img_path'])) in ('synthburg',
                                                           'rankstadt')


def _read_all(root):
    import cv2
    arrays = []
    for split, n in (('train', 4), ('val', 2)):
        ds = _dataset(root, split)
        assert len(ds) == n
        for i in range(n):
            info = ds.get_data_info(i)
            arrays.append(cv2.imread(info['img_path'], cv2.IMREAD_UNCHANGED))
            arrays.append(
                cv2.imread(info['seg_map_path'], cv2.IMREAD_UNCHANGED))
    return arrays


def test_deterministic_by_seed(root, tmp_path):
    same = make_synthetic_cityscapes(
        str(tmp_path / 'same'), num_train=4, num_val=2, height=64, width=128,
        seed=0)
    other = make_synthetic_cityscapes(
        str(tmp_path / 'other'), num_train=4, num_val=2, height=64,
        width=128, seed=1)
    a, b, c = _read_all(root), _read_all(same), _read_all(other)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_second_call_skips_a_complete_set_and_remakes_a_changed_one(
        tmp_path):
    root = str(tmp_path)
    make_synthetic_cityscapes(root, num_train=2, num_val=1, height=32,
                              width=64)
    img = osp.join(root, 'leftImg8bit/train/synthburg/'
                   'synthburg_000000_000019_leftImg8bit.png')
    mtime = osp.getmtime(img)
    make_synthetic_cityscapes(root, num_train=2, num_val=1, height=32,
                              width=64)
    assert osp.getmtime(img) == mtime
    # fewer images: the stale ones are removed, so the dataset sees 1
    make_synthetic_cityscapes(root, num_train=1, num_val=1, height=32,
                              width=64)
    assert len(_dataset(root, 'train')) == 1


def test_synthetic_cifar100_reads_back_through_mmpretrain(tmp_path):
    """The CIFAR-100 files read back through mmpretrain's CIFAR100 (md5
    checks off inside the context, on again after it) and through
    mmrankkd.SyntheticCIFAR100 built by name: the pickled images and fine
    labels."""
    import pickle

    import numpy as np
    from mmpretrain.datasets import CIFAR100
    from mmpretrain.registry import DATASETS

    from mmrankkd.datasets import (disable_cifar100_md5_check,
                                   make_synthetic_cifar100)
    root = make_synthetic_cifar100(str(tmp_path), num_train=10, num_test=5)
    with open(osp.join(root, 'cifar-100-python', 'test'), 'rb') as f:
        entry = pickle.load(f)
    images = entry['data'].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    kwargs = dict(data_root=root, split='test', pipeline=[], download=False)
    with disable_cifar100_md5_check():
        real = CIFAR100(**kwargs)
    named = DATASETS.build(dict(type='mmrankkd.SyntheticCIFAR100', **kwargs))
    for dataset in (real, named):
        assert len(dataset) == 5
        assert [dataset[i]['gt_label'] for i in range(5)] == \
            entry['fine_labels']
        assert np.array_equal(np.stack([dataset[i]['img']
                                        for i in range(5)]), images)
        # mmpretrain's own CIFAR-100 class names (its METAINFO wins
        # over the file's meta)
        assert len(dataset.metainfo['classes']) == 100
    with pytest.raises(RuntimeError):  # the md5 checks are back
        CIFAR100(**kwargs)
