"""Multi-agent controller ("mac" protocol of PyMARL2 and EPyMARL) with our action selectors.

Parameters are shared between agents (the agent id is part of the input), like
PyMARL2's ``n_mac`` and EPyMARL's ``basic_mac``. Differences that matter for the paper's
method: the behaviour policy is one of :data:`pymarl_nonmono.numerics.selection.SELECTORS`
(ε-greedy or softmax with a temperature schedule), and when the TD target needs the
behaviour policy's probabilities (expected SARSA) they are written into the episode
batch's ``probs`` field at acting time, so learning uses the policy that actually acted.

What differs between the hosts' agent networks is given to the constructor as an
:class:`AgentProtocol`; each host module defines its own (``hosts/<host>/controller.py``
or ``agents.py``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable, Mapping, Optional

import torch

from ...errors import check_shape
from ...numerics.igm import joint_greedy_actions
from ...numerics.recurrent import GRUAgentParts, unroll_gru, zero_padding
from ...numerics.selection import make_selector
from ...numerics.targets import needs_behaviour_probs
from .batch import episode_lengths
from .checkpoint import save_atomically
from .settings import ControllerSettings, ExplorationSettings, read_settings

log = logging.getLogger(__name__)

AgentBuilder = Callable[[int, object], torch.nn.Module]
#: The GRU modules of a built agent, or None when this instance has none to replay
#: (e.g. EPyMARL's ``rnn`` agent with ``use_rnn: False``): it is then unrolled step by step.
PartsOf = Callable[[torch.nn.Module], Optional[GRUAgentParts]]
#: The agents' signs in a checkpoint folder (the sign gauge), beside the host's ``agent.th``.
AGENT_SIGN_FILE = "agent_sign.th"


@dataclass(frozen=True)
class AgentProtocol:
    """How one host's agent networks are called.

    ``flat_inputs``: the agent's forward takes ``[B*N, D]`` (EPyMARL) rather than
    ``[B, N, D]`` (PyMARL2). ``unrollable``: agents (``agent:`` config key) whose
    step-wise forward :func:`unroll_gru` can replay over a whole batch at once, each with
    the function that finds its GRU modules; other agents are unrolled one step at a time.
    """

    flat_inputs: bool
    unrollable: Mapping[str, PartsOf]


def host_agent_builder(input_shape: int, args) -> torch.nn.Module:
    from modules.agents import REGISTRY as agents  # the host's agent networks

    return agents[args.agent](input_shape, args)


class PymarlFamilyMAC:
    def __init__(self, scheme, groups, args, protocol: AgentProtocol,
                 agent_builder: Optional[AgentBuilder] = None) -> None:
        self.args = args
        self.protocol = protocol
        self.settings: ControllerSettings = read_settings(ControllerSettings, args, "nonmono_mac")
        self.exploration: ExplorationSettings = read_settings(ExplorationSettings, args, "nonmono_mac")
        self.n_agents = int(args.n_agents)
        self.n_actions = int(args.n_actions)
        input_shape = int(scheme["obs"]["vshape"])
        if self.settings.obs_last_action:
            input_shape += self.n_actions
        if self.settings.obs_agent_id:
            input_shape += self.n_agents
        self.agent = (agent_builder or host_agent_builder)(input_shape, args)
        self.action_selector = make_selector(
            self.exploration.action_selector,
            schedule_kind=self.exploration.selector_schedule,
            **self.exploration.schedule_args(),
        )
        self.record_probs = needs_behaviour_probs(self.settings.td_bootstrap)
        self.hidden_states = None
        # Agents are known by their `agent:` name; one built otherwise but named so must have the
        # layout (its first unroll is checked against its own forward, _verify_unroll).
        parts_of = protocol.unrollable.get(self.settings.agent)
        try:
            self._unroll_parts: Optional[GRUAgentParts] = parts_of(self.agent) if parts_of else None
        except AttributeError:
            self._unroll_parts = None
        self._unroll_verified = False
        # Joint-greedy tests: the learner's mixer, and whether test episodes act on it now.
        self.mixer = None
        self.joint_greedy = False
        # The sign gauge (numerics/gauge.py): agent i's utilities are agent_sign[i] * its network's
        # output wherever they are used. None: no signs, the network's outputs as they are.
        self.agent_sign: Optional[torch.Tensor] = None

    def attach_mixer(self, mixer) -> None:
        """The mixer whose joint argmax joint-greedy test episodes act on (the learner's)."""
        self.mixer = mixer

    # -- the sign gauge -------------------------------------------------------------
    def keep_agent_signs(self) -> None:
        """From now on each agent's utilities carry a sign, +1 until :meth:`flip_agent_sign`."""
        if self.agent_sign is None:
            device = next(iter(self.agent.parameters()), torch.empty(0)).device
            self.agent_sign = torch.ones(self.n_agents, device=device)

    def flip_agent_sign(self, agent: int) -> None:
        if self.agent_sign is None:
            raise RuntimeError("nonmono_mac: no agent signs to flip (keep_agent_signs was not called)")
        self.agent_sign[agent] = -self.agent_sign[agent]

    def _signed(self, q: torch.Tensor) -> torch.Tensor:
        """``q [..., N, A]`` times each agent's sign; unchanged without signs."""
        if self.agent_sign is None:
            return q
        return q * self.agent_sign.to(device=q.device, dtype=q.dtype).unsqueeze(-1)

    # -- acting -------------------------------------------------------------------
    def select_actions(self, ep_batch, t_ep, t_env, bs=slice(None), test_mode=False):
        avail = ep_batch["avail_actions"][:, t_ep]
        qvals = self.forward(ep_batch, t_ep, test_mode=test_mode)
        if test_mode and self.joint_greedy:
            return self._joint_greedy(ep_batch, t_ep, qvals, avail, bs)
        actions, probs = self.action_selector.select(qvals[bs], avail[bs], t_env, test_mode=test_mode)
        if self.record_probs and not test_mode:
            ep_batch.update({"probs": probs.detach().to("cpu")}, bs=bs, ts=t_ep, mark_filled=False)
        return actions

    def _joint_greedy(self, ep_batch, t_ep, qvals, avail, bs):
        """The joint action that maximises the mixer's Q_tot at the state: centralised, for
        evaluation only (hosts/pymarl_family/evaluation.py)."""
        if self.mixer is None:
            raise RuntimeError("nonmono_mac: joint-greedy test episodes need the learner's mixer; "
                               "none was attached (mac.attach_mixer)")
        state = ep_batch["state"][:, t_ep][bs]
        with torch.no_grad():
            return joint_greedy_actions(self.mixer, qvals[bs].detach(), state.reshape(state.shape[0], -1),
                                        avail[bs])

    def forward(self, ep_batch, t, test_mode=False):
        if test_mode:
            self.agent.eval()
        qvals, self.hidden_states = self.agent(self._inputs(ep_batch, t), self.hidden_states)
        return self._signed(qvals.view(ep_batch.batch_size, self.n_agents, -1))

    # -- learning -----------------------------------------------------------------
    def unroll(self, ep_batch) -> torch.Tensor:
        """Q-values for every step of the batch: ``[B, T+1, N, A]``."""
        return self._signed(self._unroll_network(ep_batch))

    def _unroll_network(self, ep_batch) -> torch.Tensor:
        """The agent network's outputs for every step of the batch, before any sign."""
        self.init_hidden(ep_batch.batch_size)
        if self._unroll_parts is None:
            return self._unroll_stepwise(ep_batch)
        # Padding rows come out as 0 and are mostly not computed: the learner never reads them.
        lengths = episode_lengths(ep_batch)
        q, last_hidden = unroll_gru(self._unroll_parts, self._input_blocks(ep_batch, slice(None)), lengths=lengths,
                                    kernel=self.settings.gru_kernel)
        if not self._unroll_verified:
            self._verify_unroll(ep_batch, q, lengths)
            if self._unroll_parts is None:
                return self._unroll_network(ep_batch)
        self.hidden_states = last_hidden
        return q

    def _unroll_stepwise(self, ep_batch) -> torch.Tensor:
        out = []
        for t in range(ep_batch.max_seq_length):
            q, self.hidden_states = self.agent(self._inputs(ep_batch, t), self.hidden_states)
            out.append(q.view(ep_batch.batch_size, self.n_agents, -1))
        return torch.stack(out, dim=1)

    def _verify_unroll(self, ep_batch, q: torch.Tensor, lengths: Optional[torch.Tensor]) -> None:
        """Once per controller: the batched unroll must equal the agent's own forward on
        every row it computed (all of them, or each episode's first ``lengths``).

        The protocol knows agents by name and module layout; an agent whose forward
        does something else (a changed host, a subclass) must not be replayed wrongly.
        """
        with torch.no_grad():
            self.init_hidden(ep_batch.batch_size)
            reference = zero_padding(self._unroll_stepwise(ep_batch), lengths)
        self._unroll_verified = True
        if not torch.allclose(q.detach(), reference, rtol=1e-4, atol=1e-5):
            log.warning(
                "nonmono_mac: agent %r does not compute relu(fc1) -> rnn -> fc2 as expected "
                "(max difference %.3g); unrolling it one step at a time from now on",
                self.args.agent, float((q.detach() - reference).abs().max()),
            )
            self._unroll_parts = None

    def _input_blocks(self, batch, t) -> list[torch.Tensor]:
        """Agent input blocks: obs, last action, agent id. An int ``t`` gives one step,
        ``[B, N, D_k]`` blocks; ``slice(None)`` gives every step, ``[B, T, N, D_k]``. The
        agent id block is ``[1, N, N]`` / ``[1, 1, N, N]``, to be broadcast."""
        obs = batch["obs"][:, t]
        blocks = [obs]
        if self.settings.obs_last_action:
            onehot = batch["actions_onehot"]
            # The "last action" at step 0 is none: zeros.
            if isinstance(t, int):
                blocks.append(onehot[:, t - 1] if t > 0 else torch.zeros_like(onehot[:, 0]))
            else:
                blocks.append(torch.cat([torch.zeros_like(onehot[:, :1]), onehot[:, :-1]], dim=1))
        if self.settings.obs_agent_id:
            ids = self._agent_ids(obs)
            blocks.append(ids if isinstance(t, int) else ids.unsqueeze(0))
        return blocks

    def _inputs(self, batch, t: int) -> torch.Tensor:
        """The agent's input at step ``t``, concatenated: ``[B, N, D]``, or ``[B*N, D]``
        for a host whose agents take flat inputs."""
        blocks = self._input_blocks(batch, t)
        lead = blocks[0].shape[:-1]
        inputs = torch.cat([block.expand(*lead, -1) for block in blocks], dim=-1)
        return inputs.reshape(-1, inputs.shape[-1]) if self.protocol.flat_inputs else inputs

    def _agent_ids(self, like: torch.Tensor) -> torch.Tensor:
        eye = getattr(self, "_eye", None)
        if eye is None or eye.device != like.device or eye.dtype != like.dtype:
            eye = self._eye = torch.eye(self.n_agents, device=like.device, dtype=like.dtype).unsqueeze(0)
        return eye

    # -- the hosts' mac protocol -----------------------------------------------------
    def init_hidden(self, batch_size):
        hidden = self.agent.init_hidden()
        self.hidden_states = None if hidden is None else hidden.unsqueeze(0).expand(batch_size, self.n_agents, -1)

    def parameters(self):
        return self.agent.parameters()

    def load_state(self, other_mac):
        self.agent.load_state_dict(other_mac.agent.state_dict())
        if other_mac.agent_sign is not None:
            self.keep_agent_signs()
            self.agent_sign.copy_(other_mac.agent_sign)

    def cuda(self):
        self.agent.cuda()
        if self.agent_sign is not None:
            self.agent_sign = self.agent_sign.cuda()

    def checkpoint_files(self, path) -> dict:
        """``{file: state}`` of this controller in the checkpoint folder ``path``."""
        files = {f"{path}/agent.th": self.agent.state_dict()}
        if self.agent_sign is not None:
            files[f"{path}/{AGENT_SIGN_FILE}"] = self.agent_sign.detach().cpu()
        return files

    def save_models(self, path):
        save_atomically(self.checkpoint_files(path))

    def load_models(self, path):
        self.agent.load_state_dict(torch.load(f"{path}/agent.th", map_location="cpu"))
        # The signs are part of the agents' function: a checkpoint that has them is acted on with
        # them, whatever this run's sign_gauge (without, the agents would play the mirror image).
        # One without them comes from a run that had none: every sign +1.
        sign_file = os.path.join(path, AGENT_SIGN_FILE)
        if os.path.exists(sign_file):
            sign = torch.load(sign_file, map_location="cpu")
            check_shape(sign_file, sign, (self.n_agents,))
            self.keep_agent_signs()
            self.agent_sign.copy_(sign)
        elif self.agent_sign is not None:
            self.agent_sign.fill_(1.0)
