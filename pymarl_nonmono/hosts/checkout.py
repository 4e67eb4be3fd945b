"""Clone a git repository at one exact commit, through the ``git`` command.

Host-agnostic: PyMARL2's adapter uses it today, and any other host that users clone (e.g.
EPyMARL) can use it with its own URL and commit. No Python git library: the ``git``
executable does the work, so nothing is added to our dependencies.

The clone ends with HEAD *detached* at the commit (the branches of the source are kept as
they came), so that a source with later commits still gives exactly the tree our patches
were made against. Errors are :class:`CheckoutError` with a one-line message; a failed
clone leaves the destination as it was (absent, or an empty folder).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# git would otherwise ask for a user name on the terminal (GitHub does that for a
# repository that does not exist) and wait forever.
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0"}
FULL_SHA = re.compile(r"[0-9a-f]{40}")
# git's own rule for "host:path" (scp-like) addresses: a colon before the first slash.
SCP_LIKE = re.compile(r"^[^/]+:")


class CheckoutError(Exception):
    """Cloning or checking a clone failed; the message is one line meant for the user."""


class GitNotFound(CheckoutError):
    """The ``git`` executable is not on PATH."""


@dataclass(frozen=True)
class Clone:
    root: Path  # the checkout, HEAD detached at ``commit``
    source: str  # what was cloned, as given to git (local paths made absolute)
    commit: str


def git_executable() -> str:
    git = shutil.which("git")
    if git is None:
        raise GitNotFound("git is not installed (no `git` on PATH): install git (e.g. `apt-get install git`)")
    return git


def _run_git(args: list[str], timeout: Optional[float] = None, what: str = "git") -> subprocess.CompletedProcess:
    try:
        return subprocess.run([git_executable(), *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, env={**os.environ, **GIT_ENV})
    except subprocess.TimeoutExpired:
        raise CheckoutError(f"{what}: no answer within {timeout:g} s") from None


def _git_message(proc: subprocess.CompletedProcess) -> str:
    """git's own reason, one line: its last ``fatal:``/``error:`` line, else its last line."""
    lines = [line.strip() for line in (proc.stderr or "").splitlines() if line.strip()]
    for line in reversed(lines):
        for prefix in ("fatal: ", "error: "):
            if line.startswith(prefix):
                return line[len(prefix):]
    return lines[-1] if lines else f"git exited with code {proc.returncode}"


def is_vacant(path: str | os.PathLike) -> bool:
    """True when ``path`` does not exist or is an empty folder: somewhere we may clone into."""
    p = Path(path).expanduser()
    if not p.exists() and not p.is_symlink():
        return True
    return p.is_dir() and next(p.iterdir(), None) is None


def resolve_source(source: str) -> str:
    """A local path made absolute (git sees it from our working folder anyway; the absolute
    form reads better in messages and in the clone's ``origin``); URLs unchanged."""
    if "://" in source:
        return source
    local = Path(source).expanduser()
    if local.exists():
        return str(local.resolve())
    if SCP_LIKE.match(source):
        return source
    raise CheckoutError(f"cannot clone {source}: no such file or folder (and not a URL)")


def head_commit(root: str | os.PathLike, timeout: Optional[float] = None) -> Optional[str]:
    """The commit HEAD of the git checkout ``root`` points at, or None if it is not one."""
    proc = _run_git(["-C", str(root), "rev-parse", "--verify", "--quiet", "HEAD^{commit}"], timeout)
    return proc.stdout.strip() if proc.returncode == 0 else None


def is_pristine(root: str | os.PathLike, commit: str, timeout: Optional[float] = None) -> bool:
    """``root`` is a git checkout at ``commit`` with no change to tracked files and nothing
    untracked (files its .gitignore ignores, e.g. bytecode, do not count)."""
    if head_commit(root, timeout) != commit:
        return False
    proc = _run_git(["-C", str(root), "status", "--porcelain", "--untracked-files=all"], timeout)
    return proc.returncode == 0 and proc.stdout.strip() == ""


def probe(source: str, timeout: Optional[float] = None) -> Optional[str]:
    """None when ``source`` answers as a git repository, else why not (one line).

    Cheaper than a clone and bounded by ``timeout``: a network that silently drops packets
    would otherwise keep git waiting for minutes."""
    try:
        resolved = resolve_source(source)
        proc = _run_git(["ls-remote", "--quiet", resolved, "HEAD"], timeout, what=f"cannot reach {source}")
    except CheckoutError as exc:
        return str(exc)
    return None if proc.returncode == 0 else f"cannot reach {source}: {_git_message(proc)}"


def _discard(dest: Path, created: bool) -> None:
    """Undo a failed clone: remove what we made, keep a folder the caller gave us."""
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir() if dest.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def clone_at_commit(source: str, dest: str | os.PathLike, commit: str, timeout: Optional[float] = None) -> Clone:
    """Clone ``source`` (a URL, a local repository or a git bundle) into ``dest`` and check out
    ``commit`` (40 hex digits) with a detached HEAD.

    ``dest`` must not exist or be an empty folder. ``timeout`` bounds each git command."""
    if not FULL_SHA.fullmatch(commit):
        raise ValueError(f"commit must be 40 lowercase hex digits, got {commit!r}")
    dest = Path(dest).expanduser().absolute()
    if not is_vacant(dest):
        what = "a file" if not dest.is_dir() else "a folder that is not empty"
        raise CheckoutError(f"cannot clone into {dest}: it is {what}")
    git_executable()
    resolved = resolve_source(source)
    created = not dest.exists()
    if created:
        dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        proc = _run_git(["clone", "--quiet", "--no-checkout", resolved, str(dest)], timeout,
                        what=f"cannot clone {resolved}")
        if proc.returncode != 0:
            raise CheckoutError(f"cannot clone {resolved}: {_git_message(proc)}")
        # cat-file -e checks the object is there; rev-parse alone accepts any 40 hex digits.
        proc = _run_git(["-C", str(dest), "cat-file", "-e", f"{commit}^{{commit}}"], timeout)
        if proc.returncode != 0:
            raise CheckoutError(f"{resolved} does not contain commit {commit}")
        proc = _run_git(["-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", commit],
                        timeout, what=f"cannot check out {commit[:7]} in {dest}")
        if proc.returncode != 0:
            raise CheckoutError(f"cannot check out {commit[:7]} in {dest}: {_git_message(proc)}")
    except BaseException:
        _discard(dest, created)
        raise
    return Clone(root=dest, source=resolved, commit=commit)
