"""Get a host for ``pymarl-nonmono install``: a clone at the commit our patches were made against.

Neither PyMARL2 nor EPyMARL is on PyPI; users clone them from GitHub. ``install`` into a
folder that does not exist yet (or is empty) clones the host there first, from GitHub by
default, or from the source given with ``--source`` or the host's variable (e.g.
``$PYMARL_NONMONO_EPYMARL_SOURCE``: a URL, a local clone or a git bundle: machines without
GitHub, mirrors, CI).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .checkout import CheckoutError, Clone, GitNotFound, clone_at_commit, resolve_source
from .install import InstallError
from .spec import HostSpec


def host_source(host: HostSpec, explicit: Optional[str] = None) -> str:
    """Where to clone ``host`` from: ``explicit`` (``--source``), else its variable, else GitHub."""
    return explicit or os.environ.get(host.source_env) or host.url


def clone_host(host: HostSpec, dest: str | os.PathLike, source: Optional[str] = None,
               timeout: Optional[float] = None) -> Clone:
    """Clone ``host`` into ``dest`` (absent or empty) with HEAD detached at its pinned commit.

    Raises :class:`InstallError` with one line saying what failed and what to do."""
    source = host_source(host, source)
    try:
        return clone_at_commit(source, Path(dest), host.commit, timeout=timeout)
    except GitNotFound as exc:
        raise InstallError(f"{exc}; or clone {host.url} yourself, check out {host.commit[:7]} "
                           f"and pass that folder") from exc
    except CheckoutError as exc:
        raise InstallError(f"{exc}; give {host.title} ({host.url} at {host.commit[:7]}) another way with --source "
                           f"or ${host.source_env}: a URL, a local clone or a git bundle") from exc


def describe_source(host: HostSpec, source: Optional[str] = None) -> str:
    """The source :func:`clone_host` would use, as it will be shown (local paths absolute)."""
    chosen = host_source(host, source)
    try:
        return resolve_source(chosen)
    except CheckoutError:  # reported properly by clone_host
        return chosen
