"""TOML parsing on every supported Python: the standard ``tomllib`` from 3.11, ``tomli``
(its source) before."""

import sys

if sys.version_info >= (3, 11):
    from tomllib import TOMLDecodeError, loads
else:  # pragma: no cover - exercised on Python 3.10 only
    from tomli import TOMLDecodeError, loads

__all__ = ["TOMLDecodeError", "loads"]
