"""The paper's single-state gradient-flow analysis (arXiv 2511.09792, section "Analysis").

Setting (the paper's Definition 1 and eqs. 7-14): one state, N agents, payoff ``y(a)``.
The parameters are the agents' local Q-tables ``q = [Q_1(.) | ... | Q_N(.)]`` and, here,
the weights of a non-monotonic mixing function, so ``theta = [q | mixer]``. The mixer is
QMIX's mixing network at a single state with the absolute value on the weights removed
(what the paper trains): one hidden layer, ``Q_tot(a) = w2 . act(W1 x(a) + b1) + b2`` with
``x(a) = (Q_1(a_1), ..., Q_N(a_N))``; the state-dependent bias is the constant ``b2``.

Loss (eq. 9/14): ``L(theta) = sum_a mu(a) (y(a) - Q_tot(a))^2`` with ``mu`` uniform
(eq. 10) or the product of per-agent softmax policies ``pi_i = softmax(Q_i / tau)``
(eqs. 12-13). Two vector fields:

* ``full``: ``-grad L``, differentiating through ``mu``'s dependence on ``q`` (eq. 16,
  the paper's formulation);
* ``semi``: ``2 sum_a mu(a) r_a grad Q_tot(a)`` with ``r_a = y(a) - Q_tot(a)``: the update
  Q-learning performs, where the sampling distribution is not differentiated.

Zero-loss points (eq. 18) are where every ``r_a = 0``; every one is a fixed point of
both fields. Their stability is read from the spectrum of the linearisation restricted to
the normal space of the zero-loss set (the row space of ``d r / d theta``; the tangent
space is its null space): the Hessian for ``full``, minus the Jacobian of the field for
``semi``.

A fact every caller should know (it is why the paper's Theorem 3 does not reproduce): at
an exact zero-loss point every term of either linearisation that involves ``mu``'s
derivatives is multiplied by some ``r_a`` and vanishes, leaving ``2 J^T diag(mu) J`` with
``J = d r / d theta``; for any full-support ``mu`` (uniform, or softmax at any
``tau > 0``) that is positive semi-definite and positive definite on the normal space.
:func:`stability` reports this Gauss-Newton form next to the autograd operator.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch.func import jacfwd, jacrev, vjp, vmap

from ..envs.matrix import resolve_payoff
from ..errors import ConfigError, check_choice, check_range
from ..numerics.igm import igm_summary
from ..registry import Registry

log = logging.getLogger(__name__)

DTYPE = torch.float64
POLICIES = ("uniform", "softmax")
GRADIENTS = ("full", "semi")

ACTIVATIONS: Registry[Callable[[torch.Tensor], torch.Tensor]] = Registry("--activation")
ACTIVATIONS.register("elu", torch.nn.functional.elu)  # QMIX's mixer nonlinearity
ACTIVATIONS.register("tanh", torch.tanh)

# Option names as the command line spells them: errors from the shared payoff parser
# would otherwise name the PyMARL config keys.
_PAYOFF_KEYS = {"env_args.preset": "--game", "env_args.payoff": "--payoff", "env_args.penalty_k": "--penalty-k"}

#: ``progress(phase, done, total)``: how far a long computation is (for a display).
Progress = Callable[[str, int, int], None]


def load_payoff(game: Optional[str] = None, payoff: Any = None, penalty_k: Optional[float] = None) -> np.ndarray:
    """The payoff tensor ``[A_1, ..., A_N]`` from a preset name or a nested list."""
    try:
        table = resolve_payoff(preset=game, payoff=payoff, penalty_k=penalty_k)
    except ConfigError as exc:
        message = str(exc)
        for key, option in _PAYOFF_KEYS.items():
            message = message.replace(key, option)
        raise ConfigError(message) from None
    if table.size < 2:
        raise ConfigError(f"--payoff={payoff!r} has a single joint action; there is nothing to coordinate")
    return table


class Game:
    """A single-state game: payoff ``y`` over joint actions in row-major order."""

    def __init__(self, payoff: Any) -> None:
        self.payoff = torch.as_tensor(np.asarray(payoff, dtype=np.float64), dtype=DTYPE)
        self.action_counts = tuple(int(s) for s in self.payoff.shape)
        self.n_agents = len(self.action_counts)
        grids = torch.meshgrid(*[torch.arange(a) for a in self.action_counts], indexing="ij")
        self.joint = torch.stack([g.reshape(-1) for g in grids], dim=-1)  # [K, N]
        self.y = self.payoff.reshape(-1)
        self.n_joint = int(self.y.numel())
        self.best = float(self.y.max())
        self.optimal = tuple(int(k) for k in torch.nonzero(self.y == self.y.max()).reshape(-1))
        strides = [int(np.prod(self.action_counts[i + 1:])) for i in range(self.n_agents)]
        self._strides = torch.tensor(strides, dtype=torch.long)

    def index(self, actions: Sequence[int] | torch.Tensor) -> torch.Tensor | int:
        """Row-major joint index of ``actions`` (``[..., N]``)."""
        if isinstance(actions, torch.Tensor):
            return (actions * self._strides).sum(-1)
        return int(sum(int(a) * s for a, s in zip(actions, self._strides.tolist())))

    def label(self, k: int) -> str:
        return "(" + ",".join(str(int(a)) for a in self.joint[k]) + ")"

    @property
    def optimum(self) -> tuple[int, ...]:
        """The first optimal joint action (the paper assumes it is unique, Definition 1)."""
        return tuple(int(a) for a in self.joint[self.optimal[0]])


class MixerModel:
    """``theta = [Q_1 | ... | Q_N | W1 (H x N, row-major) | b1 (H) | w2 (H) | b2]``."""

    def __init__(self, game: Game, hidden: int = 16, activation: str = "elu") -> None:
        if isinstance(hidden, bool) or not isinstance(hidden, int):
            raise ConfigError(f"--hidden={hidden!r} must be an integer")
        check_range("--hidden", hidden, low=1)
        self.game = game
        self.hidden = hidden
        self.activation = activation
        self._act = ACTIVATIONS.get(activation)
        counts = game.action_counts
        self.q_offsets = [int(sum(counts[:i])) for i in range(game.n_agents)]
        self.n_q = int(sum(counts))
        self._inputs = game.joint + torch.tensor(self.q_offsets, dtype=torch.long)  # [K, N] indices into q
        n, h = game.n_agents, hidden
        self._w1 = slice(self.n_q, self.n_q + h * n)
        self._b1 = slice(self._w1.stop, self._w1.stop + h)
        self._w2 = slice(self._b1.stop, self._b1.stop + h)
        self._b2 = self._w2.stop
        self.n_params = self._b2 + 1

    @property
    def q_slice(self) -> slice:
        return slice(0, self.n_q)

    @property
    def mixer_slice(self) -> slice:
        return slice(self.n_q, self.n_params)

    def q_coordinate(self, agent: int, action: int) -> int:
        """Index in ``theta`` of ``Q_agent(action)``."""
        return self.q_offsets[agent] + action

    def agent_q(self, theta: torch.Tensor) -> list[torch.Tensor]:
        return [theta[..., o:o + a] for o, a in zip(self.q_offsets, self.game.action_counts)]

    def q_tot(self, theta: torch.Tensor) -> torch.Tensor:
        """``Q_tot`` of every joint action: ``[..., K]``."""
        lead = theta.shape[:-1]
        x = theta[..., self._inputs]  # [..., K, N]
        w1 = theta[..., self._w1].reshape(*lead, self.hidden, self.game.n_agents)
        pre = torch.einsum("...kn,...hn->...kh", x, w1) + theta[..., self._b1].unsqueeze(-2)
        return torch.einsum("...kh,...h->...k", self._act(pre), theta[..., self._w2]) + theta[..., self._b2].unsqueeze(-1)

    def residuals(self, theta: torch.Tensor) -> torch.Tensor:
        """``r_a = y(a) - Q_tot(a)``: ``[..., K]``."""
        return self.game.y - self.q_tot(theta)

    def greedy(self, theta: torch.Tensor) -> torch.Tensor:
        """Each agent's greedy action (first on ties): ``[..., N]``."""
        return torch.stack([q.argmax(-1) for q in self.agent_q(theta)], dim=-1)

    def hidden_features(self, theta: torch.Tensor) -> torch.Tensor:
        """The mixer's hidden activations at every joint action: ``[K, H]`` (one theta)."""
        w1 = theta[self._w1].reshape(self.hidden, self.game.n_agents)
        return self._act(theta[self._inputs] @ w1.T + theta[self._b1])

    def initial_points(self, n: int, generator: torch.Generator, q_scale: float = 1.0) -> torch.Tensor:
        """Random starts: ``Q_i ~ N(0, q_scale^2)``, ``W1 ~ N(0, 1/N)``, ``b1 ~ N(0, 1)``,
        ``w2 ~ N(0, 1/H)``, ``b2 = 0`` (fan-in scaling, as a freshly built mixer)."""
        theta = torch.randn(n, self.n_params, generator=generator, dtype=DTYPE)
        theta[:, self.q_slice] *= q_scale
        theta[:, self._w1] /= math.sqrt(self.game.n_agents)
        theta[:, self._w2] /= math.sqrt(self.hidden)
        theta[:, self._b2] = 0.0
        return theta

    def set_output_layer(self, theta: torch.Tensor) -> torch.Tensor:
        """``theta`` with ``(w2, b2)`` replaced by the minimum-norm least-squares fit of the
        payoff given the hidden features: exact whenever the features span ``R^K``."""
        feats = torch.cat([self.hidden_features(theta), torch.ones(self.game.n_joint, 1, dtype=DTYPE)], dim=1)
        sol = torch.linalg.pinv(feats) @ self.game.y
        out = theta.clone()
        out[self._w2] = sol[:-1]
        out[self._b2] = sol[-1]
        return out


def _batched(fn: Callable[[torch.Tensor], torch.Tensor], theta: torch.Tensor) -> torch.Tensor:
    """Apply a one-point function to ``theta[..., P]``."""
    if theta.dim() == 1:
        return fn(theta)
    flat = theta.reshape(-1, theta.shape[-1])
    out = vmap(fn)(flat)
    return out.reshape(*theta.shape[:-1], *out.shape[1:])


@dataclass(frozen=True)
class Dynamics:
    """One of the paper's learning systems: loss, vector field and its linearisation."""

    model: MixerModel
    mu: str = "uniform"
    tau: float = 1.0
    gradient: str = "full"

    def __post_init__(self) -> None:
        check_choice("--mu", self.mu, POLICIES)
        check_choice("--gradient", self.gradient, GRADIENTS)
        check_range("--tau", self.tau, low=0.0, high=math.inf, low_open=True, high_open=True)

    @property
    def game(self) -> Game:
        return self.model.game

    def describe(self) -> str:
        policy = "uniform mu" if self.mu == "uniform" else f"softmax mu (tau={self.tau:g})"
        return f"{policy}, {self.gradient} gradient"

    def agent_policies(self, theta: torch.Tensor) -> list[torch.Tensor]:
        """``pi_i(. | q)`` per agent (uniform or eq. 12)."""
        qs = self.model.agent_q(theta)
        if self.mu == "uniform":
            return [torch.full_like(q, 1.0 / q.shape[-1]) for q in qs]
        return [torch.softmax(q / self.tau, dim=-1) for q in qs]

    def policy(self, theta: torch.Tensor) -> torch.Tensor:
        """Joint behaviour policy ``mu(a | q)`` (eq. 13): ``[..., K]``."""
        if self.mu == "uniform":
            return torch.full((*theta.shape[:-1], self.game.n_joint), 1.0 / self.game.n_joint, dtype=theta.dtype)
        joint = self.game.joint
        log_mu = 0.0
        for i, q in enumerate(self.model.agent_q(theta)):
            log_mu = log_mu + torch.log_softmax(q / self.tau, dim=-1)[..., joint[:, i]]
        return torch.exp(log_mu)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """Eq. 9/14: ``sum_a mu(a) r_a^2``."""
        r = self.model.residuals(theta)
        return (self.policy(theta) * r * r).sum(-1)

    def _field_one(self, theta: torch.Tensor) -> torch.Tensor:
        q_tot, pullback = vjp(self.model.q_tot, theta)
        r = self.game.y - q_tot
        mu = self.policy(theta)
        value_term = pullback(2.0 * mu * r)[0]  # 2 sum_a mu r grad Q_tot
        if self.gradient == "semi":
            return value_term
        # Full gradient adds -sum_a r_a^2 grad mu(a): the "policy gradient term" of eq. 16.
        _, mu_pullback = vjp(self.policy, theta)
        return value_term - mu_pullback(r * r)[0]

    def field(self, theta: torch.Tensor) -> torch.Tensor:
        """The vector field ``theta_dot`` (``[..., P]``)."""
        return _batched(self._field_one, theta)

    def jacobian(self, theta: torch.Tensor) -> torch.Tensor:
        """``d theta_dot / d theta`` (``[..., P, P]``); for ``full`` this is ``-Hessian``."""
        return _batched(jacfwd(self._field_one), theta)

    def operator(self, theta: torch.Tensor) -> torch.Tensor:
        """Minus the Jacobian of the field: the Hessian of ``L`` for ``full``. Positive
        eigenvalues are attracting directions."""
        return -self.jacobian(theta)

    def gauss_newton(self, theta: torch.Tensor) -> torch.Tensor:
        """``2 J^T diag(mu) J`` with ``J = d r / d theta``: what :meth:`operator` equals at
        an exact zero-loss point, computed without the terms that vanish there."""
        jac = jacrev(self.model.residuals)(theta)  # [K, P]
        return 2.0 * jac.T @ (self.policy(theta).unsqueeze(-1) * jac)


# --- flow integration ---------------------------------------------------------------

_GAMMA = 1.0 + 1.0 / math.sqrt(2.0)


@dataclass
class Flow:
    """Result of :func:`integrate` for a batch of starts."""

    theta0: torch.Tensor  # [B, P]
    theta: torch.Tensor  # [B, P] final state
    t: torch.Tensor  # [B] time reached
    accepted: torch.Tensor  # [B] accepted steps
    failed: torch.Tensor  # [B] bool: non-finite state or field, integration stopped
    times: torch.Tensor  # [B, R] time after each iteration
    q_path: torch.Tensor  # [B, R, n_q] local Q-tables after each iteration
    t_max: float = 0.0


def integrate(
    dyn: Dynamics,
    theta0: torch.Tensor,
    steps: int = 600,
    t_max: float = 1e6,
    tol: float = 1e-3,
    h0: float = 1e-3,
    progress: Optional[Progress] = None,
) -> Flow:
    """Integrate ``theta_dot = field(theta)`` from each row of ``theta0`` up to ``t_max``.

    ROS2, the L-stable second-order Rosenbrock method of Verwer et al. (1999), with its
    embedded first-order solution for step-size control (``tol`` relative and absolute),
    at most ``steps`` iterations (accepted or rejected) per start. An implicit method
    because the flow is stiff: with softmax ``mu`` a joint action of probability ``mu``
    is fitted on a time scale ``1 / mu``, many orders of magnitude slower than the greedy
    one, and an explicit method would need as many steps as that ratio to see it.
    """
    check_range("--steps", steps, low=1)
    check_range("--t-max", t_max, low=0.0, low_open=True)
    theta = theta0.detach().to(DTYPE).clone()
    b, p = theta.shape
    eye = torch.eye(p, dtype=DTYPE)
    t = torch.zeros(b, dtype=DTYPE)
    h = torch.full((b,), h0, dtype=DTYPE)
    accepted = torch.zeros(b, dtype=torch.long)
    failed = torch.zeros(b, dtype=torch.bool)
    rejected = torch.zeros(b, dtype=torch.bool)
    times, path = [t.clone()], [theta[:, dyn.model.q_slice].clone()]
    for i in range(steps):
        if progress:
            progress("integrating", i, steps)
        active = (t < t_max * (1 - 1e-12)) & ~failed
        if not bool(active.any()):
            break
        idx = torch.nonzero(active).reshape(-1)
        y, step = theta[idx], torch.minimum(h[idx], t_max - t[idx])
        f0 = dyn.field(y)
        jac = dyn.jacobian(y)
        w = eye - _GAMMA * step.view(-1, 1, 1) * jac
        lu, piv, info = torch.linalg.lu_factor_ex(w)
        k1 = torch.linalg.lu_solve(lu, piv, f0.unsqueeze(-1)).squeeze(-1)
        f1 = dyn.field(y + step.unsqueeze(-1) * k1)
        k2 = torch.linalg.lu_solve(lu, piv, (f1 - 2.0 * k1).unsqueeze(-1)).squeeze(-1)
        new = y + step.unsqueeze(-1) * (1.5 * k1 + 0.5 * k2)
        scale = tol + tol * torch.maximum(y.abs(), new.abs())
        err = ((0.5 * step.unsqueeze(-1) * (k1 + k2) / scale) ** 2).mean(-1).sqrt()
        err = torch.where((info == 0) & torch.isfinite(err) & torch.isfinite(new).all(-1), err, torch.full_like(err, math.inf))
        ok = err <= 1.0
        theta[idx[ok]] = new[ok]
        t[idx[ok]] += step[ok]
        accepted[idx[ok]] += 1
        factor = torch.clamp(0.9 / torch.sqrt(err.clamp_min(1e-10)), 0.2, 5.0)
        # No growth right after a rejection: otherwise the step size alternates between
        # rejected and accepted values and half the iterations are wasted.
        factor = torch.where(rejected[idx], factor.clamp(max=1.0), factor)
        h[idx] = step * factor
        rejected[idx] = ~ok
        # A start whose step size collapses is caught in a blow-up, not a stiff transient.
        dead = ~torch.isfinite(f0).all(-1) | (h[idx] < 1e-14 * torch.clamp(t[idx], min=1.0))
        failed[idx[dead]] = True
        times.append(t.clone())
        path.append(theta[:, dyn.model.q_slice].clone())
    if bool(failed.any()):
        log.warning("%d of %d starts stopped early (non-finite field or step size collapse)", int(failed.sum()), b)
    return Flow(theta0=theta0.detach().clone(), theta=theta, t=t, accepted=accepted, failed=failed,
                times=torch.stack(times, dim=1), q_path=torch.stack(path, dim=1), t_max=float(t_max))


# --- zero-loss points ---------------------------------------------------------------


def solve_zero_loss(
    model: MixerModel,
    theta: torch.Tensor,
    free: str = "all",
    tol: float = 1e-11,
    max_iter: int = 60,
) -> tuple[torch.Tensor, float, bool]:
    """Newton's method for ``r(theta) = 0`` with minimum-norm steps (the system is
    underdetermined), moving only ``free`` parameters ("all" or "mixer", the latter keeping
    every agent's Q-table and so its greedy action). Returns the point, ``max |r|`` and
    whether it is below ``tol * max(1, max |y|)``."""
    check_choice("free", free, ("all", "mixer"))
    cols = slice(0, model.n_params) if free == "all" else model.mixer_slice
    theta = theta.detach().to(DTYPE).clone()
    target = tol * max(1.0, float(model.game.y.abs().max()))
    r = model.residuals(theta)
    err = float(r.abs().max())
    for _ in range(max_iter):
        if err < target:
            break
        jac = jacrev(model.residuals)(theta)[:, cols]
        delta = -(torch.linalg.pinv(jac) @ r)
        step = 1.0
        for _ in range(30):  # backtracking keeps Newton from jumping to another branch
            trial = theta.clone()
            trial[cols] += step * delta
            r_trial = model.residuals(trial)
            if float(r_trial.abs().max()) < err:
                break
            step *= 0.5
        else:
            break
        theta, r, err = trial, r_trial, float(r_trial.abs().max())
    return theta, err, err < target


def constructed_q(model: MixerModel, greedy: Sequence[int], margin: float = 1.0, spread: float = 1.0) -> torch.Tensor:
    """Local Q-tables whose greedy joint action is ``greedy``: the greedy action at
    ``+margin/2``, the others evenly below ``-margin/2`` (distinct, so the mixer's input
    pairs are distinct and it can fit every payoff)."""
    parts = []
    for a_i, g in zip(model.game.action_counts, greedy):
        others = [-margin / 2 - spread * k / max(1, a_i - 1) for k in range(a_i - 1)]
        values = others[:g] + [margin / 2] + others[g:]
        parts.append(torch.tensor(values, dtype=DTYPE))
    return torch.cat(parts)


def zero_loss_point(
    model: MixerModel,
    greedy: Sequence[int],
    generator: torch.Generator,
    margin: float = 1.0,
    attempts: int = 5,
) -> torch.Tensor:
    """A zero-loss point whose agents' greedy joint action is ``greedy``: Q-tables from
    :func:`constructed_q`, a random hidden layer, the output layer fitted exactly, then
    Newton on the mixer alone. IGM-consistent exactly when ``greedy`` is optimal (on the
    zero-loss set ``Q_tot = y``)."""
    q = constructed_q(model, greedy, margin=margin)
    best = None
    for _ in range(attempts):
        theta = model.initial_points(1, generator)[0]
        theta[model.q_slice] = q
        theta = model.set_output_layer(theta)
        theta, err, ok = solve_zero_loss(model, theta, free="mixer")
        if ok:
            return theta
        best = err if best is None else min(best, err)
    raise RuntimeError(f"no zero-loss point with greedy joint action {tuple(greedy)} found "
                       f"(best max |r| = {best:.3g}); try a larger --hidden")


# --- stability ----------------------------------------------------------------------


def normal_space(model: MixerModel, theta: torch.Tensor, rtol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Orthonormal bases of the normal space (row space of ``J = d r / d theta``) and the
    tangent space (its null space) of the zero-loss set at ``theta``, and ``J``'s singular
    values. The split is the zero-loss set's own geometry, the same for every ``mu``."""
    jac = jacrev(model.residuals)(theta)  # [K, P]
    _, s, vh = torch.linalg.svd(jac, full_matrices=True)
    rank = int((s > rtol * s.max()).sum()) if s.numel() else 0
    return vh[:rank].T, vh[rank:].T, s


@dataclass
class Stability:
    """Spectral facts about one (near-)zero-loss point under one :class:`Dynamics`."""

    greedy: tuple[int, ...]
    greedy_label: str
    igm_consistent: bool
    optimal: bool
    loss: float
    max_abs_residual: float
    min_policy: float
    normal_dim: int
    tangent_dim: int
    normal_eigs: list[float]  # real parts, ascending, of the operator on the normal space
    normal_eigs_imag_max: float
    gauss_newton_eigs: list[float]  # of 2 J^T diag(mu) J on the normal space, ascending
    operator_minus_gauss_newton: float  # spectral norm; the part that carries a factor r
    tangent_leak: float  # ||operator @ tangent basis||: zero-loss directions are neutral
    tolerance: float
    # 2 min_a mu(a) sigma_min(J)^2, sigma_min the smallest non-zero singular value of
    # J = d r / d theta: a lower bound of 2 J^T diag(mu) J on the normal space that does
    # not suffer the cancellation of tiny eigenvalues next to large ones.
    certified_lower_bound: float
    resolved: bool  # the eigenvalues alone decided ``kind`` (else the bound did)
    kind: str  # stable | saddle | marginal
    paper_checks: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def classify(eigs: Sequence[float], tolerance: float) -> str:
    """``stable`` if every normal eigenvalue of the operator is above ``tolerance``,
    ``saddle`` if one is below ``-tolerance``, else ``marginal`` (not resolved)."""
    eigs = list(eigs)
    if not eigs:
        return "marginal"
    if min(eigs) < -tolerance:
        return "saddle"
    return "stable" if min(eigs) > tolerance else "marginal"


def _paper_checks(dyn: Dynamics, theta: torch.Tensor, op: torch.Tensor, greedy: tuple[int, ...]) -> list[dict]:
    """The quadratic forms the paper's proofs compute, next to the true ones.

    IGM-violating points (Theorem 3, eqs. 20-21): ``v = e_{i,u*_i} - e_{i,g_i}`` for each
    agent whose greedy action ``g_i`` differs from the optimum's, predicted
    ``v^T H v ~ -(2/tau) (y(u*) - y(g))``. IGM-consistent points (Theorem 2, eq. 19):
    ``v = e_{i,u'} - e_{i,u*_i}`` for every other action ``u'``, where the paper's
    expression is ``(1/tau) sum_a mu(a) [(1[a_i=u'] - pi_i(u')) - (1[a_i=u*_i] - pi_i(u*_i))]^2``.
    """
    game, model = dyn.game, dyn.model
    star = game.optimum
    checks = []
    y_star = float(game.payoff[star])
    y_g = float(game.payoff[greedy])
    mu = dyn.policy(theta)
    pis = dyn.agent_policies(theta)

    def quad(agent: int, to: int, frm: int) -> tuple[float, float]:
        v = torch.zeros(model.n_params, dtype=DTYPE)
        v[model.q_coordinate(agent, to)] += 1.0
        v[model.q_coordinate(agent, frm)] -= 1.0
        return float(v @ op @ v), float(v.norm())

    if greedy != star:
        for i, (g_i, u_i) in enumerate(zip(greedy, star)):
            if g_i == u_i:
                continue
            actual, _ = quad(i, u_i, g_i)
            predicted = -(2.0 / dyn.tau) * (y_star - y_g) if dyn.mu == "softmax" else None
            checks.append({"theorem": 3, "agent": i, "direction": f"e[{i},{u_i}] - e[{i},{g_i}]",
                           "actual": actual, "paper": predicted})
    else:
        joint = game.joint
        for i, u_i in enumerate(star):
            for u in range(game.action_counts[i]):
                if u == u_i:
                    continue
                actual, _ = quad(i, u, u_i)
                paper = None
                if dyn.mu == "softmax":
                    pi = pis[i]
                    bracket = ((joint[:, i] == u).to(DTYPE) - pi[u]) - ((joint[:, i] == u_i).to(DTYPE) - pi[u_i])
                    paper = float((mu * bracket * bracket).sum() / dyn.tau)
                checks.append({"theorem": 2, "agent": i, "direction": f"e[{i},{u}] - e[{i},{u_i}]",
                               "actual": actual, "paper": paper})
    return checks


def stability(dyn: Dynamics, theta: torch.Tensor) -> Stability:
    """Linear stability of a (near-)zero-loss point: the operator (Hessian for ``full``,
    minus the field's Jacobian for ``semi``) restricted to the normal space.

    The tolerance below which an eigenvalue counts as unresolved is ten times the size of
    the operator's part that carries a residual factor (numerical noise at a point where
    ``r`` is ~1e-12) plus ``1e-12`` of its scale."""
    model, game = dyn.model, dyn.game
    theta = theta.detach().to(DTYPE)
    op = dyn.operator(theta)
    gn = dyn.gauss_newton(theta)
    normal, tangent, sing = normal_space(model, theta)
    restricted = normal.T @ op @ normal
    eig = torch.linalg.eigvals(restricted) if restricted.numel() else torch.zeros(0, dtype=torch.complex128)
    order = torch.argsort(eig.real)
    eig = eig[order]
    # Squared singular values of sqrt(2 mu) J N rather than eigenvalues of the formed
    # matrix: the latter lose eigenvalues ~1e-17 of the largest to cancellation.
    weighted = torch.sqrt(2.0 * dyn.policy(theta)).unsqueeze(-1) * jacrev(model.residuals)(theta)
    gn_eig = (torch.linalg.svdvals(weighted @ normal) ** 2).flip(0) if restricted.numel() else torch.zeros(0, dtype=DTYPE)
    diff = float(torch.linalg.matrix_norm(op - gn, ord=2))
    scale = float(torch.linalg.matrix_norm(op, ord=2))
    tolerance = 10.0 * diff + 1e-12 * max(1.0, scale)
    greedy = tuple(int(a) for a in model.greedy(theta))
    r = model.residuals(theta)
    q_table = model.q_tot(theta).reshape(game.action_counts)
    igm = _igm_facts(model, theta, q_table)
    normal_eigs = [float(x) for x in eig.real]
    min_policy = float(dyn.policy(theta).min())
    bound = 2.0 * min_policy * float(sing[normal.shape[1] - 1]) ** 2 if normal.shape[1] else 0.0
    kind = classify(normal_eigs, tolerance)
    resolved = kind != "marginal"
    on_zero_loss_set = float(r.abs().max()) <= 1e-9 * max(1.0, float(game.y.abs().max()))
    if not resolved and on_zero_loss_set and bound > 0.0:
        # Eigenvalues below resolution, but at an exact zero-loss point the operator IS
        # 2 J^T diag(mu) J, whose normal-space spectrum is at least ``bound``.
        kind = "stable"
    return Stability(
        greedy=greedy,
        greedy_label=game.label(game.index(greedy)),
        igm_consistent=igm["igm_consistent"],
        optimal=igm["greedy_optimal"],
        loss=float(dyn.loss(theta)),
        max_abs_residual=float(r.abs().max()),
        min_policy=min_policy,
        normal_dim=int(normal.shape[1]),
        tangent_dim=int(tangent.shape[1]),
        normal_eigs=normal_eigs,
        normal_eigs_imag_max=float(eig.imag.abs().max()) if eig.numel() else 0.0,
        gauss_newton_eigs=[float(x) for x in gn_eig],
        operator_minus_gauss_newton=diff,
        tangent_leak=float(torch.linalg.matrix_norm(op @ tangent, ord=2)) if tangent.numel() else 0.0,
        tolerance=tolerance,
        certified_lower_bound=bound,
        resolved=resolved,
        kind=kind,
        paper_checks=_paper_checks(dyn, theta, op, greedy),
    )


# --- outcomes -----------------------------------------------------------------------


def _igm_facts(model: MixerModel, theta: torch.Tensor, q_table: torch.Tensor) -> dict:
    """igm_summary on a possibly ragged game: agents padded to the largest action count,
    padding marked unavailable."""
    game = model.game
    width = max(game.action_counts)
    agent_q = torch.zeros(game.n_agents, width, dtype=DTYPE)
    avail = torch.zeros(game.n_agents, width, dtype=DTYPE)
    for i, q in enumerate(model.agent_q(theta)):
        agent_q[i, :q.shape[-1]] = q
        avail[i, :q.shape[-1]] = 1.0
    table = torch.zeros([width] * game.n_agents, dtype=DTYPE)
    table[tuple(slice(0, a) for a in game.action_counts)] = q_table
    return igm_summary(table, agent_q, avail=avail, payoff=game.payoff)


OUTCOMES = ("IGM-consistent, optimal", "IGM-consistent, suboptimal", "IGM-violating")


def outcome(dyn: Dynamics, theta: torch.Tensor, fit_tol: float = 1e-6) -> dict:
    """Where one start ended: greedy joint action, IGM, optimality, losses, category."""
    model, game = dyn.model, dyn.game
    theta = theta.detach()
    q_table = model.q_tot(theta).reshape(game.action_counts)
    facts = _igm_facts(model, theta, q_table)
    r = model.residuals(theta)
    if facts["igm_consistent"]:
        category = OUTCOMES[0] if facts["greedy_optimal"] else OUTCOMES[1]
    else:
        category = OUTCOMES[2]
    return {
        "greedy": list(facts["greedy_joint"]),
        "greedy_label": game.label(game.index(facts["greedy_joint"])),
        "igm_consistent": bool(facts["igm_consistent"]),
        "optimal": bool(facts["greedy_optimal"]),
        "category": category,
        "loss": float(dyn.loss(theta)),
        "max_abs_residual": float(r.abs().max()),
        "fitted": bool(float(r.abs().max()) < fit_tol * max(1.0, float(game.y.abs().max()))),
        "min_policy": float(dyn.policy(theta).min()),
        "q_range": float(max(float(q.max() - q.min()) for q in model.agent_q(theta))),
    }


def advantage_coordinates(game: Game, q: torch.Tensor, offsets: Sequence[int]) -> torch.Tensor:
    """``d_i = Q_i(u*_i) - max_{b != u*_i} Q_i(b)`` for every agent (``[..., N]``): positive
    for all agents exactly when the greedy joint action is the optimum ``u*``."""
    out = []
    for i, (o, a, u) in enumerate(zip(offsets, game.action_counts, game.optimum)):
        qi = q[..., o:o + a]
        others = torch.cat([qi[..., :u], qi[..., u + 1:]], dim=-1)
        out.append(qi[..., u] - others.max(-1).values if others.shape[-1] else torch.zeros_like(qi[..., u]))
    return torch.stack(out, dim=-1)


# --- the whole analysis -------------------------------------------------------------


@dataclass
class AnalysisConfig:
    payoff: np.ndarray
    mu: str = "uniform"
    tau: float = 0.5
    gradient: str = "full"
    starts: int = 64
    steps: int = 600
    seed: int = 0
    hidden: int = 16
    activation: str = "elu"
    t_max: float = 1e6
    tol: float = 1e-3
    q_scale: float = 1.0
    polish_below: float = 1e-3  # endpoints with max |r| below this are polished onto M


@dataclass
class Analysis:
    config: AnalysisConfig
    game: Game
    dynamics: Dynamics
    flow: Flow
    outcomes: list[dict]
    endpoint_points: list[Stability]  # zero-loss points reached from flow endpoints
    endpoint_start: list[int]  # which start each came from
    constructed: list[Stability]  # one zero-loss point per greedy joint action

    def fractions(self) -> dict:
        n = max(1, len(self.outcomes))
        count = lambda pred: sum(1 for o in self.outcomes if pred(o)) / n  # noqa: E731
        return {
            "igm_consistent_and_optimal": count(lambda o: o["igm_consistent"] and o["optimal"]),
            "igm_consistent": count(lambda o: o["igm_consistent"]),
            "greedy_optimal": count(lambda o: o["optimal"]),
            "fitted_every_joint_action": count(lambda o: o["fitted"]),
            # Baselines for the two above: how many starts were already greedy-optimal,
            # and how many never changed their greedy joint action.
            "initially_greedy_optimal": count(lambda o: o["initial_optimal"]),
            "kept_initial_greedy": count(lambda o: o["initial_greedy"] == o["greedy"]),
            "failed": float(self.flow.failed.float().mean()),
        }

    def summary(self) -> dict:
        cfg = self.config
        by_category = {c: sum(1 for o in self.outcomes if o["category"] == c) for c in OUTCOMES}
        by_greedy: dict[str, int] = {}
        for o in self.outcomes:
            by_greedy[o["greedy_label"]] = by_greedy.get(o["greedy_label"], 0) + 1
        reached: dict[str, dict[str, int]] = {}
        for s in self.endpoint_points:
            key = "IGM-consistent" if s.igm_consistent else "IGM-violating"
            reached.setdefault(key, {}).setdefault(s.kind, 0)
            reached[key][s.kind] += 1
        t = self.flow.t
        return {
            "game": self.game.payoff.tolist(),
            "optimum": self.game.label(self.game.optimal[0]),
            "mu": cfg.mu,
            "tau": cfg.tau if cfg.mu == "softmax" else None,
            "gradient": cfg.gradient,
            "mixer": {"hidden": cfg.hidden, "activation": cfg.activation, "parameters": self.dynamics.model.n_params},
            "starts": cfg.starts,
            "steps": cfg.steps,
            "seed": cfg.seed,
            "t_max": cfg.t_max,
            "tol": cfg.tol,
            "time_reached": {"min": float(t.min()), "median": float(t.median()), "max": float(t.max())},
            "reached_t_max": int((t >= cfg.t_max * (1 - 1e-9)).sum()),
            "fractions": self.fractions(),
            "outcomes": by_category,
            "greedy_joint_actions": dict(sorted(by_greedy.items())),
            "zero_loss_points_reached": reached,
            "constructed_zero_loss_points": [s.to_dict() for s in self.constructed],
            "endpoint_zero_loss_points": [dict(s.to_dict(), start=k) for s, k in zip(self.endpoint_points, self.endpoint_start)],
            "per_start": self.outcomes,
        }


def analyse(cfg: AnalysisConfig, progress: Optional[Progress] = None) -> Analysis:
    """Integrate the flow from ``cfg.starts`` random points, polish endpoints that are near
    the zero-loss set onto it and classify them, and classify one constructed zero-loss
    point per greedy joint action. ``progress(phase, done, total)`` is told how far it is."""
    check_range("--starts", cfg.starts, low=1)
    check_range("--tol", cfg.tol, low=0.0, low_open=True)
    game = Game(cfg.payoff)
    model = MixerModel(game, hidden=cfg.hidden, activation=cfg.activation)
    dyn = Dynamics(model, mu=cfg.mu, tau=cfg.tau, gradient=cfg.gradient)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    theta0 = model.initial_points(int(cfg.starts), gen, q_scale=cfg.q_scale)
    log.info("integrating %d starts (%s), up to %d steps, t_max %g", cfg.starts, dyn.describe(), cfg.steps, cfg.t_max)
    flow = integrate(dyn, theta0, steps=int(cfg.steps), t_max=cfg.t_max, tol=cfg.tol, progress=progress)
    outcomes = [outcome(dyn, th) for th in flow.theta]
    for o, g0 in zip(outcomes, model.greedy(theta0)):
        o["initial_greedy"] = [int(a) for a in g0]
        o["initial_optimal"] = int(game.index(g0)) in game.optimal

    endpoint_points, endpoint_start = [], []
    polish_limit = cfg.polish_below * max(1.0, float(game.y.abs().max()))
    for k, (th, o) in enumerate(zip(flow.theta, outcomes)):
        if progress:
            progress("polishing endpoints", k, len(outcomes))
        if bool(flow.failed[k]) or o["max_abs_residual"] > polish_limit:
            continue
        point, _, ok = solve_zero_loss(model, th)
        if ok and tuple(int(a) for a in model.greedy(point)) == tuple(o["greedy"]):
            endpoint_points.append(stability(dyn, point))
            endpoint_start.append(k)
    log.info("%d of %d endpoints polished onto the zero-loss set", len(endpoint_points), cfg.starts)

    constructed = []
    for k in range(game.n_joint):
        if progress:
            progress("classifying constructed points", k, game.n_joint)
        greedy = tuple(int(a) for a in game.joint[k])
        constructed.append(stability(dyn, zero_loss_point(model, greedy, gen)))
    return Analysis(cfg, game, dyn, flow, outcomes, endpoint_points, endpoint_start, constructed)
