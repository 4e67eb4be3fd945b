"""Get PyMARL2 for ``pymarl-nonmono install``: :mod:`..fetch` bound to PyMARL2.

PyMARL2 is not on PyPI; users clone it from GitHub. ``install`` into a folder that does not
exist yet (or is empty) clones it there first, from GitHub by default, or from the source
given with ``--source`` or ``$PYMARL_NONMONO_PYMARL2_SOURCE`` (a URL, a local clone or a git
bundle: machines without GitHub, mirrors, CI).
"""

from __future__ import annotations

import os
from typing import Optional

from .. import fetch as _host_fetch
from ..checkout import Clone, is_vacant
from ..spec import PYMARL2

PYMARL2_URL = PYMARL2.url
PYMARL2_COMMIT = PYMARL2.commit
SOURCE_ENV = PYMARL2.source_env

__all__ = ["PYMARL2_COMMIT", "PYMARL2_URL", "SOURCE_ENV", "clone_pymarl2", "is_vacant", "pymarl2_source"]


def pymarl2_source(explicit: Optional[str] = None) -> str:
    """Where to clone from: ``explicit`` (``--source``), else ``$PYMARL_NONMONO_PYMARL2_SOURCE``, else GitHub."""
    return _host_fetch.host_source(PYMARL2, explicit)


def clone_pymarl2(dest: str | os.PathLike, source: Optional[str] = None, timeout: Optional[float] = None) -> Clone:
    """Clone PyMARL2 into ``dest`` (absent or empty) with HEAD detached at :data:`PYMARL2_COMMIT`."""
    return _host_fetch.clone_host(PYMARL2, dest, source, timeout)


def describe_source(source: Optional[str] = None) -> str:
    """The source :func:`clone_pymarl2` would use, as it will be shown (local paths absolute)."""
    return _host_fetch.describe_source(PYMARL2, source)
