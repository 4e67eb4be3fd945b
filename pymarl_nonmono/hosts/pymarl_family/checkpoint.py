"""Checkpoint files written so that a stop during a save never leaves a broken checkpoint.

PyMARL2 and EPyMARL resume from the newest checkpoint folder; a file cut short there by a
stop (Ctrl-C, SIGTERM, a cluster's time limit) made the resume fail. Every file of one
save is first written completely under a temporary name in its folder; only then are they
renamed over their final names, so a stop while writing leaves the previous checkpoint as
it was (the renames themselves take microseconds).
"""

from __future__ import annotations

import os
import tempfile
from typing import Mapping

import torch


def save_atomically(files: Mapping[str, object]) -> None:
    """``torch.save`` each ``{path: obj}``, all or nothing."""
    staged = []
    try:
        for path, obj in files.items():
            folder, name = os.path.split(os.path.abspath(path))
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
            os.close(fd)
            staged.append((tmp, path))
            torch.save(obj, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())  # on disk before a rename makes it the checkpoint
    except BaseException:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)  # atomic within one folder
