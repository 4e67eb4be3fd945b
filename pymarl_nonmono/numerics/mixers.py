"""Value-factorisation mixers: Q_tot(s, a) = f_s(Q_1(s, a_1), ..., Q_N(s, a_N)).

The QMIX architecture is one class, :class:`HyperMixer`, whose hypernetwork weights go
through a *named* transform: ``"abs"`` is QMIX's monotonicity constraint, ``"none"`` is
the paper's non-monotonic mixer, ``"softplus"`` a smooth monotonic variant. Keeping the
constraint a constructor argument that every registry entry sets explicitly is what
makes the "flag never reached the mixer" bug visible: the entry name says which mixer
you get, and ``HyperMixer.weight_transform`` records it.

Sizes follow PyMARL2's QMIX mixer (``mixing_embed_dim``, ``hypernet_embed``, two-layer
weight hypernetworks, a two-layer bias head for the output), so a non-monotonic run has
exactly the parameter count of the QMIX run it is compared with.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_choice, check_range, check_shape
from ..registry import Registry

WEIGHT_TRANSFORMS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry(
    "mixer_weight_transform"
)
WEIGHT_TRANSFORMS.register("none", lambda w: w)
WEIGHT_TRANSFORMS.register("abs", torch.abs)
WEIGHT_TRANSFORMS.register("softplus", F.softplus)


class Mixer(nn.Module):
    """Base class: checks shapes at the boundary; subclasses implement :meth:`mix`.

    ``forward(agent_qs [B, T, N], states [B, T, *state_shape]) -> [B, T]``.
    """

    def __init__(self, n_agents: int, state_dim: int) -> None:
        super().__init__()
        check_range("n_agents", n_agents, low=1)
        check_range("state_dim", state_dim, low=1)
        self.n_agents = int(n_agents)
        self.state_dim = int(state_dim)

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        check_shape("agent_qs", agent_qs, (None, None, self.n_agents))
        b, t, _ = agent_qs.shape
        if states.dim() > 3:
            states = states.reshape(states.shape[0], states.shape[1], -1)
        check_shape("states", states, (b, t, self.state_dim))
        out = self.mix(agent_qs.reshape(b * t, self.n_agents), states.reshape(b * t, self.state_dim))
        return out.view(b, t)

    def mix(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``agent_qs [M, N]``, ``states [M, S]`` -> ``Q_tot [M]``."""
        raise NotImplementedError


class VDNMixer(Mixer):
    """Q_tot = sum_i Q_i (no parameters; the state is ignored)."""

    def mix(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return agent_qs.sum(dim=-1)


def _hypernet(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class HyperMixer(Mixer):
    """QMIX's two-layer mixing network with state-conditioned (hypernetwork) weights.

    Q_tot = w2(s)^T ELU(W1(s)^T q + b1(s)) + b2(s), where W1 and w2 pass through
    ``weight_transform`` (see module docstring); the biases are never constrained.
    """

    def __init__(
        self,
        n_agents: int,
        state_dim: int,
        embed_dim: int,
        hypernet_embed: int,
        hypernet_layers: int,
        weight_transform: str,
    ) -> None:
        super().__init__(n_agents, state_dim)
        check_range("mixing_embed_dim", embed_dim, low=1)
        check_range("hypernet_embed", hypernet_embed, low=1)
        if hypernet_layers not in (1, 2):
            raise ConfigError(f"hypernet_layers={hypernet_layers!r} is not one of [1, 2]")
        self.weight_transform = check_choice(
            "mixer_weight_transform", weight_transform, WEIGHT_TRANSFORMS.names()
        )
        self._transform = WEIGHT_TRANSFORMS.get(weight_transform)
        self.embed_dim = int(embed_dim)
        self.hyper_w1 = _hypernet(state_dim, hypernet_embed, n_agents * embed_dim, hypernet_layers)
        self.hyper_b1 = nn.Linear(state_dim, embed_dim)
        self.hyper_w2 = _hypernet(state_dim, hypernet_embed, embed_dim, hypernet_layers)
        # The output bias is a small MLP in QMIX; kept for parameter-count parity.
        self.hyper_b2 = nn.Sequential(nn.Linear(state_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))

    def mix(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        w1 = self._transform(self.hyper_w1(states)).view(-1, self.n_agents, self.embed_dim)
        b1 = self.hyper_b1(states).view(-1, 1, self.embed_dim)
        w2 = self._transform(self.hyper_w2(states)).view(-1, self.embed_dim, 1)
        b2 = self.hyper_b2(states).view(-1, 1, 1)
        hidden = F.elu(torch.bmm(agent_qs.unsqueeze(1), w1) + b1)
        return (torch.bmm(hidden, w2) + b2).view(-1)

    def extra_repr(self) -> str:
        return f"n_agents={self.n_agents}, embed_dim={self.embed_dim}, weight_transform={self.weight_transform!r}"


MixerFactory = Callable[..., Mixer]
MIXERS: Registry[MixerFactory] = Registry("mixer")


def _hyper_entry(transform: str) -> MixerFactory:
    def build(*, n_agents: int, state_dim: int, embed_dim: int, hypernet_embed: int, hypernet_layers: int) -> Mixer:
        return HyperMixer(n_agents, state_dim, embed_dim, hypernet_embed, hypernet_layers, transform)

    return build


def _vdn_entry(*, n_agents: int, state_dim: int, embed_dim: int, hypernet_embed: int, hypernet_layers: int) -> Mixer:
    return VDNMixer(n_agents, state_dim)


MIXERS.register("nonmono_qmix", _hyper_entry("none"))
MIXERS.register("qmix", _hyper_entry("abs"))
MIXERS.register("softplus_qmix", _hyper_entry("softplus"))
MIXERS.register("vdn", _vdn_entry)


def make_mixer(
    name: str, *, n_agents: int, state_dim: int, embed_dim: int, hypernet_embed: int, hypernet_layers: int
) -> Mixer:
    """Build the mixer registered as ``name`` (see :data:`MIXERS`)."""
    return MIXERS.get(name)(
        n_agents=n_agents,
        state_dim=state_dim,
        embed_dim=embed_dim,
        hypernet_embed=hypernet_embed,
        hypernet_layers=hypernet_layers,
    )


def mixing_gradients(mixer: Mixer, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """dQ_tot/dQ_i at each point: ``[B, T, N]``. Non-negative everywhere iff monotonic there."""
    qs = agent_qs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixer(qs, states).sum(), qs)
    return grad
