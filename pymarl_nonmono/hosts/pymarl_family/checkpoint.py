"""Checkpoint files written so that a stop during a save never leaves a broken checkpoint.

PyMARL2 and EPyMARL resume from the newest checkpoint folder; a file cut short there by a
stop (Ctrl-C, SIGTERM, a cluster's time limit) made the resume fail. Every file of one
save is first written completely under a temporary name in its folder; only then are they
renamed over their final names, so a stop while writing leaves the previous checkpoint as
it was (the renames themselves take microseconds).

A checkpoint also holds the process's random streams (:func:`global_rng_state`), so that a run
resumed from it draws what the run that saved it would have drawn next.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Mapping

import numpy as np
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


def global_rng_state() -> dict:
    """The random streams of this process that a run draws from: torch's (CPU, and CUDA when in
    use), numpy's global one, Python's ``random``."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # As tensors and numbers: torch.load's weights_only mode refuses numpy arrays.
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos),
                                                      int(has_gauss), float(gauss)],
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng_state(state: Mapping) -> None:
    """Continue the streams :func:`global_rng_state` saved (a CUDA state only where CUDA is in use)."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
