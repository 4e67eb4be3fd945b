"""Benchmarking on PyMARL2 and EPyMARL: sweeps of algorithms x environments x seeds, and their report.

:mod:`.spec` (what to run, checked before anything starts), :mod:`.launch` (host and
MongoDB checks, the plan), :mod:`.runner` (one subprocess per run, locally or through
submitit on SLURM, resumable from per-run state files), :mod:`.report` (curves and a
final-performance table from FileStorage or MongoDB).
"""


class MissingDependency(ImportError):
    """An optional package is needed for what was asked; the message says what to install."""
