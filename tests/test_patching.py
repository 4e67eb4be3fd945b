"""The unified-diff applier on small synthetic files."""

from __future__ import annotations

import pytest

from pymarl_nonmono.patching import (
    APPLIED,
    UNAPPLIED,
    PatchApplyError,
    PatchParseError,
    apply_patch,
    load_patch,
    parse_patch,
    patch_state,
    read_targets,
    series_state,
)

ORIGINAL = b"".join(b"line %d\n" % i for i in range(1, 31))

TWO_HUNKS = b"""Example patch: changes lines 3 and 25.
Second header line.

--- a/pkg/mod.py
+++ b/pkg/mod.py
@@ -2,3 +2,4 @@
 line 2
-line 3
+line three
+line 3.5
 line 4
@@ -24,3 +25,3 @@
 line 24
-line 25
+line twenty-five
 line 26
"""

EXPECTED = ORIGINAL.replace(b"line 3\n", b"line three\nline 3.5\n").replace(b"line 25\n", b"line twenty-five\n")


def write(tmp_path, rel, data):
    path = tmp_path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_parse_keeps_header_and_hunks(tmp_path):
    patch = load_patch(write(tmp_path, "0001-two.patch", TWO_HUNKS))
    assert patch.name == "0001-two.patch"
    assert patch.description.startswith("Example patch: changes lines 3 and 25.\nSecond header line.")
    assert patch.paths == ["pkg/mod.py"]
    hunks = patch.files[0].hunks
    assert [(h.old_start, h.old_len, h.new_start, h.new_len) for h in hunks] == [(2, 3, 2, 4), (24, 3, 25, 3)]


def test_apply_two_hunks_from_disk(tmp_path):
    write(tmp_path, "pkg/mod.py", ORIGINAL)
    patch = parse_patch(TWO_HUNKS, "two.patch")
    files = read_targets(patch.paths, tmp_path)
    out = apply_patch(patch, files)
    assert out == {"pkg/mod.py": EXPECTED}
    assert files["pkg/mod.py"] == ORIGINAL  # in memory only: input untouched
    assert (tmp_path / "pkg/mod.py").read_bytes() == ORIGINAL


@pytest.mark.parametrize("shift", [-1, 3, 7])
def test_hunks_found_at_small_offset(shift):
    if shift < 0:
        text = ORIGINAL.split(b"\n", -shift)[-1]  # drop leading lines
    else:
        text = b"".join(b"extra %d\n" % i for i in range(shift)) + ORIGINAL
    expected = text.replace(b"line 3\n", b"line three\nline 3.5\n").replace(b"line 25\n", b"line twenty-five\n")
    out = apply_patch(parse_patch(TWO_HUNKS, "two.patch"), {"pkg/mod.py": text})
    assert out["pkg/mod.py"] == expected


def test_offset_beyond_limit_fails():
    text = b"".join(b"extra %d\n" % i for i in range(60)) + ORIGINAL
    with pytest.raises(PatchApplyError):
        apply_patch(parse_patch(TWO_HUNKS, "two.patch"), {"pkg/mod.py": text})


def test_mismatch_names_patch_file_and_hunk():
    broken = ORIGINAL.replace(b"line 25\n", b"line 25 edited by the user\n")
    with pytest.raises(PatchApplyError) as info:
        apply_patch(parse_patch(TWO_HUNKS, "0007-demo.patch"), {"pkg/mod.py": broken})
    message = str(info.value)
    assert "0007-demo.patch" in message and "pkg/mod.py" in message and "hunk #2" in message
    assert (info.value.patch, info.value.path, info.value.hunk) == ("0007-demo.patch", "pkg/mod.py", 2)


def test_missing_target_is_an_error():
    with pytest.raises(PatchApplyError, match="does not exist"):
        apply_patch(parse_patch(TWO_HUNKS, "two.patch"), {"pkg/mod.py": None})


NEW_FILE = b"""Adds a file.
--- /dev/null
+++ b/pkg/new.py
@@ -0,0 +1,2 @@
+print("hello")
+x = 1
"""


def test_new_file_created_and_refused_when_present():
    patch = parse_patch(NEW_FILE, "new.patch")
    assert patch.files[0].old_path is None
    assert apply_patch(patch, {"pkg/new.py": None}) == {"pkg/new.py": b'print("hello")\nx = 1\n'}
    with pytest.raises(PatchApplyError, match="already exists"):
        apply_patch(patch, {"pkg/new.py": b"something else\n"})
    assert patch_state(patch, {"pkg/new.py": None}) == UNAPPLIED
    assert patch_state(patch, {"pkg/new.py": b'print("hello")\nx = 1\n'}) == APPLIED
    # the reverse of a creation deletes the file
    assert apply_patch(patch.reversed(), {"pkg/new.py": b'print("hello")\nx = 1\n'}) == {"pkg/new.py": None}


NO_EOL = b"""--- a/f.txt
+++ b/f.txt
@@ -1,2 +1,2 @@
 first
-last
\\ No newline at end of file
+last, changed
"""


def test_no_newline_at_end_of_file_removed_and_added():
    patch = parse_patch(NO_EOL, "eol.patch")
    assert apply_patch(patch, {"f.txt": b"first\nlast"}) == {"f.txt": b"first\nlast, changed\n"}
    # with the newline present the old side does not match: bytes are compared exactly
    with pytest.raises(PatchApplyError):
        apply_patch(patch, {"f.txt": b"first\nlast\n"})
    assert apply_patch(patch.reversed(), {"f.txt": b"first\nlast, changed\n"}) == {"f.txt": b"first\nlast"}


def test_no_newline_kept_on_both_sides():
    patch = parse_patch(
        b"--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-a\n+A\n tail\n\\ No newline at end of file\n", "ctx.patch"
    )
    assert apply_patch(patch, {"f": b"a\ntail"}) == {"f": b"A\ntail"}


def test_crlf_preserved():
    original = b"alpha\r\nbeta\r\ngamma\r\n"
    patch = parse_patch(b"--- a/w.txt\n+++ b/w.txt\n@@ -1,3 +1,3 @@\n alpha\r\n-beta\r\n+BETA\r\n gamma\r\n", "crlf.patch")
    assert apply_patch(patch, {"w.txt": original}) == {"w.txt": b"alpha\r\nBETA\r\ngamma\r\n"}
    # an LF-only patch does not silently apply to a CRLF file
    lf = parse_patch(b"--- a/w.txt\n+++ b/w.txt\n@@ -1,3 +1,3 @@\n alpha\n-beta\n+BETA\n gamma\n", "lf.patch")
    with pytest.raises(PatchApplyError):
        apply_patch(lf, {"w.txt": original})


def test_lone_carriage_return_is_content_not_a_line_break():
    patch = parse_patch(b"--- a/r\n+++ b/r\n@@ -1 +1 @@\n-a\rb\n+c\rd\n", "cr.patch")
    assert apply_patch(patch, {"r": b"a\rb\n"}) == {"r": b"c\rd\n"}


def test_already_applied_detected_by_reverse():
    patch = parse_patch(TWO_HUNKS, "two.patch")
    assert patch_state(patch, {"pkg/mod.py": ORIGINAL}) == UNAPPLIED
    assert patch_state(patch, {"pkg/mod.py": EXPECTED}) == APPLIED
    assert apply_patch(patch.reversed(), {"pkg/mod.py": EXPECTED}) == {"pkg/mod.py": ORIGINAL}
    with pytest.raises(PatchApplyError, match="hunk #1"):
        patch_state(patch, {"pkg/mod.py": ORIGINAL.replace(b"line 3\n", b"line 3 (edited)\n")})


def test_series_with_overlapping_context():
    # The second patch edits a context line of the first: only the series order can tell
    # whether the first one is applied.
    first = parse_patch(b"--- a/s\n+++ b/s\n@@ -1,3 +1,3 @@\n head\n-x = 1\n+x = 2\n tail\n", "0001.patch")
    second = parse_patch(b"--- a/s\n+++ b/s\n@@ -1,2 +1,2 @@\n-head\n+HEAD\n x = 2\n", "0002.patch")
    base = {"s": b"head\nx = 1\ntail\n"}
    full = {"s": b"HEAD\nx = 2\ntail\n"}
    state = series_state([first, second], base)
    assert state.applied == 0 and state.result == full
    state = series_state([first, second], full)
    assert state.applied == 2 and state.base == base
    state = series_state([first, second], {"s": b"head\nx = 2\ntail\n"})
    assert state.applied == 1 and state.result == full
    with pytest.raises(PatchApplyError) as info:
        series_state([first, second], {"s": b"head\nx = 7\ntail\n"})
    assert info.value.patch == "0001.patch"


@pytest.mark.parametrize(
    "text, message",
    [
        (b"just words, no diff\n", "no file sections"),
        (b"--- a/f\nnot a plus line\n", "expected '\\+\\+\\+ '"),
        (b"--- a/f\n+++ b/f\n@@ bogus @@\n", "malformed hunk header"),
        (b"--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n", "ends inside the hunk"),
        (b"--- a/../etc/passwd\n+++ b/../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n", "unsafe file name"),
        (b"--- a/f\n+++ b/g\n@@ -1 +1 @@\n-a\n+b\n", "renames are not supported"),
    ],
)
def test_malformed_patches_rejected(text, message):
    with pytest.raises(PatchParseError, match=message):
        parse_patch(text, "bad.patch")


def test_git_style_lines_and_timestamps_tolerated():
    text = (
        b"header\n"
        b"diff --git a/f b/f\nindex 123..456 100644\n"
        b"--- a/f\t2024-01-01 00:00:00\n+++ b/f\t2024-01-02 00:00:00\n@@ -1 +1 @@\n-a\n+b\n"
    )
    assert apply_patch(parse_patch(text, "git.patch"), {"f": b"a\n"}) == {"f": b"b\n"}
