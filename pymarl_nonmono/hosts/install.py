"""Install our patches into a host's checkout (PyMARL2, EPyMARL: :mod:`.spec`), undo them.

``install`` works in two phases so that a failure never leaves a half-patched tree: every
patch is applied in memory and every target is checked for writability first; only then
are the originals saved to ``<checkout>/.pymarl_nonmono/`` and the files written.
``uninstall`` restores the saved originals byte for byte; it does not need the patches,
so it also works after pymarl-nonmono was upgraded.

Nothing here prints: results are returned, problems raised as :class:`InstallError`
whose message is one line meant for the user.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Optional

from .. import __version__
from ..patching import Patch, PatchError, parse_patch, read_targets, series_state
from .spec import HOSTS, HostSpec, identify, not_a_checkout

log = logging.getLogger(__name__)

# The same for every host: uninstall must work whatever pymarl-nonmono version installed.
STATE_DIR = ".pymarl_nonmono"
MANIFEST = "manifest.json"
ORIGINALS = "originals"
MANIFEST_FORMAT = 1

# Loads a host's patch series: [(patch, sha256 of its file)] in application order.
PatchSource = Callable[[], list[tuple[Patch, str]]]
# Writes a file atomically: (target, data, mode or None for the umask's default).
Writer = Callable[[Path, bytes, Optional[int]], None]


class InstallError(Exception):
    """Installing, uninstalling or checking failed; the message says why and what to do."""


# --------------------------------------------------------------------------- helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def restore_hint(root: Path, host: HostSpec) -> str:
    """How to get a checkout's original files back: git only where ``root`` is a git checkout."""
    if (root / ".git").exists():
        return f"restore the original files (git -C {root} checkout -- src)"
    return f"replace {root} with a pristine copy of {host.pinned}"


def check_checkout(path: str | os.PathLike, host: HostSpec) -> Path:
    """Return ``path`` resolved if it is a checkout of ``host``, else raise :class:`InstallError`."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InstallError(f"not a {host.title} checkout: {root} is not a directory")
    missing = [rel for rel in host.required_files if not (root / rel).is_file()]
    if missing:
        raise InstallError(f"not a {host.title} checkout: {root} ({', '.join(missing)} missing)")
    return root.resolve()


def detect_host(path: str | os.PathLike) -> HostSpec:
    """The host ``path`` is a checkout of (:func:`.spec.identify`), else :class:`InstallError`
    naming every host and what it lacks."""
    root = Path(path).expanduser()
    host = identify(root)
    if host is None:
        raise InstallError(not_a_checkout(root))
    return host


def shipped_patches(host: HostSpec) -> list[tuple[Patch, str]]:
    """Our patches for ``host`` in application order, each with the sha256 of its file."""
    if host.name not in HOSTS:
        raise InstallError(f"unknown host {host.name!r}")
    folder = resources.files("pymarl_nonmono.patches") / host.patch_folder
    entries = sorted((e for e in folder.iterdir() if e.name.endswith(".patch")), key=lambda e: e.name)
    if not entries:
        raise InstallError(f"no patches found in {folder}; the pymarl-nonmono installation is broken")
    out = []
    for entry in entries:
        data = entry.read_bytes()
        try:
            out.append((parse_patch(data, entry.name), sha256(data)))
        except PatchError as exc:
            raise InstallError(f"shipped patch is broken: {exc}") from exc
    return out


def touched_paths(patches: list[Patch]) -> list[str]:
    paths: list[str] = []
    for patch in patches:
        paths.extend(p for p in patch.paths if p not in paths)
    return paths


def manifest_path(root: Path) -> Path:
    return root / STATE_DIR / MANIFEST


def read_manifest(root: Path) -> Optional[dict]:
    path = manifest_path(root)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InstallError(f"cannot read {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("files"), dict):
        raise InstallError(f"{path} is not a pymarl-nonmono manifest (format {MANIFEST_FORMAT})")
    return manifest


def _unwritable(root: Path, rel_paths: list[str]) -> list[str]:
    """Paths (relative to root) we could not create, replace or remove; [] when all is fine."""
    bad = []

    def nearest_existing(p: Path) -> Path:
        while not p.exists() and p != p.parent:
            p = p.parent
        return p

    for rel in rel_paths:
        target = root / rel
        if target.exists():
            # We replace files through a temporary file in the same folder, so the folder
            # must be writable too; a read-only file is taken as "do not touch".
            ok = os.access(target, os.W_OK) and os.access(target.parent, os.W_OK | os.X_OK)
        else:
            ok = os.access(nearest_existing(target.parent), os.W_OK | os.X_OK)
        if not ok:
            bad.append(rel)
    return bad


def _write_bytes(target: Path, data: bytes, mode: Optional[int]) -> None:
    """Replace ``target`` atomically: a crash leaves either the old or the new file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _file_mode(path: Path) -> Optional[int]:
    return stat.S_IMODE(path.stat().st_mode) if path.exists() else None


def _set_contents(root: Path, contents: dict[str, Optional[bytes]], modes: dict[str, Optional[int]],
                  write: Writer = _write_bytes) -> None:
    """Write (or delete, for ``None``) each file with ``write``; on failure undo what was done, then re-raise."""
    before = {rel: ((root / rel).read_bytes() if (root / rel).is_file() else None, _file_mode(root / rel)) for rel in contents}
    done: list[str] = []
    try:
        for rel, data in contents.items():
            target = root / rel
            if data is None:
                if target.exists():
                    target.unlink()
            else:
                write(target, data, modes.get(rel))
            done.append(rel)
    except OSError:
        for rel in reversed(done):
            old, mode = before[rel]
            try:
                if old is None:
                    (root / rel).unlink(missing_ok=True)
                else:
                    write(root / rel, old, mode)
            except OSError:  # keep undoing the others; the original error is what matters
                log.exception("could not undo the change to %s", rel)
        raise


def _missing_dirs(root: Path, rel: str) -> list[str]:
    """Parent folders of ``rel`` that do not exist yet, outermost first."""
    out = []
    parent = Path(rel).parent
    while str(parent) not in ("", "."):
        if not (root / parent).exists():
            out.append(parent.as_posix())
        parent = parent.parent
    return list(reversed(out))


# --------------------------------------------------------------------------- install


@dataclass
class InstallResult:
    root: Path
    applied: list[str] = field(default_factory=list)  # patches applied by this run
    already: list[str] = field(default_factory=list)  # patches found already applied
    changed: list[str] = field(default_factory=list)  # files written by this run
    created: list[str] = field(default_factory=list)  # files created by this run

    @property
    def already_installed(self) -> bool:
        return not self.applied


def install(path: str | os.PathLike, host: HostSpec, patches: Optional[PatchSource] = None,
            write: Optional[Writer] = None) -> InstallResult:
    """Apply ``host``'s patches (``patches``: its shipped ones by default) to the checkout ``path``.

    ``write`` replaces one file (default: :func:`_write_bytes`, atomic)."""
    write = write or _write_bytes
    try:
        root = check_checkout(path, host)
    except InstallError as exc:
        # The command line clones into a new or empty folder first (fetch.py): whatever
        # reaches here holds something else, which we must not clone over.
        raise InstallError(f"{exc}; `pymarl-nonmono install` clones {host.title} only into a new or empty folder") from exc
    patches = patches() if patches is not None else shipped_patches(host)
    series = [p for p, _ in patches]
    current = read_targets(touched_paths(series), root)
    try:
        state = series_state(series, current)
    except PatchError as exc:
        if read_manifest(root) is not None:
            hint = f"an earlier pymarl-nonmono install is here: run `pymarl-nonmono uninstall {root}` first"
        else:
            hint = f"the patches are made against {host.pinned}: {restore_hint(root, host)}"
        raise InstallError(f"cannot install into {root}: {exc}; nothing was changed; {hint}") from exc
    result = InstallResult(root, already=[p.name for p in series[: state.applied]])
    if state.applied == len(series):
        log.info("all %d patches already applied in %s", len(series), root)
        return result

    old_manifest = read_manifest(root)
    changes = {rel: data for rel, data in state.result.items() if data != current[rel]}
    state_dir = root / STATE_DIR
    bad = _unwritable(root, sorted(changes) + [STATE_DIR + "/" + MANIFEST])
    if bad:
        raise InstallError(f"cannot install into {root}: not writable: {', '.join(bad)}; nothing was changed")

    manifest = old_manifest or {
        "format": MANIFEST_FORMAT,
        "tool": f"pymarl-nonmono {__version__}",
        "host": host.pinned,
        "patches": [],
        "files": {},
        "created": [],
        "created_dirs": [],
    }
    manifest["tool"] = f"pymarl-nonmono {__version__}"
    backups: dict[str, Optional[bytes]] = {}
    for rel, data in changes.items():
        entry = manifest["files"].get(rel)
        if entry is None:  # first time we touch this file: its current bytes are the original
            original = current[rel]
            entry = {
                "original_sha256": None if original is None else sha256(original),
                "original_mode": _file_mode(root / rel),
                "backup": None if original is None else f"{ORIGINALS}/{rel}",
            }
            if original is None:
                manifest["created"].append(rel)
                manifest["created_dirs"].extend(d for d in _missing_dirs(root, rel) if d not in manifest["created_dirs"])
                result.created.append(rel)
            else:
                backups[f"{STATE_DIR}/{ORIGINALS}/{rel}"] = original
            manifest["files"][rel] = entry
        entry["installed_sha256"] = None if data is None else sha256(data)
        result.changed.append(rel)
    manifest["patches"] = [{"name": p.name, "sha256": digest} for p, digest in patches]

    gitignore = f"{STATE_DIR}/.gitignore"
    state_files: dict[str, Optional[bytes]] = dict(backups)
    state_files[gitignore] = b"# written by pymarl-nonmono: keep its backups out of git\n*\n"
    state_files[f"{STATE_DIR}/{MANIFEST}"] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    new_state_dir = not state_dir.exists()
    modes = {rel: _file_mode(root / rel) for rel in changes}
    try:
        _set_contents(root, state_files, {}, write)
        _set_contents(root, changes, modes, write)
    except OSError as exc:
        # The tree is back as it was; now drop the backups we wrote for it.
        if new_state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)
        elif old_manifest is not None:
            _set_contents(root, {f"{STATE_DIR}/{MANIFEST}": (json.dumps(old_manifest, indent=2, sort_keys=True) + "\n").encode()}, {},
                          write)
        raise InstallError(f"cannot install into {root}: {exc}; nothing was changed") from exc
    result.applied = [p.name for p in series[state.applied:]]
    log.info("applied %s to %s", ", ".join(result.applied), root)
    return result


# --------------------------------------------------------------------------- uninstall


@dataclass
class UninstallResult:
    root: Path
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)  # edited after install, overwritten by --force


def uninstall(path: str | os.PathLike, host: HostSpec, force: bool = False,
              write: Optional[Writer] = None) -> UninstallResult:
    """Restore the files an install into the ``host`` checkout ``path`` changed, byte for byte."""
    write = write or _write_bytes
    root = check_checkout(path, host)
    manifest = read_manifest(root)
    if manifest is None:
        raise InstallError(
            f"nothing to uninstall in {root}: no {STATE_DIR}/{MANIFEST} (pymarl-nonmono install was not run here)"
        )
    files: dict = manifest["files"]
    restore: dict[str, Optional[bytes]] = {}
    modes: dict[str, Optional[int]] = {}
    edited = []
    for rel, entry in sorted(files.items()):
        target = root / rel
        now = target.read_bytes() if target.is_file() else None
        if (None if now is None else sha256(now)) != entry.get("installed_sha256"):
            edited.append(rel)
        if entry.get("backup") is None:
            restore[rel] = None
            continue
        backup = root / STATE_DIR / entry["backup"]
        try:
            original = backup.read_bytes()
        except OSError as exc:
            raise InstallError(f"cannot uninstall: backup of {rel} is unreadable ({exc}); nothing was changed") from exc
        if sha256(original) != entry.get("original_sha256"):
            raise InstallError(f"cannot uninstall: backup {backup} does not match its recorded sha256; nothing was changed")
        restore[rel] = original
        modes[rel] = entry.get("original_mode")
    if edited and not force:
        raise InstallError(
            f"{', '.join(edited)} changed since pymarl-nonmono installed "
            f"{'it' if len(edited) == 1 else 'them'}; uninstall would discard those edits. "
            f"Nothing was changed; re-run with --force to restore the originals anyway"
        )
    bad = _unwritable(root, sorted(restore) + [STATE_DIR])
    if bad:
        raise InstallError(f"cannot uninstall from {root}: not writable: {', '.join(bad)}; nothing was changed")
    try:
        _set_contents(root, restore, modes, write)
    except OSError as exc:
        raise InstallError(f"cannot uninstall from {root}: {exc}; nothing was changed") from exc
    for rel in sorted(manifest.get("created_dirs", []), key=lambda d: d.count("/"), reverse=True):
        try:
            (root / rel).rmdir()
        except OSError:  # not empty: something else lives there now, keep it
            log.info("kept folder %s: not empty", rel)
    shutil.rmtree(root / STATE_DIR)
    result = UninstallResult(root, forced=edited if force else [])
    result.restored = [rel for rel, data in restore.items() if data is not None]
    result.removed = [rel for rel, data in restore.items() if data is None]
    return result
