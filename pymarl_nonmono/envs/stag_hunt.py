"""Observations and available actions of a predator-prey grid world (PyMARL2's ``stag_hunt``),
for all agents at once, from the entities' positions.

PyMARL2's env draws every entity onto a padded copy of the world once per agent and per step,
entity by entity, to cut out each agent's window; with its available actions, that is about 70%
of the env's time and most of a predator-prey run's (``benchmarks/stag_hunt_env.py``). These are
the same arrays computed in one pass; ``hosts/pymarl2/stag_hunt.py`` puts them on the env for
the settings they cover, and tests compare them with the env's own methods on every step of
random episodes. No host import here.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

WALL = -1.0  # what the env writes in channel 0 of window cells outside the world (observe_walls)


def local_views(observers: np.ndarray, targets: Sequence[tuple[np.ndarray, np.ndarray, int]],
                world_shape: Sequence[int], radius: Sequence[int], n_feats: int, walls: bool,
                dtype=np.float32) -> np.ndarray:
    """Each observer's window of the world, flattened: ``[N, (2*r0+1) * (2*r1+1) * n_feats]``.

    ``observers``: int ``[N, 2]`` (row, column) positions; ``targets``: ``(positions [M, 2],
    shown [M] bool, channel)`` per kind of entity. A shown target within ``radius`` of an observer
    in both coordinates (the window, centred on the observer) puts 1 in its channel at its cell;
    with ``walls``, window cells outside the world hold :data:`WALL` in channel 0."""
    observers = np.asarray(observers)
    if observers.ndim != 2 or observers.shape[1] != 2:
        raise ValueError(f"observers must be [N, 2] positions, got shape {observers.shape}")
    r0, r1 = (int(r) for r in radius)
    n = len(observers)
    out = np.zeros((n, 2 * r0 + 1, 2 * r1 + 1, n_feats), dtype=dtype)
    if walls:
        rows = observers[:, :1].astype(np.int64) + np.arange(-r0, r0 + 1)
        cols = observers[:, 1:].astype(np.int64) + np.arange(-r1, r1 + 1)
        outside = ((rows < 0) | (rows >= world_shape[0]))[:, :, None] | ((cols < 0) | (cols >= world_shape[1]))[:, None, :]
        out[..., 0][outside] = WALL
    for positions, shown, channel in targets:
        positions = np.asarray(positions)
        if not len(positions):
            continue
        if positions.shape != (len(shown), 2):
            raise ValueError(f"targets of channel {channel}: positions {positions.shape} and shown {np.shape(shown)} "
                             "do not match")
        d = positions[None, :, :].astype(np.int64) - observers[:, None, :].astype(np.int64)  # [N, M, 2]
        seen = np.asarray(shown, dtype=bool)[None, :] & (np.abs(d[..., 0]) <= r0) & (np.abs(d[..., 1]) <= r1)
        i, m = np.nonzero(seen)
        out[i, d[i, m, 0] + r0, d[i, m, 1] + r1, channel] = 1
    return out.reshape(n, -1)


def available_actions(positions: np.ndarray, active: np.ndarray, prey_at: np.ndarray, moves: np.ndarray,
                      stay: int, catch: Optional[int]) -> np.ndarray:
    """``[N, A]`` 0/1: which of the ``A = len(moves)`` actions each agent may take in a bounded world.

    ``positions``: int ``[N, 2]``; ``active``: ``[N]`` bool (a frozen agent may only ``stay``);
    ``prey_at``: ``[H, W]`` bool, where prey stands; ``moves``: ``[A, 2]`` displacement of each
    action (the first four the moves). An action is available when it stays inside the world;
    ``catch`` (None: no catch action) only next to prey: when one of the four moves, kept inside
    the world, lands on it."""
    positions = np.asarray(positions).astype(np.int64)
    shape = np.asarray(prey_at.shape, dtype=np.int64)
    moves = np.asarray(moves).astype(np.int64)
    landing = positions[:, None, :] + moves[None, :, :]
    avail = np.all((landing >= 0) & (landing < shape), axis=2).astype(np.int64)
    if catch is not None:
        near = np.clip(positions[:, None, :] + moves[None, :4, :], 0, shape - 1)
        avail[:, catch] = prey_at[near[..., 0], near[..., 1]].any(axis=1)
    frozen = ~np.asarray(active, dtype=bool)
    avail[frozen] = 0
    avail[frozen, stay] = 1
    return avail
