"""Weights-only loading of OpenMMLab checkpoints (torch >= 2.6)."""
import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.runner.checkpoint import _load_checkpoint

import mmrankkd  # noqa: F401  (installs the allow-list)
from mmrankkd.engine import UnsafeCheckpointError, safe_torch_load


def test_mmengine_checkpoint_with_message_hub_round_trips(tmp_path):
    hub = MessageHub.get_instance('mmrankkd_ckpt_test')
    for i in range(3):
        hub.update_scalar('train/loss', float(i))
    hub.update_info('np_array', np.arange(4, dtype=np.float32))
    hub.update_info('np_scalar', np.float64(1.5))
    hub.update_info('np_int', np.int64(7))
    ckpt = dict(
        meta=dict(seed=np.int64(3), iter=4, dataset_meta=dict(
            classes=('a', 'b'))),
        state_dict={'w': torch.ones(2)},
        message_hub=hub.state_dict(),
        optimizer={'state': {}, 'param_groups': [{'lr': 0.1}]})
    path = tmp_path / 'iter_4.pth'
    torch.save(ckpt, path)
    # mmengine's own loader: torch.load without weights_only (-> True).
    loaded = _load_checkpoint(str(path), map_location='cpu')
    buf = loaded['message_hub']['log_scalars']['train/loss']
    assert buf.mean() == pytest.approx(1.0) and buf.current() == 2.0
    info = loaded['message_hub']['runtime_info']
    assert np.array_equal(info['np_array'], np.arange(4, dtype=np.float32))
    assert info['np_scalar'] == 1.5 and info['np_int'] == 7
    restored = MessageHub.get_instance('mmrankkd_ckpt_test_2')
    restored.load_state_dict(loaded['message_hub'])
    assert restored.get_scalar('train/loss').current() == 2.0


class _Evil:
    ran = False

    def __reduce__(self):
        return (_set_ran, ())


def _set_ran():
    _Evil.ran = True
    return 'pwned'


def test_arbitrary_pickle_is_refused_with_a_clear_message(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'payload': _Evil()}, path)
    with pytest.raises(UnsafeCheckpointError) as e:
        _load_checkpoint(str(path), map_location='cpu')
    msg = str(e.value)
    assert 'Refusing to load' in msg and '_set_ran' in msg
    assert 'add_safe_globals' in msg
    with pytest.raises(UnsafeCheckpointError):
        safe_torch_load(str(path))
    assert not _Evil.ran


def test_getattr_stand_in_only_resolves_history_buffer_methods(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (getattr, (np.ndarray, 'tofile'))

    path = tmp_path / 'getattr.pth'
    torch.save({'x': Payload()}, path)
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(path)
