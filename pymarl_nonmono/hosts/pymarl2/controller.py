"""Multi-agent controller (PyMARL2 "mac" protocol) with our action selectors.

Parameters are shared between agents (the agent id is part of the input), like
PyMARL2's ``n_mac``. Differences that matter for the paper's method: the behaviour
policy is one of :data:`pymarl_nonmono.numerics.selection.SELECTORS` (ε-greedy or
softmax with a temperature schedule), and when the TD target needs the behaviour
policy's probabilities (expected SARSA) they are written into the episode batch's
``probs`` field at acting time, so learning uses the policy that actually acted.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from ...numerics.selection import make_selector
from ...numerics.targets import needs_behaviour_probs
from .settings import ControllerSettings, ExplorationSettings, read_settings

AgentBuilder = Callable[[int, object], torch.nn.Module]


def host_agent_builder(input_shape: int, args) -> torch.nn.Module:
    from modules.agents import REGISTRY as agents  # the host's agent networks

    return agents[args.agent](input_shape, args)


class NonMonoMAC:
    def __init__(self, scheme, groups, args, agent_builder: Optional[AgentBuilder] = None) -> None:
        self.args = args
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

    # -- acting -------------------------------------------------------------------
    def select_actions(self, ep_batch, t_ep, t_env, bs=slice(None), test_mode=False):
        avail = ep_batch["avail_actions"][:, t_ep]
        qvals = self.forward(ep_batch, t_ep, test_mode=test_mode)
        actions, probs = self.action_selector.select(qvals[bs], avail[bs], t_env, test_mode=test_mode)
        if self.record_probs and not test_mode:
            ep_batch.update({"probs": probs.detach().to("cpu")}, bs=bs, ts=t_ep, mark_filled=False)
        return actions

    def forward(self, ep_batch, t, test_mode=False):
        if test_mode:
            self.agent.eval()
        qvals, self.hidden_states = self.agent(self._inputs(ep_batch, t), self.hidden_states)
        return qvals.view(ep_batch.batch_size, self.n_agents, -1)

    # -- learning -----------------------------------------------------------------
    def unroll(self, ep_batch) -> torch.Tensor:
        """Q-values for every step of the batch: ``[B, T+1, N, A]``."""
        self.init_hidden(ep_batch.batch_size)
        out = []
        for t in range(ep_batch.max_seq_length):
            q, self.hidden_states = self.agent(self._inputs(ep_batch, t), self.hidden_states)
            out.append(q.view(ep_batch.batch_size, self.n_agents, -1))
        return torch.stack(out, dim=1)

    def _inputs(self, batch, t: int) -> torch.Tensor:
        """Agent inputs at step ``t``: ``[B, N, D]`` = obs, last action, agent id.

        Built one step at a time: concatenating all steps first costs a large copy
        that the step-wise recurrent unroll cannot use anyway.
        """
        obs = batch["obs"][:, t]
        parts = [obs]
        if self.settings.obs_last_action:
            onehot = batch["actions_onehot"]
            # The "last action" at step 0 is none: zeros.
            parts.append(onehot[:, t - 1] if t > 0 else torch.zeros_like(onehot[:, 0]))
        if self.settings.obs_agent_id:
            parts.append(self._agent_ids(obs).expand(obs.shape[0], -1, -1))
        return torch.cat(parts, dim=-1)

    def _agent_ids(self, like: torch.Tensor) -> torch.Tensor:
        eye = getattr(self, "_eye", None)
        if eye is None or eye.device != like.device or eye.dtype != like.dtype:
            eye = self._eye = torch.eye(self.n_agents, device=like.device, dtype=like.dtype).unsqueeze(0)
        return eye

    # -- PyMARL2 mac protocol -----------------------------------------------------
    def init_hidden(self, batch_size):
        hidden = self.agent.init_hidden()
        self.hidden_states = None if hidden is None else hidden.unsqueeze(0).expand(batch_size, self.n_agents, -1)

    def parameters(self):
        return self.agent.parameters()

    def load_state(self, other_mac):
        self.agent.load_state_dict(other_mac.agent.state_dict())

    def cuda(self):
        self.agent.cuda()

    def save_models(self, path):
        torch.save(self.agent.state_dict(), f"{path}/agent.th")

    def load_models(self, path):
        self.agent.load_state_dict(torch.load(f"{path}/agent.th", map_location="cpu"))
