"""What the install tests of every host share: comparing trees, calling the CLI."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from pymarl_nonmono import cli


def tree_digest(root: Path) -> dict[str, tuple[int, str]]:
    """Every file and folder below root: permission bits and content hash."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            mode = stat.S_IMODE(path.lstat().st_mode)
            if path.is_symlink():
                out[rel] = (mode, "link:" + os.readlink(path))
            elif path.is_file():
                out[rel] = (mode, hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                out[rel] = (mode, "dir")
    return out


def run_cli(capsys, *argv):
    """``pymarl-nonmono ARGV``: exit code, stdout, stderr."""
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err
