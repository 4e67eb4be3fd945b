"""What the benchmark scripts share: finding the host checkout, and interleaved timing."""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

import torch

log = logging.getLogger("benchmarks")


# --host NAME -> the variable naming its checkout (a pristine one will do: nothing is patched).
HOST_DIRS = {"pymarl2": "PYMARL2_DIR", "epymarl": "EPYMARL_DIR"}


def setup(host: str = "pymarl2") -> Optional[Path]:
    """Configure logging and one torch thread; put the ``src`` of the ``host`` checkout named
    by its variable (:data:`HOST_DIRS`) first on the import path and return it, or log what
    is missing and return None."""
    from pymarl_nonmono.hosts.spec import host_named

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    spec, variable = host_named(host), HOST_DIRS[host]
    checkout = os.environ.get(variable)
    if not checkout or not (Path(checkout) / "src" / "main.py").is_file():
        log.error("set %s to a %s checkout (%s), got %r", variable, spec.title, spec.repo, checkout)
        return None
    src = Path(checkout).resolve() / "src"
    sys.path.insert(0, str(src))
    torch.set_num_threads(1)
    return src


CLOCKS = {
    # Elapsed time: what a user waits for; needs an idle machine.
    "wall": time.perf_counter,
    # This thread's CPU time: with one torch thread, the work done, much less affected by
    # other jobs on the machine (though not by their use of caches and memory bandwidth).
    "cpu": time.thread_time,
}


def median_times(
    calls: Mapping[str, Callable[[int], object]], repeats: int, clock: str = "wall"
) -> dict[str, float]:
    """Median seconds per call of each entry of ``calls`` (called with the repeat index),
    by ``clock`` (a key of :data:`CLOCKS`).

    One untimed warm-up call each (allocator, first-call overheads), then the entries
    take turns, so load from other processes on the machine hits all of them alike.
    """
    now = CLOCKS[clock]
    for call in calls.values():
        call(0)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for r in range(repeats):
        for name, call in calls.items():
            start = now()
            call(r + 1)
            times[name].append(now() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def machine() -> str:
    """One line naming what the timings were taken on: CPU model, cores, torch, its threads, and
    whether a GPU was at hand."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}; {os.cpu_count()} cores; Python {platform.python_version()}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} thread(s); {gpu}")
