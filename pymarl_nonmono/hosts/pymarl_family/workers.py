"""A run whose env workers fail stops at once, with the workers' error in one line.

The parallel runners of PyMARL2 and EPyMARL wait on pipes to their env worker processes and
hold both ends open themselves: a worker that dies with an error never wakes the main
process, and the run hangs for good (seen: a misspelled env_args value, every worker printing
its traceback, the main process waiting until killed). With our plugin active:

* each env, built in a worker process, hands an error of its construction or of any of its
  methods to the main process: a file named after the main process's pid, then the worker
  ends quietly (the main process prints the error once);
* the main process waits on a pipe in short polls and, between them, looks for that file;
  finding it, it raises SystemExit with the message, which Sacred records as the run's failure.

Signals were tried first and dropped: a signal that arrives while the main process is still
forking workers lands in logging's after-fork hook, where the exception is swallowed.
Workers also leave Ctrl-C to the main process, which ends them (they are daemons) after it
has recorded the run, instead of each printing its own KeyboardInterrupt.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.connection
import os
import signal
import tempfile

POLL_SECONDS = 0.2


def _failure_file(main_pid: int) -> str:
    return os.path.join(tempfile.gettempdir(), f"pymarl-nonmono-env-worker-{main_pid}.err")


def _in_worker() -> bool:
    return multiprocessing.parent_process() is not None


def _report_to_main(exc: BaseException) -> None:
    """In a worker: leave the error for the main process and end quietly."""
    if not _in_worker():
        return  # the main process itself: the error propagates as usual
    with open(_failure_file(os.getppid()), "w", encoding="utf-8") as f:
        f.write(f"{type(exc).__name__}: {exc}")
    raise SystemExit(1) from None


class _ReportingEnv:
    """An env whose errors in a worker process are reported to the main process."""

    def __init__(self, env) -> None:
        self._env = env

    def __getattr__(self, name):
        value = getattr(self._env, name)
        if not callable(value):
            return value

        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except Exception as exc:
                _report_to_main(exc)
                raise

        return call


def reporting_env_factory(factory):
    """A host env-registry entry whose env, built in a worker process, reports its errors
    (construction and every method) to the main process."""
    if getattr(factory, "_nonmono_reporting", False):
        return factory

    @functools.wraps(factory)
    def make(**env_args):
        if _in_worker():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            env = factory(**env_args)
        except Exception as exc:
            _report_to_main(exc)
            raise
        return _ReportingEnv(env) if _in_worker() else env

    make._nonmono_reporting = True
    return make


def stop_when_an_env_worker_fails() -> None:
    """In this (main) process, make every wait on a pipe end with SystemExit once an env
    worker has reported an error. Idempotent; processes forked later wait as before."""
    connection = multiprocessing.connection.Connection
    if getattr(connection.recv, "_nonmono_watching", False):
        return
    owner = os.getpid()
    if os.path.exists(_failure_file(owner)):  # left by an earlier process with this pid
        os.unlink(_failure_file(owner))
    plain_recv = connection.recv

    @functools.wraps(plain_recv)
    def recv(self):
        if os.getpid() == owner:
            path = _failure_file(owner)
            while not self.poll(POLL_SECONDS):
                if os.path.exists(path):
                    with open(path, encoding="utf-8") as f:
                        message = f.read().strip() or "(no message)"
                    os.unlink(path)
                    raise SystemExit(f"pymarl-nonmono: an env worker failed: {message}")
        return plain_recv(self)

    recv._nonmono_watching = True
    connection.recv = recv
