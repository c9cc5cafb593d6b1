"""Turn the ``student`` / ``teacher`` entries of a distiller config into
built models.

A source is one of:

* a model config dict (``dict(type='EncoderDecoder', ...)``); its registry
  scope is its ``_scope_``, a scope prefix in its ``type``
  (``'mmseg.EncoderDecoder'``), or else the current default scope;
* ``'<package>::<path>'`` (``'mmseg::pspnet/pspnet_r18-d8_4xb2-80k_...py'``),
  a config shipped inside an installed OpenMMLab package;
* a local config file path.

For config files the file's ``model`` is used, built in the file's
``default_scope`` (or the package's scope).
"""
import copy
import importlib
import os.path as osp
from typing import Tuple, Union

from mmengine.config import Config, ConfigDict
from mmengine.registry import MODELS as ROOT_MODELS
from mmengine.registry import DefaultScope

ModelSource = Union[str, dict, ConfigDict]


def _package_config_path(source: str) -> Tuple[str, str]:
    """Resolve ``'mmseg::a/b.py'`` to the file inside the installed package
    (no network, no install)."""
    scope, rel = source.split('::', 1)
    try:
        pkg = importlib.import_module(scope)
    except ImportError as e:
        raise ImportError(
            f'Config "{source}" names package "{scope}", which cannot be '
            f'imported ({e}). Fix: install it, or use a local config path.')
    root = osp.dirname(pkg.__file__)
    for base in (osp.join(root, '.mim', 'configs'), osp.join(root, 'configs')):
        path = osp.join(base, rel)
        if osp.isfile(path):
            return path, scope
    raise FileNotFoundError(
        f'Config "{source}" not found: "{rel}" is not under '
        f'{osp.join(root, ".mim", "configs")}. Fix: check the path '
        f'(e.g. "{scope}::pspnet/pspnet_r18-d8_4xb2-80k_cityscapes-'
        '512x1024.py").')


def resolve_model_cfg(source: ModelSource, role: str) -> Tuple[dict, str]:
    """Return ``(model_cfg, scope)`` for a student/teacher source.

    Args:
        source (str | dict): See the module docstring.
        role (str): ``'student'`` or ``'teacher'``, used in error messages.

    Returns:
        tuple[ConfigDict, str | None]: A copy of the model config (a
        ``ConfigDict``, as OpenMMLab models expect attribute access on
        ``test_cfg`` etc.) and the registry scope to build it in.
    """
    if isinstance(source, (dict, ConfigDict)):
        cfg = ConfigDict(copy.deepcopy(source))
        scope = cfg.pop('_scope_', None)
        if scope is None and '.' not in str(cfg.get('type', '')):
            current = DefaultScope.get_current_instance()
            scope = current.scope_name if current is not None else None
        return cfg, scope
    if not isinstance(source, str):
        raise TypeError(
            f'model.{role} must be a model config dict, a "package::path" '
            f'config or a config file path, got {type(source).__name__}.')
    if '::' in source:
        path, scope = _package_config_path(source)
    else:
        path = osp.expanduser(source)
        if not osp.isfile(path):
            raise FileNotFoundError(
                f'model.{role} config file "{source}" does not exist. Fix: '
                'give an existing config path, "mmseg::<path>" / '
                '"mmpretrain::<path>", or a model dict.')
        scope = None
    file_cfg = Config.fromfile(path)
    if 'model' not in file_cfg:
        raise KeyError(f'model.{role} config "{source}" has no `model` '
                       'entry to build the network from.')
    scope = file_cfg.get('default_scope', None) or scope
    cfg = ConfigDict(copy.deepcopy(file_cfg.model))
    # As MMEngine's runner does: a config-level data_preprocessor (the
    # mmpretrain convention) applies to a model that declares none.
    if cfg.get('data_preprocessor') is None and file_cfg.get(
            'data_preprocessor') is not None:
        cfg['data_preprocessor'] = copy.deepcopy(file_cfg.data_preprocessor)
    scope = cfg.pop('_scope_', None) or scope
    return cfg, scope


def build_resolved(cfg: ConfigDict, scope):
    """Build a model config returned by :func:`resolve_model_cfg` in its
    scope (``cfg`` is not modified)."""
    cfg = copy.deepcopy(cfg)
    if scope is not None:
        cfg['_scope_'] = scope
    return ROOT_MODELS.build(cfg)


def build_model_from_source(source: ModelSource, role: str):
    """Build the model a source describes (see :func:`resolve_model_cfg`)."""
    return build_resolved(*resolve_model_cfg(source, role))
