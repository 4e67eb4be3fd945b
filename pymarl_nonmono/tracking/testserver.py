"""A throw-away MongoDB-protocol server (``nx-27017``, SQLite-backed) on a free loopback port.

For tests and for trying the tracking pipeline on a machine without MongoDB; real users
point at their MongoDB. ``nx-27017`` is a PyPI package (``pip install nx-27017``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

log = logging.getLogger(__name__)

EXECUTABLE = "nx-27017"
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 15  # it needs about 3 s to stop on SIGTERM


class ServerUnavailable(RuntimeError):
    """The server program is missing or did not start; the message says why."""


def find_executable() -> Optional[str]:
    """``nx-27017`` next to this Python (a virtualenv's bin/) or on PATH."""
    beside = Path(sys.executable).parent / EXECUTABLE
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(EXECUTABLE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def mongo_test_server(workdir: str | os.PathLike) -> Iterator[str]:
    """Start the server with its data in ``workdir``; yield its URL; stop it on exit."""
    exe = find_executable()
    if exe is None:
        raise ServerUnavailable(f"{EXECUTABLE} is not installed: pip install nx-27017")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    logfile = workdir / "server.log"
    proc = subprocess.Popen(
        [exe, "--data-dir", str(workdir / "data"), "-p", str(port), "--host", "127.0.0.1",
         "--log-file", str(logfile), "--pid-file", str(workdir / "server.pid")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(port):
            if proc.poll() is not None:
                raise ServerUnavailable(f"{EXECUTABLE} exited with status {proc.returncode}; see {logfile}")
            if time.monotonic() > deadline:
                raise ServerUnavailable(f"{EXECUTABLE} did not listen on 127.0.0.1:{port} within {START_TIMEOUT_S} s")
            time.sleep(0.1)
        log.info("%s listening on 127.0.0.1:%d (data in %s)", EXECUTABLE, port, workdir)
        yield f"mongodb://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
