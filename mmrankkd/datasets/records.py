"""What a training data set config is, as plain JSON: the records a
teacher store keeps and compares (not ``data_root``: the data may move)."""
import hashlib
import json
from typing import Dict, List, Union

#: Wrapper arguments that choose samples or views.
WRAPPER_KEYS = ('times', 'seed', 'oversample_thr')
#: Their defaults, filled in so that an explicit default compares equal.
WRAPPER_DEFAULTS = {'ReplayDataset': {'seed': 0}}


def plain(obj):
    """Config values as plain JSON types (ConfigDict -> dict, tuple ->
    list), so that two configs compare by value."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return repr(obj)


def sha256_of(obj) -> str:
    """sha256 of ``obj`` as canonical JSON."""
    text = json.dumps(plain(obj), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _type_name(cfg: dict):
    """The registered name, without our own scope (``mmrankkd.ReplayDataset``
    and ``ReplayDataset`` are one class; other scopes are kept: they may
    choose another class of that name)."""
    name = cfg.get('type')
    if isinstance(name, str) and name.startswith('mmrankkd.'):
        return name[len('mmrankkd.'):]
    return name


def dataset_record(dataset_cfg: dict) -> Dict:
    """The parts of a data set config that choose the samples and their
    order, through wrappers (``RepeatDataset``, ``ConcatDataset``,
    ``ReplayDataset``...)."""
    cfg = plain(dataset_cfg)
    record = {k: cfg.get(k) for k in ('split', 'ann_file', 'indices',
                                      'data_prefix', 'test_mode')}
    record['type'] = _type_name(cfg)
    defaults = WRAPPER_DEFAULTS.get(record['type'], {})
    for key in WRAPPER_KEYS:
        if key in cfg or key in defaults:
            record[key] = cfg.get(key, defaults.get(key))
    if isinstance(cfg.get('dataset'), dict):
        record['dataset'] = dataset_record(cfg['dataset'])
    if isinstance(cfg.get('datasets'), list):
        record['datasets'] = [dataset_record(d) for d in cfg['datasets']]
    return record


def training_pipeline(dataset_cfg: dict) -> Union[List, List[List]]:
    """The pipeline of a data set config, inside any wrappers; a list of
    the parts' pipelines for a ``ConcatDataset``."""
    if 'pipeline' in dataset_cfg:
        return list(dataset_cfg['pipeline'])
    if isinstance(dataset_cfg.get('dataset'), dict):
        return training_pipeline(dataset_cfg['dataset'])
    if isinstance(dataset_cfg.get('datasets'), (list, tuple)):
        return [training_pipeline(d) for d in dataset_cfg['datasets']]
    return []


def pipeline_record(pipeline) -> List:
    """A training pipeline as stored (plain JSON)."""
    return plain(list(pipeline))


def views_sha256(dataset_cfg: dict) -> str:
    """What decides a replayed data set's views: the data set record and
    every pipeline in it (16 hex digits)."""
    return sha256_of(dict(
        dataset=dataset_record(dataset_cfg),
        pipeline=pipeline_record(training_pipeline(dataset_cfg))))[:16]
