"""mmrankkd's registry nodes, children of MMEngine's root registries.

A config reaches our modules with ``type='mmrankkd.<Name>'`` from any scope
(mmseg, mmpretrain, mmengine), or with a bare name under
``default_scope='mmrankkd'`` / ``_scope_='mmrankkd'``. ``locations`` lets the
registries import our modules lazily, so building by name needs no import of
``mmrankkd.models`` first.
"""
from mmengine.registry import DATA_SAMPLERS as MMENGINE_DATA_SAMPLERS
from mmengine.registry import DATASETS as MMENGINE_DATASETS
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import METRICS as MMENGINE_METRICS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

# Losses and the distiller.
MODELS = Registry(
    'model', parent=MMENGINE_MODELS, locations=['mmrankkd.models'])
# Data transforms (MLKD's strong view; views recorded for the teacher store).
TRANSFORMS = Registry(
    'transform', parent=MMENGINE_TRANSFORMS,
    locations=['mmrankkd.datasets'])
# Synthetic data sets in real layouts (e.g. SyntheticCIFAR100) and the
# replay wrapper (ReplayDataset).
DATASETS = Registry(
    'dataset', parent=MMENGINE_DATASETS, locations=['mmrankkd.datasets'])
# The replay sampler (epoch-keyed augmentation for the teacher store).
DATA_SAMPLERS = Registry(
    'data sampler', parent=MMENGINE_DATA_SAMPLERS,
    locations=['mmrankkd.datasets'])
# Training hooks.
HOOKS = Registry(
    'hook', parent=MMENGINE_HOOKS, locations=['mmrankkd.engine'])
# Teacher-student agreement metrics.
METRICS = Registry(
    'metric', parent=MMENGINE_METRICS, locations=['mmrankkd.evaluation'])
# Validation/test loops that also run the teacher (agreement metrics).
LOOPS = Registry(
    'loop', parent=MMENGINE_LOOPS, locations=['mmrankkd.engine'])
# DDP wrapper for CPU (gloo) runs.
MODEL_WRAPPERS = Registry(
    'model_wrapper', parent=MMENGINE_MODEL_WRAPPERS,
    locations=['mmrankkd.engine'])
