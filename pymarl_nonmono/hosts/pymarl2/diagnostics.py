"""IGM diagnostics the learner logs with its other statistics.

Every run gets ``igm_violation_rate`` on its training batch (see
:func:`~pymarl_nonmono.numerics.igm.igm_violation_rate`). Single-state games whose
payoff is known get the full picture at their one state: the recovered Q_tot table,
its largest error against the payoff, the agents' greedy joint action, and whether it
is IGM-consistent and optimal. Which environments have a known payoff is this module's
registry, so the learner holds no environment-specific code.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch

from ...envs.matrix import resolve_payoff
from ...numerics.igm import igm_summary, igm_violation_rate, joint_q_table
from ...registry import Registry

MAX_TABLE_ENTRIES = 64  # log the Q_tot table entry by entry up to this size

PayoffSource = Callable[[Mapping], torch.Tensor]
KNOWN_PAYOFFS: Registry[PayoffSource] = Registry("env with a known payoff")
KNOWN_PAYOFFS.register(
    "matrix_game",
    lambda env_args: torch.as_tensor(resolve_payoff(**{
        k: env_args.get(k) for k in ("preset", "payoff", "penalty_k", "n_agents", "n_actions")
    })),
)
# PyMARL2's own one_step_matrix_game hard-codes this payoff.
KNOWN_PAYOFFS.register("one_step_matrix_game", lambda env_args: torch.as_tensor(resolve_payoff("pymarl2")))


class IGMDiagnostics:
    def __init__(self, env: str, env_args: Optional[Mapping], seed: int = 0) -> None:
        self.payoff = KNOWN_PAYOFFS.get(env)(env_args or {}) if env in KNOWN_PAYOFFS else None
        # A private generator: sampling states for the diagnostic must not shift the
        # training run's random stream.
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, mixer, q: torch.Tensor, ep) -> dict:
        """``q``: agent Q-values ``[B, T+1, N, A]`` of the batch ``ep`` (detached)."""
        stats = {
            "igm_violation_rate": igm_violation_rate(
                mixer, q[:, :-1], ep.state[:, :-1], ep.avail_actions[:, :-1], ep.mask, generator=self.generator
            )
        }
        if self.payoff is None:
            return stats
        agent_q, avail = q[0, 0], ep.avail_actions[0, 0]
        table = joint_q_table(mixer, agent_q, ep.state[0, 0])
        summary = igm_summary(table, agent_q, avail, self.payoff.to(table.dtype))
        stats.update(
            igm_consistent=float(summary["igm_consistent"]),
            greedy_optimal=float(summary["greedy_optimal"]),
            payoff_max_abs_error=summary["payoff_max_abs_error"],
            greedy_joint_index=float(summary["greedy_joint_index"]),
        )
        if table.numel() <= MAX_TABLE_ENTRIES:
            sub = table[tuple(slice(0, s) for s in self.payoff.shape)]
            for idx in torch.cartesian_prod(*[torch.arange(s) for s in sub.shape]).view(-1, sub.dim()).tolist():
                stats["q_tot_" + "_".join(map(str, idx))] = float(sub[tuple(idx)])
        return stats
