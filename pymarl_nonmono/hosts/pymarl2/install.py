"""Install our patches into a PyMARL2 checkout, undo them: :mod:`..install` bound to PyMARL2.

The machinery is the same for every host (:mod:`pymarl_nonmono.hosts.install`); this module
fixes the host to :data:`~pymarl_nonmono.hosts.spec.PYMARL2` and keeps the names the rest of
the project (bench, the tests) has always used. :func:`install` and :func:`uninstall` look up
:func:`shipped_patches` and :func:`_write_bytes` here at call time, so the tests can swap
in synthetic patches or a failing disk.
"""

from __future__ import annotations

import os
from pathlib import Path

from ...patching import Patch, read_targets, series_state  # noqa: F401  (part of this module's API)
from .. import install as _host_install
from ..install import (  # noqa: F401  (part of this module's API)
    MANIFEST,
    MANIFEST_FORMAT,
    ORIGINALS,
    STATE_DIR,
    InstallError,
    InstallResult,
    UninstallResult,
    _write_bytes,
    manifest_path,
    read_manifest,
    sha256,
    touched_paths,
)
from ..spec import PYMARL2

HOST_COMMIT = PYMARL2.pinned
REQUIRED_FILES = PYMARL2.required_files


def restore_hint(root: Path) -> str:
    return _host_install.restore_hint(root, PYMARL2)


def check_checkout(path: str | os.PathLike) -> Path:
    """Return ``path`` resolved if it is a PyMARL2 checkout, else raise :class:`InstallError`."""
    return _host_install.check_checkout(path, PYMARL2)


def shipped_patches() -> list[tuple[Patch, str]]:
    """Our patches for PyMARL2 in application order, each with the sha256 of its file."""
    return _host_install.shipped_patches(PYMARL2)


def install(path: str | os.PathLike) -> InstallResult:
    return _host_install.install(path, PYMARL2, patches=shipped_patches, write=_write_bytes)


def uninstall(path: str | os.PathLike, force: bool = False) -> UninstallResult:
    return _host_install.uninstall(path, PYMARL2, force=force, write=_write_bytes)
