"""A small synthetic data set in the real CIFAR-100 layout.

``make_synthetic_cifar100(root)`` writes ``root/cifar-100-python/{train,
test,meta}``: the pickled batches mmpretrain's ``CIFAR100`` reads (``data``
uint8 (N, 3072) in CHW order, ``fine_labels``, ``coarse_labels``,
``filenames``; ``meta`` with ``fine_label_names`` / ``coarse_label_names``).

Each class is a coloured pattern (class-specific mean colour and stripe
frequency plus noise), so a small network can learn it in a few iterations.

Note: ``CIFAR100`` checks the files' md5 sums against the real data set's,
which synthetic files cannot match. To train on them with ``tools/train.py``
set the data sets' type to ``mmrankkd.SyntheticCIFAR100`` (below: the same
reader without md5 checks or download), e.g. for a config of
``configs/cifar100/``::

    python -c "from mmrankkd.datasets import make_synthetic_cifar100; \
        make_synthetic_cifar100('data/synthetic_cifar100')"
    python tools/train.py CONFIG --cfg-options \
        train_dataloader.dataset.type=mmrankkd.SyntheticCIFAR100 \
        train_dataloader.dataset.data_root=data/synthetic_cifar100 \
        val_dataloader.dataset.type=mmrankkd.SyntheticCIFAR100 \
        val_dataloader.dataset.data_root=data/synthetic_cifar100 \
        test_dataloader.dataset.type=mmrankkd.SyntheticCIFAR100 \
        test_dataloader.dataset.data_root=data/synthetic_cifar100

:func:`disable_cifar100_md5_check` (a context manager) turns the checks off
for the real ``CIFAR100`` class instead, in-process (tests).
"""
import contextlib
import os
import os.path as osp
import pickle

import numpy as np

NUM_CLASSES = 100


def _draw(rng, labels):
    n = len(labels)
    yy, xx = np.mgrid[0:32, 0:32].astype(np.float32)
    imgs = np.empty((n, 3, 32, 32), np.uint8)
    for i, c in enumerate(labels):
        colour = np.array([(c * 37) % 256, (c * 91) % 256, (c * 53) % 256],
                          np.float32)
        freq = 1 + c % 7
        angle = (c // 7) * np.pi / 15
        stripes = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)) /
                         32 * 2 * np.pi)
        img = colour[:, None, None] * 0.6 + 50 * stripes[None] + 50
        img += rng.normal(0, 12, img.shape)
        imgs[i] = np.clip(img, 0, 255).astype(np.uint8)
    return imgs.reshape(n, -1)


def make_synthetic_cifar100(root, num_train=500, num_test=100, seed=0):
    """Write a synthetic CIFAR-100 in the real pickled layout.

    Args:
        root (str): Data root, as ``data_root`` of mmpretrain's ``CIFAR100``.
        num_train (int): Training images. Defaults to 500.
        num_test (int): Test images. Defaults to 100.
        seed (int): Random seed. Defaults to 0.

    Returns:
        str: ``root``.
    """
    folder = osp.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, num in (('train', num_train), ('test', num_test)):
        labels = (np.arange(num) % NUM_CLASSES).tolist()
        rng.shuffle(labels)
        entry = {
            'filenames': [f'synthetic_{split}_{i:05d}.png'
                          for i in range(num)],
            'batch_label': f'synthetic {split} batch',
            'fine_labels': [int(c) for c in labels],
            'coarse_labels': [int(c) // 5 for c in labels],
            'data': _draw(rng, labels),
        }
        with open(osp.join(folder, split), 'wb') as f:
            pickle.dump(entry, f)
    meta = {
        'fine_label_names': [f'class_{i:02d}' for i in range(NUM_CLASSES)],
        'coarse_label_names': [f'super_{i:02d}' for i in range(20)],
    }
    with open(osp.join(folder, 'meta'), 'wb') as f:
        pickle.dump(meta, f)
    return root


@contextlib.contextmanager
def disable_cifar100_md5_check():
    """Let mmpretrain's real ``CIFAR100`` read synthetic files by turning
    its md5 checks off inside the ``with`` block (restored afterwards)."""
    from mmpretrain.datasets import CIFAR100
    saved = (CIFAR100.train_list, CIFAR100.test_list, CIFAR100.meta)
    CIFAR100.train_list = [[f, None] for f, _ in saved[0]]
    CIFAR100.test_list = [[f, None] for f, _ in saved[1]]
    CIFAR100.meta = dict(saved[2], md5=None)
    try:
        yield
    finally:
        CIFAR100.train_list, CIFAR100.test_list, CIFAR100.meta = saved


def _synthetic_cifar100_class():
    from mmpretrain.datasets import CIFAR100

    from mmrankkd.registry import DATASETS

    @DATASETS.register_module(name='SyntheticCIFAR100')
    class SyntheticCIFAR100(CIFAR100):
        """mmpretrain's ``CIFAR100`` reader for the files that
        :func:`make_synthetic_cifar100` writes: no md5 checks (synthetic
        files cannot match the real ones) and no download. Same arguments
        as ``CIFAR100`` (``download`` is ignored).
        """
        train_list = [[name, None] for name, _ in CIFAR100.train_list]
        test_list = [[name, None] for name, _ in CIFAR100.test_list]
        meta = dict(CIFAR100.meta, md5=None)

        def __init__(self, *args, **kwargs):
            kwargs['download'] = False
            super().__init__(*args, **kwargs)

        def load_data_list(self):
            if not self._check_integrity():
                folder = osp.join(self.data_prefix['root'], self.base_folder)
                raise FileNotFoundError(
                    f'SyntheticCIFAR100: no {self.train_list[0][0]!r} / '
                    f'{self.test_list[0][0]!r} under {folder}. Fix: write '
                    'them with mmrankkd.datasets.make_synthetic_cifar100('
                    f'{self.data_prefix["root"]!r}), or point data_root at '
                    'the folder that holds cifar-100-python/.')
            return super().load_data_list()

    return SyntheticCIFAR100


SyntheticCIFAR100 = _synthetic_cifar100_class()
