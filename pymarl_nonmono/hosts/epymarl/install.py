"""Install our patches into an EPyMARL checkout, undo them: :mod:`..install` bound to EPyMARL."""

from __future__ import annotations

import os
from pathlib import Path

from ...patching import Patch
from .. import install as _host_install
from ..install import InstallError, InstallResult, UninstallResult  # noqa: F401  (part of this module's API)
from ..spec import EPYMARL


def check_checkout(path: str | os.PathLike) -> Path:
    """Return ``path`` resolved if it is an EPyMARL checkout, else raise :class:`InstallError`."""
    return _host_install.check_checkout(path, EPYMARL)


def shipped_patches() -> list[tuple[Patch, str]]:
    """Our patches for EPyMARL in application order, each with the sha256 of its file."""
    return _host_install.shipped_patches(EPYMARL)


def install(path: str | os.PathLike) -> InstallResult:
    return _host_install.install(path, EPYMARL)


def uninstall(path: str | os.PathLike, force: bool = False) -> UninstallResult:
    return _host_install.uninstall(path, EPYMARL, force=force)
