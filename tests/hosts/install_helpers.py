"""What the install and host tests of every host share: comparing trees, calling the CLI,
stopping a run, comparing a resumed run's statistics with an unstopped one's."""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

import pytest

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


def sigterm_once_training(root: Path, args: list[str], log: Path, timeout: float = 300) -> int:
    """Start ``python src/main.py *args`` in ``root``, send SIGTERM to its process group (as
    bench and SLURM do) once it logs ``t_env:``, and return its exit code."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen([sys.executable, "src/main.py", *args], cwd=root, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while "t_env:" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "the run did not start training in time"
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGTERM)
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def info_series(info: Mapping) -> dict:
    """``{key: (steps, values)}`` of a run's Sacred info.json (``key`` and ``key_T`` lists)."""
    return {key[:-2]: (info[key], info[key[:-2]]) for key in info if key.endswith("_T") and key[:-2] in info}


def metrics_series(metrics: Mapping) -> dict:
    """``{key: (steps, values)}`` of a run's Sacred metrics.json."""
    return {key: (m["steps"], m["values"]) for key, m in metrics.items()}


def assert_logged_alike(resumed: Mapping, unstopped: Mapping, keys: Sequence[str], first_step: int) -> None:
    """The resumed run logged each of ``keys`` from ``first_step`` on, at steps the unstopped run
    logged too, with the unstopped run's values. Runs as ``{key: (steps, values)}``."""
    for key in keys:
        after = dict(zip(*resumed[key]))
        before = dict(zip(*unstopped[key]))
        assert min(after) == first_step and set(after) <= set(before), key
        for t, value in sorted(after.items()):
            assert value == pytest.approx(before[t], rel=1e-6, abs=1e-7), (key, t, value, before[t])
