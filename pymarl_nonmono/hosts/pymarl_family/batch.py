"""Conversion of a PyMARL-family ``EpisodeBatch`` (PyMARL2, EPyMARL) into the plain
tensors our numerics take.

Both hosts store every field over ``T+1`` steps (the extra step holds the final state and
the action chosen there). Per-transition fields (reward, terminated, mask) are cut to
``T``; per-state fields keep ``T+1`` because targets bootstrap from step ``t+1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ...numerics.recurrent import real_steps


@dataclass
class Episodes:
    obs: torch.Tensor  # [B, T+1, N, O]
    state: torch.Tensor  # [B, T+1, S]
    actions: torch.Tensor  # [B, T+1, N] long
    actions_onehot: torch.Tensor  # [B, T+1, N, A]
    avail_actions: torch.Tensor  # [B, T+1, N, A]
    reward: torch.Tensor  # [B, T]
    terminated: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T]: real, not-yet-ended transitions
    written: torch.Tensor  # [B, T+1] bool: rows the episode wrote (its states); the rest is padding
    probs: Optional[torch.Tensor]  # [B, T+1, N, A] behaviour policy, when recorded

    @property
    def batch_size(self) -> int:
        return self.obs.shape[0]

    @property
    def horizon(self) -> int:
        """T, the number of transitions."""
        return self.reward.shape[1]


def transition_mask(batch) -> torch.Tensor:
    """``[B, T]``: 1 for the real transitions of each episode, 0 for padding.

    The runners mark ``filled`` on every row an episode wrote, its final state's row
    included, so row ``t`` is a transition when the episode went on to row ``t + 1``, or
    ended there by termination. An episode cut short by a time limit before the batch's
    last row thus loses its final-state row, which holds a state and no transition.
    """
    terminated = batch["terminated"][:, :-1].float().squeeze(-1)
    filled = batch["filled"].float().squeeze(-1)
    mask = filled[:, :-1] * torch.maximum(filled[:, 1:], terminated)
    # A step after the terminal one is not part of the episode even if "filled".
    mask[:, 1:] = mask[:, 1:] * (1 - terminated[:, :-1])
    return mask


def episode_lengths(batch) -> Optional[torch.Tensor]:
    """``[B]``: the rows each episode wrote (``filled``), which are the only rows whose
    values the learner reads (:func:`transition_mask`); None when some episode's written
    rows are not a prefix of the batch or are none, so there is nothing safe to skip."""
    filled = batch["filled"].squeeze(-1) > 0
    lengths = filled.sum(1)
    if bool((lengths == 0).any()) or not torch.equal(filled, real_steps(lengths, filled.shape[1])):
        return None
    return lengths


def episodes_from_batch(batch, with_probs: bool = False) -> Episodes:
    reward_width = batch["reward"].shape[-1]
    if reward_width != 1:
        # EPyMARL with common_reward=False stores one reward per agent: [B, T+1, N].
        raise ValueError(f"the batch has {reward_width} rewards per step, not one team reward: "
                         f"our learner needs common_reward=True")
    terminated = batch["terminated"][:, :-1].float().squeeze(-1)
    mask = transition_mask(batch)
    return Episodes(
        obs=batch["obs"],
        state=batch["state"].reshape(batch["state"].shape[0], batch["state"].shape[1], -1),
        actions=batch["actions"].squeeze(-1),
        actions_onehot=batch["actions_onehot"],
        avail_actions=batch["avail_actions"],
        reward=batch["reward"][:, :-1].squeeze(-1),
        terminated=terminated,
        mask=mask,
        written=batch["filled"].squeeze(-1) > 0,
        probs=batch["probs"] if with_probs else None,
    )
