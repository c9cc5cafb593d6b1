"""A small synthetic data set in the real CIFAR-100 layout.

``make_synthetic_cifar100(root)`` writes ``root/cifar-100-python/{train,
test,meta}``: the pickled batches mmpretrain's ``CIFAR100`` reads (``data``
uint8 (N, 3072) in CHW order, ``fine_labels``, ``coarse_labels``,
``filenames``; ``meta`` with ``fine_label_names`` / ``coarse_label_names``).

Each class is a coloured pattern (class-specific mean colour and stripe
frequency plus noise), so a small network can learn it in a few iterations.

Note: ``CIFAR100`` checks the files' md5 sums against the real data set's,
which synthetic files cannot match. Readers therefore need those checks off:
:func:`disable_cifar100_md5_check` (a context manager) does that for the
real ``CIFAR100`` class, for tests and demos only.
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
