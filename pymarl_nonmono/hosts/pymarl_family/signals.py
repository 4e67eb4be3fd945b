"""A run stopped by SIGTERM is recorded by Sacred as INTERRUPTED, as one stopped by Ctrl-C is.

SIGTERM is how runs are stopped in practice (``bench`` on Ctrl-C, SIGTERM or a time-out,
SLURM's ``scancel`` and job time limits, ``kill``). By default it ends Python at once, so
Sacred never records the end: run.json and the MongoDB document stay RUNNING for good,
indistinguishable from a run still training, and a report must list them as unfinished
with no reason. Raised as KeyboardInterrupt instead, it reaches Sacred's run, which records
INTERRUPTED (stop time, last heartbeat's metrics) and then lets the process end.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM reached the run's main process."""

    STATUS = "INTERRUPTED"  # the status Sacred records for this exception


def record_sigterm_as_interrupt() -> bool:
    """Make SIGTERM raise :class:`Terminated` in this (main) process; True if installed.

    Left alone when SIGTERM already has a handler (someone else's) or is ignored, and
    outside the main thread (Python only delivers signals there). Processes forked later
    (the parallel runner's env workers) inherit the handler; in them it restores the
    default and re-sends the signal, so they end on SIGTERM exactly as before. A second
    SIGTERM to the main process ends it at once, as before.
    """
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return False
    owner = os.getpid()

    def on_sigterm(signum, frame):
        signal.signal(signum, signal.SIG_DFL)
        if os.getpid() != owner:
            os.kill(os.getpid(), signum)
            return
        log.warning("SIGTERM: stopping the run; Sacred records it as INTERRUPTED")
        raise Terminated("SIGTERM")

    signal.signal(signal.SIGTERM, on_sigterm)
    return True

