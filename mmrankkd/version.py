# Copyright (c) mmrankkd contributors. All rights reserved.
__version__ = '0.1.0'


def parse_version_info(version_str):
    """Parse a version string like ``'0.1.0'`` into a tuple of ints."""
    return tuple(int(x) for x in version_str.split('.') if x.isdigit())


version_info = parse_version_info(__version__)
