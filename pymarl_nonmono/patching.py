"""A small, strict applier for unified diffs, working on bytes in memory.

Why not call ``patch(1)`` or ``git apply``: neither is guaranteed on users' machines, both
write as they go (a failed hunk leaves a half-patched tree), and we need to know, before
touching anything, whether every patch of a series applies, applies in reverse (it is
already there) or conflicts.

Supported format: free text before the first ``--- `` line (the patch's description), then
per file a ``--- a/PATH`` / ``+++ b/PATH`` pair (``/dev/null`` for a created or deleted
file; a tab and a timestamp may follow the path) and its ``@@ -l,s +l,s @@`` hunks.
``diff --git``/``index``/mode lines between files are skipped. A line
``\\ No newline at end of file`` after a hunk line means that line has no final newline.

Bytes are preserved exactly: lines are split on ``\\n`` only, so a CRLF file's ``\\r`` is
part of each line's content and must appear in the patch too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Mapping, Optional

__all__ = [
    "APPLIED",
    "UNAPPLIED",
    "FilePatch",
    "Hunk",
    "Patch",
    "PatchApplyError",
    "PatchError",
    "PatchParseError",
    "apply_patch",
    "load_patch",
    "parse_patch",
    "patch_state",
    "SeriesState",
    "read_targets",
    "series_state",
]

APPLIED = "applied"
UNAPPLIED = "unapplied"

# Hunks may have drifted by a few lines (e.g. an earlier hunk of another patch in the
# series); farther than this we prefer to fail rather than guess.
MAX_OFFSET = 20

_HUNK_RE = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_NO_NEWLINE = b"\\ No newline at end of file"
_SKIPPED_PREFIXES = (b"diff ", b"index ", b"new file mode", b"deleted file mode", b"old mode", b"new mode", b"similarity", b"Only in ")


class PatchError(Exception):
    """Base class: a patch could not be read or applied."""


class PatchParseError(PatchError):
    """The patch file is not a well-formed unified diff."""


class PatchApplyError(PatchError):
    """A patch does not fit the files it targets.

    ``patch``, ``path`` and ``hunk`` (1-based, ``None`` for whole-file problems) say where.
    """

    def __init__(self, patch: str, path: str, hunk: Optional[int], reason: str):
        where = f"hunk #{hunk}" if hunk is not None else "file"
        super().__init__(f"{patch}: {path}: {where}: {reason}")
        self.patch = patch
        self.path = path
        self.hunk = hunk
        self.reason = reason


@dataclass(frozen=True)
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    # (marker, content) with marker one of b" ", b"-", b"+"; content keeps its line ending
    lines: tuple[tuple[bytes, bytes], ...]
    number: int  # 1-based position within its file section, for messages

    @property
    def old_lines(self) -> list[bytes]:
        return [text for mark, text in self.lines if mark != b"+"]

    @property
    def new_lines(self) -> list[bytes]:
        return [text for mark, text in self.lines if mark != b"-"]

    def reversed(self) -> "Hunk":
        swap = {b" ": b" ", b"-": b"+", b"+": b"-"}
        return Hunk(self.new_start, self.new_len, self.old_start, self.old_len,
                    tuple((swap[m], t) for m, t in self.lines), self.number)


@dataclass(frozen=True)
class FilePatch:
    old_path: Optional[str]  # None: the file is created
    new_path: Optional[str]  # None: the file is deleted
    hunks: tuple[Hunk, ...]

    @property
    def path(self) -> str:
        return self.new_path if self.new_path is not None else self.old_path  # type: ignore[return-value]

    def reversed(self) -> "FilePatch":
        return FilePatch(self.new_path, self.old_path, tuple(h.reversed() for h in self.hunks))


@dataclass(frozen=True)
class Patch:
    name: str
    description: str
    files: tuple[FilePatch, ...]

    @property
    def paths(self) -> list[str]:
        return [f.path for f in self.files]

    def reversed(self) -> "Patch":
        return Patch(self.name, self.description, tuple(f.reversed() for f in self.files))


def _split_lines(data: bytes) -> list[bytes]:
    # Unlike bytes.splitlines, only "\n" ends a line, as in diff(1): "\r" stays content.
    lines = data.split(b"\n")
    out = [line + b"\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def _target_path(raw: bytes, prefix: bytes, patch: str, lineno: int) -> Optional[str]:
    text = raw.split(b"\t", 1)[0].rstrip(b"\r\n")
    if text == b"/dev/null":
        return None
    if text.startswith(prefix):
        text = text[len(prefix):]
    try:
        path = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PatchParseError(f"{patch}: line {lineno}: file name is not UTF-8") from exc
    pure = PurePosixPath(path)
    # Patches must stay inside the tree they are applied to.
    if not path or pure.is_absolute() or ".." in pure.parts:
        raise PatchParseError(f"{patch}: line {lineno}: unsafe file name {path!r}")
    return str(pure)


def parse_patch(data: bytes, name: str = "<patch>") -> Patch:
    """Parse a unified diff; ``name`` is used in every message about it."""
    lines = _split_lines(data)
    i = 0
    while i < len(lines) and not lines[i].startswith(b"--- "):
        i += 1
    description = b"".join(lines[:i]).decode("utf-8", errors="replace")
    files: list[FilePatch] = []
    while i < len(lines):
        line = lines[i]
        if line.startswith(_SKIPPED_PREFIXES) or not line.strip():
            i += 1
            continue
        if not line.startswith(b"--- "):
            raise PatchParseError(f"{name}: line {i + 1}: expected '--- ' file header, got {line[:60]!r}")
        if i + 1 >= len(lines) or not lines[i + 1].startswith(b"+++ "):
            raise PatchParseError(f"{name}: line {i + 2}: expected '+++ ' after '--- '")
        old_path = _target_path(lines[i][4:], b"a/", name, i + 1)
        new_path = _target_path(lines[i + 1][4:], b"b/", name, i + 2)
        if old_path is None and new_path is None:
            raise PatchParseError(f"{name}: line {i + 1}: both sides are /dev/null")
        if old_path is not None and new_path is not None and old_path != new_path:
            raise PatchParseError(f"{name}: line {i + 1}: renames are not supported ({old_path} -> {new_path})")
        i += 2
        hunks: list[Hunk] = []
        while i < len(lines) and lines[i].startswith(b"@@"):
            hunk, i = _parse_hunk(lines, i, len(hunks) + 1, name)
            hunks.append(hunk)
        if not hunks:
            raise PatchParseError(f"{name}: line {i + 1}: no hunks for {new_path or old_path}")
        files.append(FilePatch(old_path, new_path, tuple(hunks)))
    if not files:
        raise PatchParseError(f"{name}: no file sections ('--- ' / '+++ ' lines) found")
    seen = set()
    for f in files:
        if f.path in seen:
            raise PatchParseError(f"{name}: {f.path} appears twice")
        seen.add(f.path)
    return Patch(name, description, tuple(files))


def _parse_hunk(lines: list[bytes], i: int, number: int, name: str) -> tuple[Hunk, int]:
    match = _HUNK_RE.match(lines[i])
    if not match:
        raise PatchParseError(f"{name}: line {i + 1}: malformed hunk header {lines[i][:60]!r}")
    old_start, new_start = int(match.group(1)), int(match.group(3))
    old_len = int(match.group(2)) if match.group(2) is not None else 1
    new_len = int(match.group(4)) if match.group(4) is not None else 1
    header_line = i + 1
    i += 1
    body: list[list[bytes]] = []
    old_seen = new_seen = 0
    while old_seen < old_len or new_seen < new_len:
        if i >= len(lines):
            raise PatchParseError(f"{name}: hunk at line {header_line}: patch ends inside the hunk")
        line = lines[i]
        mark, text = line[:1], line[1:]
        if line.startswith(_NO_NEWLINE):
            _strip_newline(body, name, i)
            i += 1
            continue
        if line in (b"\n", b"\r\n"):
            # Some editors strip the single space of an empty context line.
            mark, text = b" ", line
        if mark not in (b" ", b"-", b"+"):
            raise PatchParseError(f"{name}: line {i + 1}: unexpected line in hunk at line {header_line}: {line[:60]!r}")
        if mark != b"+":
            old_seen += 1
        if mark != b"-":
            new_seen += 1
        if old_seen > old_len or new_seen > new_len:
            raise PatchParseError(f"{name}: hunk at line {header_line}: more lines than its header says")
        body.append([mark, text])
        i += 1
    if i < len(lines) and lines[i].startswith(_NO_NEWLINE):
        _strip_newline(body, name, i)
        i += 1
    return Hunk(old_start, old_len, new_start, new_len, tuple((m, t) for m, t in body), number), i


def _strip_newline(body: list[list[bytes]], name: str, i: int) -> None:
    if not body or not body[-1][1].endswith(b"\n"):
        raise PatchParseError(f"{name}: line {i + 1}: misplaced '\\ No newline at end of file'")
    body[-1][1] = body[-1][1][:-1]


def load_patch(path: str | Path) -> Patch:
    path = Path(path)
    return parse_patch(path.read_bytes(), path.name)


def _find(lines: list[bytes], wanted: list[bytes], expected: int, lowest: int) -> Optional[int]:
    n = len(wanted)
    for delta in range(MAX_OFFSET + 1):
        for pos in ((expected,) if delta == 0 else (expected - delta, expected + delta)):
            if pos >= lowest and pos + n <= len(lines) and lines[pos:pos + n] == wanted:
                return pos
    return None


def _apply_file(fp: FilePatch, content: Optional[bytes], patch_name: str) -> Optional[bytes]:
    if fp.old_path is None and content is not None:
        raise PatchApplyError(patch_name, fp.path, None, "the patch creates this file, but it already exists")
    if fp.old_path is not None and content is None:
        raise PatchApplyError(patch_name, fp.path, None, "file does not exist")
    lines = _split_lines(content or b"")
    out: list[bytes] = []
    cursor = 0  # lines[:cursor] are already copied to out
    drift = 0  # how far earlier hunks were found from their stated place
    for hunk in fp.hunks:
        old = hunk.old_lines
        # An empty old side sits *after* line old_start; otherwise old_start is 1-based.
        expected = hunk.old_start if hunk.old_len == 0 else hunk.old_start - 1
        pos = _find(lines, old, expected + drift, cursor)
        if pos is None:
            raise PatchApplyError(patch_name, fp.path, hunk.number,
                                  f"does not match the file near line {hunk.old_start} "
                                  f"(the file differs from what the patch expects)")
        drift = pos - expected
        out.extend(lines[cursor:pos])
        out.extend(hunk.new_lines)
        cursor = pos + len(old)
    out.extend(lines[cursor:])
    result = b"".join(out)
    if fp.new_path is None:
        if result:
            raise PatchApplyError(patch_name, fp.path, None, "the patch deletes this file, but it has other content")
        return None
    return result


def apply_patch(patch: Patch, files: Mapping[str, Optional[bytes]]) -> dict[str, Optional[bytes]]:
    """Apply ``patch`` to in-memory ``files`` (path -> bytes, ``None`` = absent).

    Returns the new content of every path the patch touches (``None`` = deleted); ``files``
    is not modified. Raises :class:`PatchApplyError` on the first mismatch.
    """
    result: dict[str, Optional[bytes]] = {}
    for fp in patch.files:
        if fp.path not in files:
            raise KeyError(f"{patch.name}: no content given for {fp.path}")
        result[fp.path] = _apply_file(fp, files[fp.path], patch.name)
    return result


def patch_state(patch: Patch, files: Mapping[str, Optional[bytes]]) -> str:
    """:data:`APPLIED` or :data:`UNAPPLIED`; :class:`PatchApplyError` if it is neither.

    "Applied" means the reverse patch fits and the forward one does not; when both fit,
    the files do not tell us, which we report as an error rather than guess.
    """
    try:
        apply_patch(patch, files)
        forward_error = None
    except PatchApplyError as exc:
        forward_error = exc
    try:
        apply_patch(patch.reversed(), files)
        reverse_fits = True
    except PatchApplyError:
        reverse_fits = False
    if forward_error is None and not reverse_fits:
        return UNAPPLIED
    if forward_error is not None and reverse_fits:
        return APPLIED
    if forward_error is None:
        raise PatchApplyError(patch.name, patch.paths[0], None,
                              "applies both forwards and in reverse; cannot tell whether it is applied")
    raise forward_error


@dataclass(frozen=True)
class SeriesState:
    applied: int  # how many leading patches of the series are in the files
    base: dict[str, Optional[bytes]]  # the files with none of the series applied
    result: dict[str, Optional[bytes]]  # the files with the whole series applied


def series_state(patches: list[Patch], files: Mapping[str, Optional[bytes]]) -> SeriesState:
    """Find how much of an ordered series is applied to ``files``.

    Patches of a series may share context lines (a later patch edits lines near an earlier
    one), so a patch's state is judged in the series' order: the first ``k`` are applied
    when undoing them last-to-first fits and applying the rest fits. The largest such ``k``
    wins. If none fits, the error names the first patch that does not fit after the
    longest applied prefix.
    """
    first_error: Optional[PatchApplyError] = None
    for k in range(len(patches), -1, -1):
        base = dict(files)
        try:
            for patch in reversed(patches[:k]):
                base.update(apply_patch(patch.reversed(), base))
        except PatchApplyError:
            continue
        result = dict(files)
        try:
            for patch in patches[k:]:
                result.update(apply_patch(patch, result))
        except PatchApplyError as exc:
            first_error = first_error or exc
            continue
        return SeriesState(k, base, result)
    assert first_error is not None  # k == 0 always undoes cleanly, so we only get here via an error
    raise first_error


def read_targets(paths: Iterable[str], root: str | Path) -> dict[str, Optional[bytes]]:
    """Read ``paths`` below ``root`` as bytes, ``None`` for files that do not exist."""
    root = Path(root)
    out: dict[str, Optional[bytes]] = {}
    for rel in paths:
        target = root / rel
        out[rel] = target.read_bytes() if target.is_file() else None
    return out
