"""Our controller on PyMARL2: :class:`..pymarl_family.controller.PymarlFamilyMAC` with PyMARL2's
agent protocol (agents take ``[B, N, D]``; ``rnn`` and ``n_rnn`` are GRU agents)."""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ...numerics.recurrent import GRUAgentParts
from ..pymarl_family import controller as _family
from ..pymarl_family.controller import AgentBuilder


def _gru_parts(agent: torch.nn.Module) -> GRUAgentParts:
    # PyMARL2's rnn_agent.py and n_rnn_agent.py: relu(fc1) -> GRUCell rnn -> fc2, and
    # n_rnn's layer_norm before fc2, which it creates only when it applies it.
    return GRUAgentParts(agent.fc1, agent.rnn, agent.fc2, getattr(agent, "layer_norm", None))


#: PyMARL2 agents whose step-wise forward :func:`unroll_gru` can replay over a whole batch.
UNROLLABLE_AGENTS: dict[str, Callable[[torch.nn.Module], GRUAgentParts]] = {
    "rnn": _gru_parts,
    "n_rnn": _gru_parts,
}

PYMARL2_AGENTS = _family.AgentProtocol(flat_inputs=False, unrollable=UNROLLABLE_AGENTS)


class NonMonoMAC(_family.PymarlFamilyMAC):
    def __init__(self, scheme, groups, args, agent_builder: Optional[AgentBuilder] = None) -> None:
        super().__init__(scheme, groups, args, PYMARL2_AGENTS, agent_builder)
