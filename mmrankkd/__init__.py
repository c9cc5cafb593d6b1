"""mmrankkd: logit knowledge distillation for OpenMMLab as a config change.

Importing the package (``custom_imports=dict(imports=['mmrankkd'])``)
registers its losses, distiller, hooks and metrics.
"""
import mmengine
from mmengine.utils import digit_version

from .version import __version__, version_info

MMENGINE_MIN = '0.10.7'
if digit_version(mmengine.__version__) < digit_version(MMENGINE_MIN):
    raise ImportError(
        f'mmrankkd needs mmengine >= {MMENGINE_MIN}, found '
        f'{mmengine.__version__}. Fix: pip install -U "mmengine>={MMENGINE_MIN}"')

from . import (datasets, engine, evaluation,  # noqa: E402,F401  (registers)
               models)

__all__ = ['__version__', 'version_info']
