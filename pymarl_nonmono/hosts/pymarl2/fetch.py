"""Get PyMARL2 for ``pymarl-nonmono install``: a clone at the commit our patches were made against.

PyMARL2 is not on PyPI; users clone it from GitHub. ``install`` into a folder that does not
exist yet (or is empty) clones it there first, from GitHub by default, or from the source
given with ``--source`` or ``$PYMARL_NONMONO_PYMARL2_SOURCE`` (a URL, a local clone or a git
bundle: machines without GitHub, mirrors, CI).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..checkout import CheckoutError, Clone, GitNotFound, clone_at_commit, is_vacant, resolve_source
from .install import InstallError

PYMARL2_URL = "https://github.com/hijkzzz/pymarl2"
PYMARL2_COMMIT = "8ccac7c5aa134422a2e3009be735d23cdf8ce2f8"
SOURCE_ENV = "PYMARL_NONMONO_PYMARL2_SOURCE"

__all__ = ["PYMARL2_COMMIT", "PYMARL2_URL", "SOURCE_ENV", "clone_pymarl2", "is_vacant", "pymarl2_source"]


def pymarl2_source(explicit: Optional[str] = None) -> str:
    """Where to clone from: ``explicit`` (``--source``), else ``$PYMARL_NONMONO_PYMARL2_SOURCE``, else GitHub."""
    return explicit or os.environ.get(SOURCE_ENV) or PYMARL2_URL


def clone_pymarl2(dest: str | os.PathLike, source: Optional[str] = None, timeout: Optional[float] = None) -> Clone:
    """Clone PyMARL2 into ``dest`` (absent or empty) with HEAD detached at :data:`PYMARL2_COMMIT`.

    Raises :class:`InstallError` with one line saying what failed and what to do."""
    source = pymarl2_source(source)
    try:
        return clone_at_commit(source, Path(dest), PYMARL2_COMMIT, timeout=timeout)
    except GitNotFound as exc:
        raise InstallError(f"{exc}; or clone {PYMARL2_URL} yourself, check out {PYMARL2_COMMIT[:7]} "
                           f"and pass that folder") from exc
    except CheckoutError as exc:
        raise InstallError(f"{exc}; give PyMARL2 ({PYMARL2_URL} at {PYMARL2_COMMIT[:7]}) another way with --source "
                           f"or ${SOURCE_ENV}: a URL, a local clone or a git bundle") from exc


def describe_source(source: Optional[str] = None) -> str:
    """The source :func:`clone_pymarl2` would use, as it will be shown (local paths absolute)."""
    chosen = pymarl2_source(source)
    try:
        return resolve_source(chosen)
    except CheckoutError:  # reported properly by clone_pymarl2
        return chosen
