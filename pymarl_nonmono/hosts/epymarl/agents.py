"""Our controller on EPyMARL: :class:`..pymarl_family.controller.PymarlFamilyMAC` with EPyMARL's
agent protocol.

EPyMARL's controllers feed agents flat ``[B*N, D]`` inputs (``basic_controller.py``
``_build_inputs``), and its ``rnn`` agent holds a ``GRUCell`` only with ``use_rnn: True``;
with ``use_rnn: False`` its ``rnn`` is an ``nn.Linear`` (a feed-forward agent) and is
unrolled step by step, as is ``rnn_ns`` (one ``rnn`` agent per agent).
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from ...numerics.recurrent import GRUAgentParts
from ..pymarl_family import controller as _family
from ..pymarl_family.controller import AgentBuilder


def _rnn_parts(agent: nn.Module) -> Optional[GRUAgentParts]:
    # rnn_agent.py: relu(fc1) -> rnn -> fc2, rnn a GRUCell iff use_rnn; no layer norm.
    if not isinstance(agent.rnn, nn.GRUCell):
        return None
    return GRUAgentParts(agent.fc1, agent.rnn, agent.fc2)


EPYMARL_AGENTS = _family.AgentProtocol(flat_inputs=True, unrollable={"rnn": _rnn_parts})


class NonMonoMAC(_family.PymarlFamilyMAC):
    def __init__(self, scheme, groups, args, agent_builder: Optional[AgentBuilder] = None) -> None:
        super().__init__(scheme, groups, args, EPYMARL_AGENTS, agent_builder)
