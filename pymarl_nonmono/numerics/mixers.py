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

The keys PyMARL2's ``nmix.Mixer`` reads reach the mixer the same way: ``qmix_pos_func``
(``abs`` | ``softplus`` | ``quadratic``) picks the monotonic transform of ``qmix`` and
``qmix_pos_func_beta`` is softplus's sharpness; ``use_orthogonal`` gives every linear
layer an orthogonal weight (gain 1) and a zero bias. With the constraint on, ``qmix``
equals ``nmix.Mixer(args, abs=True)`` given the same weights (tests/integration/test_mixer_parity.py).
"""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, check_bool, check_choice, check_range, check_shape
from ..registry import Registry

# transform(w, beta) -> w'; only softplus reads beta (its sharpness, softplus(x) =
# log(1 + exp(beta * x)) / beta, which tends to relu(x) as beta grows).
WeightTransform = Callable[[torch.Tensor, float], torch.Tensor]
WEIGHT_TRANSFORMS: Registry[WeightTransform] = Registry("mixer_weight_transform")
WEIGHT_TRANSFORMS.register("none", lambda w, beta: w)
WEIGHT_TRANSFORMS.register("abs", lambda w, beta: torch.abs(w))
WEIGHT_TRANSFORMS.register("softplus", lambda w, beta: F.softplus(w, beta=beta))
WEIGHT_TRANSFORMS.register("quadratic", lambda w, beta: 0.5 * w**2)

# The values of ``qmix_pos_func``: PyMARL2's three, every one non-negative, so the mixer
# stays monotonic whichever is chosen ("none" is the separate ``nonmono_qmix`` entry).
QMIX_POS_FUNCS = ("abs", "quadratic", "softplus")


class Mixer(nn.Module):
    """Base class: checks shapes at the boundary; subclasses implement :meth:`mix`.

    ``forward(agent_qs [B, T, N], states [B, T, *state_shape], rows=None) -> [B, T]``.
    ``mix`` is row-wise (one state, one joint action), so with ``rows`` (bool ``[B, T]``)
    only those rows are mixed, the others are 0: padding after the end of an episode,
    most of a batch of short episodes, then costs nothing.
    """

    def __init__(self, n_agents: int, state_dim: int) -> None:
        super().__init__()
        check_range("n_agents", n_agents, low=1)
        check_range("state_dim", state_dim, low=1)
        self.n_agents = int(n_agents)
        self.state_dim = int(state_dim)

    def forward(self, agent_qs: torch.Tensor, states: torch.Tensor, rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_shape("agent_qs", agent_qs, (None, None, self.n_agents))
        b, t, _ = agent_qs.shape
        if states.dim() > 3:
            states = states.reshape(states.shape[0], states.shape[1], -1)
        check_shape("states", states, (b, t, self.state_dim))
        qs, ss = agent_qs.reshape(b * t, self.n_agents), states.reshape(b * t, self.state_dim)
        if rows is not None:
            check_shape("rows", rows, (b, t))
            if rows.dtype != torch.bool:
                raise TypeError(f"rows must be a bool mask, got {rows.dtype}")
            keep = rows.reshape(b * t).to(qs.device)
            if not bool(keep.all()):
                index = torch.nonzero(keep).squeeze(-1)
                mixed = self.mix(qs.index_select(0, index), ss.index_select(0, index))
                return mixed.new_zeros(b * t).index_copy(0, index, mixed).view(b, t)
        return self.mix(qs, ss).view(b, t)

    def mix(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``agent_qs [M, N]``, ``states [M, S]`` -> ``Q_tot [M]``."""
        raise NotImplementedError

    def agent_mirror_rows(self, agent: int) -> list[tuple[nn.Parameter, slice]]:
        """The parameters, and their rows along the first dimension, that change sign together with
        ``agent``'s utilities to leave Q_tot unchanged everywhere (the sign gauge,
        :mod:`.gauge`). A mixer without that symmetry raises."""
        raise ValueError(f"{type(self).__name__}: Q_tot changes when an agent's utilities change sign, "
                         f"whatever its parameters do; the sign gauge needs mixer='nonmono_qmix'")

    def q_tot_of_candidates(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """Q_tot of K candidate joint actions at each of M states: ``agent_qs [M, K, N]``
        (the agents' values of each candidate), ``states [M, *state_shape]`` -> ``[M, K]``.

        What IGM checks need (every joint action, or every single-agent deviation, at a
        state); the state-dependent part of a mixer is then computed once per state, not
        once per candidate (:meth:`mix_candidates`).
        """
        check_shape("agent_qs", agent_qs, (None, None, self.n_agents))
        m = agent_qs.shape[0]
        states = states.flatten(1)
        check_shape("states", states, (m, self.state_dim))
        return self.mix_candidates(agent_qs, states)

    def mix_candidates(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``agent_qs [M, K, N]``, ``states [M, S]`` -> ``[M, K]``. This default is the
        reference: :meth:`mix` on each candidate with its state repeated. Subclasses whose
        cost is mostly in the state (hypernetworks) override it."""
        m, k, n = agent_qs.shape
        repeated = states.unsqueeze(1).expand(m, k, self.state_dim).reshape(m * k, self.state_dim)
        return self.mix(agent_qs.reshape(m * k, n), repeated).view(m, k)


class VDNMixer(Mixer):
    """Q_tot = sum_i Q_i (no parameters; the state is ignored)."""

    def mix(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return agent_qs.sum(dim=-1)

    def mix_candidates(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return agent_qs.sum(dim=-1)


def _hypernet(in_dim: int, hidden: int, out_dim: int, layers: int) -> nn.Module:
    if layers == 1:
        return nn.Linear(in_dim, out_dim)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


def orthogonal_init_linear_layers_(module: nn.Module, gain: float = 1.0) -> None:
    """Every ``nn.Linear`` inside ``module``: orthogonal weight (``gain``), zero bias.

    PyMARL2's mixers do this under ``use_orthogonal`` with gain 1 (its ``gain`` key is
    for the agent's output layer only).
    """
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            # torch's orthogonal_, in nmix's layer order: the same seed gives nmix's weights.
            nn.init.orthogonal_(layer.weight, gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def check_hypernet_layers(layers: int) -> int:
    """The weight hypernetworks' depth: 1 or 2 (PyMARL2's QMIX: 2)."""
    if isinstance(layers, bool) or layers not in (1, 2):
        raise ConfigError(f"hypernet_layers={layers!r} is not one of [1, 2]")
    return int(layers)


class HyperMixer(Mixer):
    """QMIX's two-layer mixing network with state-conditioned (hypernetwork) weights.

    Q_tot = w2(s)^T ELU(W1(s)^T q + b1(s)) + b2(s), where W1 and w2 pass through
    ``weight_transform`` (see module docstring; ``transform_beta`` is softplus's sharpness,
    unused by the others); the biases are never constrained. ``orthogonal_init``: every
    linear layer starts orthogonal (gain 1) with a zero bias, as PyMARL2's ``use_orthogonal``.
    """

    def __init__(
        self,
        n_agents: int,
        state_dim: int,
        embed_dim: int,
        hypernet_embed: int,
        hypernet_layers: int,
        weight_transform: str,
        transform_beta: float,
        orthogonal_init: bool,
    ) -> None:
        super().__init__(n_agents, state_dim)
        check_range("mixing_embed_dim", embed_dim, low=1)
        check_range("hypernet_embed", hypernet_embed, low=1)
        check_hypernet_layers(hypernet_layers)
        self.weight_transform = check_choice(
            "mixer_weight_transform", weight_transform, WEIGHT_TRANSFORMS.names()
        )
        self.transform_beta = float(check_range("qmix_pos_func_beta", transform_beta, low=0.0, low_open=True))
        self.orthogonal_init = check_bool("use_orthogonal", orthogonal_init)
        self._transform = WEIGHT_TRANSFORMS.get(weight_transform)
        self.embed_dim = int(embed_dim)
        self.hyper_w1 = _hypernet(state_dim, hypernet_embed, n_agents * embed_dim, hypernet_layers)
        self.hyper_b1 = nn.Linear(state_dim, embed_dim)
        self.hyper_w2 = _hypernet(state_dim, hypernet_embed, embed_dim, hypernet_layers)
        # The output bias is a small MLP in QMIX; kept for parameter-count parity.
        self.hyper_b2 = nn.Sequential(nn.Linear(state_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))
        if orthogonal_init:
            orthogonal_init_linear_layers_(self, gain=1.0)

    def transform(self, w: torch.Tensor) -> torch.Tensor:
        return self._transform(w, self.transform_beta)

    def agent_mirror_rows(self, agent: int) -> list[tuple[nn.Parameter, slice]]:
        # W1(s) is the last layer's output viewed as [N, E]: agent i's row is outputs i*E..(i+1)*E.
        # Only an untransformed W1 changes sign with them (|-w| = |w|: abs has no mirror).
        if self.weight_transform != "none":
            raise ValueError(f"HyperMixer with weight_transform={self.weight_transform!r}: negating an agent's "
                             f"utilities and its rows of W1 changes Q_tot, so the sign gauge does not apply "
                             f"(it needs mixer='nonmono_qmix')")
        check_range("agent", agent, 0, self.n_agents - 1)
        last = _last_linear(self.hyper_w1)
        rows = slice(agent * self.embed_dim, (agent + 1) * self.embed_dim)
        return [(last.weight, rows), (last.bias, rows)]

    def mix(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        return self.mix_candidates(agent_qs.unsqueeze(1), states).view(-1)

    def mix_candidates(self, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        # The hypernetworks see each state once; all K candidates share its weights.
        w1 = self.transform(self.hyper_w1(states)).view(-1, self.n_agents, self.embed_dim)
        b1 = self.hyper_b1(states).view(-1, 1, self.embed_dim)
        w2 = self.transform(self.hyper_w2(states)).view(-1, self.embed_dim, 1)
        b2 = self.hyper_b2(states).view(-1, 1, 1)
        hidden = F.elu(torch.bmm(agent_qs, w1) + b1)  # [M, K, E]
        return (torch.bmm(hidden, w2) + b2).squeeze(-1)

    def extra_repr(self) -> str:
        beta = f", beta={self.transform_beta}" if self.weight_transform == "softplus" else ""
        return (f"n_agents={self.n_agents}, embed_dim={self.embed_dim}, "
                f"weight_transform={self.weight_transform!r}{beta}, orthogonal_init={self.orthogonal_init}")


MixerFactory = Callable[..., Mixer]
MIXERS: Registry[MixerFactory] = Registry("mixer")


def check_mixer_options(mixer: str, qmix_pos_func: str, qmix_pos_func_beta: float, use_orthogonal: bool) -> None:
    """Validate the mixer keys together; each error names the key at fault.

    ``qmix_pos_func`` is read by ``qmix`` only, as by PyMARL2's nmix. Any other value than
    its default ``abs`` with another mixer would be silently ignored, so it is an error.
    """
    check_choice("mixer", mixer, MIXERS.names())
    check_choice("qmix_pos_func", qmix_pos_func, QMIX_POS_FUNCS)
    check_range("qmix_pos_func_beta", qmix_pos_func_beta, low=0.0, low_open=True)
    check_bool("use_orthogonal", use_orthogonal)
    if mixer != "qmix" and qmix_pos_func != "abs":
        raise ConfigError(
            f"qmix_pos_func={qmix_pos_func!r} is read only by mixer='qmix', but mixer={mixer!r}; "
            f"set mixer=qmix, or leave qmix_pos_func at 'abs' (softplus_qmix is qmix with "
            f"qmix_pos_func=softplus; nonmono_qmix has no weight transform)"
        )


def _hyper_entry(fixed_transform: str | None) -> MixerFactory:
    """A HyperMixer entry; ``None``: the transform is ``qmix_pos_func`` (the ``qmix`` entry)."""

    def build(*, n_agents: int, state_dim: int, embed_dim: int, hypernet_embed: int, hypernet_layers: int,
              qmix_pos_func: str, qmix_pos_func_beta: float, use_orthogonal: bool) -> Mixer:
        transform = qmix_pos_func if fixed_transform is None else fixed_transform
        return HyperMixer(n_agents, state_dim, embed_dim, hypernet_embed, hypernet_layers, transform,
                          transform_beta=qmix_pos_func_beta, orthogonal_init=use_orthogonal)

    return build


def _vdn_entry(*, n_agents: int, state_dim: int, embed_dim: int, hypernet_embed: int, hypernet_layers: int,
               qmix_pos_func: str, qmix_pos_func_beta: float, use_orthogonal: bool) -> Mixer:
    return VDNMixer(n_agents, state_dim)  # no parameters: nothing to initialise


MIXERS.register("nonmono_qmix", _hyper_entry("none"))
#: Mixers whose Q_tot is unchanged when an agent's utilities change sign with some of their
#: parameters (:meth:`Mixer.agent_mirror_rows`): the ones the sign gauge applies to.
SIGN_SYMMETRIC_MIXERS = ("nonmono_qmix",)
MIXERS.register("qmix", _hyper_entry(None))
MIXERS.register("softplus_qmix", _hyper_entry("softplus"))
MIXERS.register("vdn", _vdn_entry)


def make_mixer(
    name: str,
    *,
    n_agents: int,
    state_dim: int,
    embed_dim: int,
    hypernet_embed: int,
    hypernet_layers: int,
    qmix_pos_func: str,
    qmix_pos_func_beta: float,
    use_orthogonal: bool,
) -> Mixer:
    """Build the mixer registered as ``name`` (see :data:`MIXERS`).

    The last three arguments are PyMARL2's config keys of the same names, required so
    that a caller cannot leave them behind (see :func:`check_mixer_options`).
    """
    check_mixer_options(name, qmix_pos_func, qmix_pos_func_beta, use_orthogonal)
    return MIXERS.get(name)(
        n_agents=n_agents,
        state_dim=state_dim,
        embed_dim=embed_dim,
        hypernet_embed=hypernet_embed,
        hypernet_layers=hypernet_layers,
        qmix_pos_func=qmix_pos_func,
        qmix_pos_func_beta=qmix_pos_func_beta,
        use_orthogonal=use_orthogonal,
    )


# ------------------------------------------------------------------ initialisation schemes

#: init(mixer, bias) changes a freshly built mixer's parameters in place. ``default`` leaves
#: torch's initialisation (or ``use_orthogonal``'s) as it is, drawing no random numbers.
MixerInit = Callable[[Mixer, float], None]
MIXER_INITS: Registry[MixerInit] = Registry("mixer_init")


def _last_linear(module: nn.Module) -> nn.Linear:
    layers = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return layers[-1]


@torch.no_grad()
def _positive_bias(mixer: Mixer, bias: float) -> None:
    # W1(s) and w2(s) are the hypernetworks' outputs: a positive output bias moves every mixing
    # weight's mean above 0 (Q_tot increasing in the Q_i, as QMIX) while the state-dependent part
    # keeps its zero-mean spread. With torch's init and a bias of 0.5 a few per cent of the weights
    # start negative: near monotonic, never constrained. With use_orthogonal the unit-norm rows
    # spread wider and about a fifth start negative on states of 68-230 features
    # (tests/numerics/test_mixers.py measures both).
    if not isinstance(mixer, HyperMixer):
        raise ConfigError(f"mixer_init='positive_bias' needs a hypernetwork mixer; "
                          f"{type(mixer).__name__} has no mixing weights")
    for hypernet in (mixer.hyper_w1, mixer.hyper_w2):
        _last_linear(hypernet).bias.fill_(bias)


MIXER_INITS.register("default", lambda mixer, bias: None)
MIXER_INITS.register("positive_bias", _positive_bias)


def check_mixer_init(scheme: str, bias: float) -> None:
    """``mixer_init`` names a :data:`MIXER_INITS` entry; ``mixer_init_bias`` is finite and > 0."""
    check_choice("mixer_init", scheme, MIXER_INITS.names())
    check_range("mixer_init_bias", bias, low=0.0, low_open=True, high=math.inf, high_open=True)


def init_mixer_(mixer: Mixer, scheme: str, bias: float) -> Mixer:
    """Apply the initialisation ``scheme`` (a :data:`MIXER_INITS` name) to ``mixer`` in place.

    ``bias``: the output bias of both weight hypernetworks for ``positive_bias`` (> 0);
    unused by ``default``.
    """
    check_mixer_init(scheme, bias)
    MIXER_INITS.get(scheme)(mixer, float(bias))
    return mixer


def mixing_gradients(mixer: Mixer, agent_qs: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """dQ_tot/dQ_i at each point: ``[B, T, N]``. Non-negative everywhere iff monotonic there."""
    qs = agent_qs.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mixer(qs, states).sum(), qs)
    return grad
