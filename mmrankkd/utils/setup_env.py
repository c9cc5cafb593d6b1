import datetime
import warnings

from mmengine import DefaultScope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Register all modules of mmrankkd into its registries.

    Mirrors ``mmseg.utils.register_all_modules``.

    Args:
        init_default_scope (bool): Whether to set the global default scope to
            ``mmrankkd``. Defaults to True.
    """
    import mmrankkd.engine  # noqa: F401
    import mmrankkd.evaluation  # noqa: F401
    import mmrankkd.models  # noqa: F401

    if not init_default_scope:
        return
    current = DefaultScope.get_current_instance()
    if current is None or not DefaultScope.check_instance_created('mmrankkd'):
        DefaultScope.get_instance('mmrankkd', scope_name='mmrankkd')
        return
    if current.scope_name != 'mmrankkd':
        warnings.warn(f'The current default scope "{current.scope_name}" is '
                      'not "mmrankkd"; register_all_modules forces it to '
                      '"mmrankkd". Pass init_default_scope=False to keep it.')
        DefaultScope.get_instance(f'mmrankkd-{datetime.datetime.now()}',
                                  scope_name='mmrankkd')
