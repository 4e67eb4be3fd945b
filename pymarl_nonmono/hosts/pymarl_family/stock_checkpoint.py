"""Complete checkpoints for the hosts' own learners.

PyMARL2's and EPyMARL's learners save the agent, the mixer and the optimiser, and load the
target agent from the agent's file; whatever else a learner trains starts afresh when a run is
resumed. For most of them that is the target mixer (random until the next target copy); for
PyMARL2's ``max_q_learner`` (OW-QMIX, CW-QMIX) it is the whole central Q (``central_mac``,
``central_mixer`` and their targets), the networks its QMIX part learns from: a resumed
OW-QMIX run trained on a random central Q and forgot what it had learned (predator-prey,
docs/predator_prey.md). EPyMARL's learners also standardise rewards or returns by running
statistics (``rew_ms``, ``ret_ms``: mean, variance and count of everything seen so far), which
its checkpoints do not hold either: a resumed run standardised by statistics of its first new
batches. So after a stock learner's own save we write :data:`STATE_FILE` beside its files, with
the state of every network it holds (its attributes that are ``torch.nn.Module``, and the
``agent`` of each controller), every optimiser, every running statistic and the process's random
streams, and load it after the learner's own load.

Not restored: the learners' counters. The hosts restart their episode counter at 0 after a
load, and the stock learners schedule target copies by ``episode_num -
last_target_update_episode``: a restored ``last_target_update_episode`` would hold the next copy
back by every episode before the checkpoint; left at its start value, the first copy comes
``target_update_interval`` episodes after the resume (the saved target networks serve until then).
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Iterator

import torch

from .checkpoint import global_rng_state, restore_global_rng_state, save_atomically

log = logging.getLogger(__name__)

STATE_FILE = "stock_learner_state.th"


def _networks(learner) -> Iterator[tuple[str, torch.nn.Module]]:
    for name, value in vars(learner).items():
        if isinstance(value, torch.nn.Module):
            yield name, value
        elif isinstance(getattr(value, "agent", None), torch.nn.Module):  # a controller (mac)
            yield f"{name}.agent", value.agent


def _optimisers(learner) -> Iterator[tuple[str, torch.optim.Optimizer]]:
    for name, value in vars(learner).items():
        if isinstance(value, torch.optim.Optimizer):
            yield name, value


#: What makes an attribute a running statistic (EPyMARL's ``RunningMeanStd``): all it holds.
STATISTIC_FIELDS = ("mean", "var", "count")


def _statistics(learner) -> Iterator[tuple[str, object]]:
    for name, value in vars(learner).items():
        fields = getattr(value, "__dict__", None)
        if fields is not None and isinstance(fields.get("mean"), torch.Tensor) and set(fields) == set(STATISTIC_FIELDS):
            yield name, value


def learner_state(learner) -> dict:
    """What :func:`load_learner_state` restores: networks, optimisers, running statistics, random streams."""
    return {"networks": {name: net.state_dict() for name, net in _networks(learner)},
            "optimisers": {name: opt.state_dict() for name, opt in _optimisers(learner)},
            "statistics": {name: {k: getattr(stat, k) for k in STATISTIC_FIELDS} for name, stat in _statistics(learner)},
            "rng": global_rng_state()}


def load_learner_state(learner, state: dict) -> None:
    networks, optimisers, statistics = dict(_networks(learner)), dict(_optimisers(learner)), dict(_statistics(learner))
    if "statistics" not in state and statistics:
        log.warning("the checkpoint's %s holds no running statistics (written by an earlier pymarl-nonmono): "
                    "%s start afresh", STATE_FILE, ", ".join(statistics))
        statistics = {}
    saved = {**state["networks"], **state["optimisers"], **state.get("statistics", {})}
    held = {**networks, **optimisers, **statistics}
    missing, unknown = sorted(set(held) - set(saved)), sorted(set(saved) - set(held))
    problems = ([f"not in it: {', '.join(missing)}"] if missing else []) + (
        [f"not in the learner: {', '.join(unknown)}"] if unknown else [])
    if problems:
        raise ValueError(f"the checkpoint's {STATE_FILE} does not fit {type(learner).__name__}: "
                         f"{'; '.join(problems)} (was it saved by another algorithm?)")
    for name, net in networks.items():
        net.load_state_dict(state["networks"][name])
    for name, opt in optimisers.items():
        opt.load_state_dict(state["optimisers"][name])
    for name, stat in statistics.items():
        for key in STATISTIC_FIELDS:
            value, current = state["statistics"][name][key], getattr(stat, key)
            # On the device the learner keeps it on (saved from GPU, loaded to CPU first).
            setattr(stat, key, value.to(current.device) if isinstance(current, torch.Tensor) else value)
    restore_global_rng_state(state["rng"])


def complete_checkpoints(learner):
    """Make ``learner``'s ``save_models``/``load_models`` save and restore its whole state
    (module docstring). A checkpoint without :data:`STATE_FILE` (saved without
    pymarl-nonmono) loads as the host loads it, with a warning naming what starts afresh.
    Returns the learner."""
    save, load = getattr(learner, "save_models", None), getattr(learner, "load_models", None)
    if save is None or load is None:  # a learner that never checkpoints
        return learner

    @functools.wraps(save)
    def save_models(path, *args, **kwargs):
        out = save(path, *args, **kwargs)
        save_atomically({os.path.join(path, STATE_FILE): learner_state(learner)})
        return out

    @functools.wraps(load)
    def load_models(path, *args, **kwargs):
        out = load(path, *args, **kwargs)
        file = os.path.join(path, STATE_FILE)
        if os.path.exists(file):
            load_learner_state(learner, torch.load(file, map_location="cpu"))
        else:
            log.warning("%s has no %s (saved without pymarl-nonmono): %s resumes with what its own load_models "
                        "restores; not as they were saved: %s", path, STATE_FILE, type(learner).__name__,
                        ", ".join([name for name, _ in _networks(learner) if name not in ("mac.agent", "mixer")]
                                  + [name for name, _ in _statistics(learner)]))
        return out

    learner.save_models, learner.load_models = save_models, load_models
    return learner
