"""Random Network Distillation (Burda et al., 2018) as an intrinsic-reward source.

A fixed, randomly initialised *target* network maps inputs to features; a *predictor*
network is trained to match it on the inputs actually visited. The prediction error
(the *novelty*) shrinks on familiar inputs and stays large on unfamiliar ones, so it
serves as an exploration bonus.

As in Burda et al.:

- both networks see *normalised* inputs: each input dimension is whitened by a running
  mean and standard deviation and clipped to ``[-input_clip, input_clip]`` (5 in the
  paper), so that no raw feature scale dominates the random target's output;
- the bonus is the novelty divided by a running scale of the *discounted intrinsic
  return* (a forward filter ``R_t = gamma * R_{t-1} + novelty_t``), so that beta means
  the same thing as the predictor improves. Nothing is subtracted: novelty is a squared
  error and the scale is positive, so the bonus is never negative.

Where this module departs from the paper, and why (numbers in docs/rnd.md):

- the forward filter runs along time *within each episode* of a ``[B, T]`` batch,
  restarting at 0 at its first step, instead of along one endless stream per
  environment: batches are episodes drawn from a replay buffer, not consecutive rollouts,
  and the learner's return stops at termination, so the per-episode discounted sum is
  the intrinsic return its value function actually sees;
- the scale is the root mean square of that return, ``sqrt(var + mean^2)``, not its
  standard deviation: with one-step episodes (a matrix game) the return equals the
  novelty, whose variance is ~0 when the state never changes, and dividing by the
  standard deviation made rewards of 1e5 and more. The RMS is at least the standard
  deviation and never much smaller than the novelty itself.

Shapes follow ``[B, T, ...]``: inputs are ``[B, T, D]`` (one input per step, e.g. the
state) or ``[B, T, N, D]`` (one observation per agent, novelty averaged over agents);
masks are ``[B, T]`` (a trailing singleton, as in PyMARL's ``[B, T, 1]`` masks, is
accepted too).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import check_int, check_range, check_shape

__all__ = [
    "RunningMeanStd", "RND", "combine_rewards", "discounted_forward_returns", "shifted_moments",
]


class RunningMeanStd(nn.Module):
    """Running mean and (population) variance of a stream of samples of shape ``shape``.

    ``shape=()`` follows a scalar stream; ``shape=(D,)`` follows each of ``D`` features
    separately. The statistics are float64 buffers: they accumulate over millions of
    samples, where float32 loses precision, and being buffers they travel with
    ``state_dict()``. Before any update the mean is 0 and the variance 1, so normalising
    is a no-op.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, shape: tuple[int, ...] = (), eps: float = 1e-8) -> None:
        super().__init__()
        self.shape = tuple(check_int("shape", s, 1) for s in shape)
        self.eps = float(check_range("eps", eps, low=0.0, low_open=True))
        self.register_buffer("mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(self.shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold samples ``x [..., *shape]`` into the statistics (no sample is a no-op)."""
        if x.dim() < len(self.shape) or tuple(x.shape[x.dim() - len(self.shape):]) != self.shape:
            raise ValueError(f"x has shape {list(x.shape)}, expected [..., {', '.join(map(str, self.shape))}]")
        values = x.detach().reshape((-1,) + self.shape).to(self.mean.device)
        n = values.shape[0]
        if n == 0:
            return
        batch_mean, batch_var = shifted_moments(values)
        # Chan et al.'s pairwise combination: exact for any split of the stream and
        # stable, unlike accumulating sum and sum of squares.
        total = self.count + n
        delta = batch_mean - self.mean
        m2 = self.var * self.count + batch_var * n + delta.square() * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    @property
    def std(self) -> torch.Tensor:
        """``sqrt(var) + eps``: strictly positive, so always safe to divide by."""
        return self.var.clamp_min(0.0).sqrt() + self.eps

    @property
    def rms(self) -> torch.Tensor:
        """``sqrt(var + mean^2) + eps``: the spread of the stream around zero."""
        return (self.var.clamp_min(0.0) + self.mean.square()).sqrt() + self.eps


def shifted_moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and population variance over dim 0 of ``values [n, ...]``, as float64 ``[...]``.

    Two passes in the input's own precision instead of one in float64: a rough mean
    ``m0`` first, then the sums of ``d = values - m0`` and ``d**2``, combined in float64
    as ``mean = m0 + sum(d)/n`` and ``var = sum(d**2)/n - (sum(d)/n)**2``. Centring on
    ``m0`` is what keeps float32 exact enough: ``d`` is of the size of the spread, so the
    sums carry the spread's digits, not the offset's (a feature at 50 +- 0.01 keeps its
    variance), and the correction term is tiny. A float64 copy of a batch of states costs
    several times the statistics themselves (docs/rnd.md has the timings).
    :func:`moments_reference` is the plain float64 computation it must agree with.
    """
    if values.dim() < 1 or values.shape[0] == 0:
        raise ValueError(f"values has shape {list(values.shape)}, expected [n >= 1, ...]")
    if not values.is_floating_point():
        values = values.to(torch.float32)
    n = values.shape[0]
    m0 = values.mean(dim=0)
    d = values - m0
    s1 = d.sum(dim=0).to(torch.float64)
    s2 = d.square_().sum(dim=0).to(torch.float64)
    mean_d = s1 / n
    return m0.to(torch.float64) + mean_d, (s2 / n - mean_d.square()).clamp_min(0.0)


def moments_reference(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`shifted_moments` done plainly: ``torch.var_mean`` in float64."""
    var, mean = torch.var_mean(values.to(torch.float64), dim=0, unbiased=False)
    return mean, var


def discounted_forward_returns(reward: torch.Tensor, mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """Burda et al.'s reward forward filter along time, per episode: ``[B, T]``.

    ``R[:, t] = gamma * R[:, t-1] + reward[:, t]`` with ``R[:, -1] = 0``, i.e. the
    discounted sum of the rewards received so far in the episode. ``reward`` and the
    boolean ``mask`` are ``[B, T]``; masked steps add nothing and their return is 0.
    A loop over time: O(B*T) work and memory, exact for any ``gamma`` (a closed form
    with ``gamma**-t`` overflows for long episodes).
    """
    check_shape("mask", mask, list(reward.shape))
    if reward.dim() != 2:
        raise ValueError(f"reward has shape {list(reward.shape)}, expected [B, T]")
    gamma = float(check_range("gamma", gamma, low=0.0, high=1.0))
    valid = mask.bool()
    r = torch.where(valid, reward, torch.zeros_like(reward))
    out = torch.empty_like(r)
    running = torch.zeros_like(r[:, 0])
    for t in range(r.shape[1]):
        running = gamma * running + r[:, t]
        out[:, t] = running
    return torch.where(valid, out, torch.zeros_like(out))


def _mlp(input_dim: int, hidden_dim: int, output_dim: int, n_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = input_dim
    for _ in range(n_layers):
        # In place: the linear layer's backward does not need its output.
        layers += [nn.Linear(width, hidden_dim), nn.ReLU(inplace=True)]
        width = hidden_dim
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


def fused_adam_on_cpu() -> bool:
    """Whether this torch's fused Adam takes CPU parameters (from 2.4 on; before, CUDA only)."""
    major, minor = (int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return (major, minor) >= (2, 4)


class RND(nn.Module):
    """Target/predictor pair with the predictor's optimiser and two running normalisers.

    ``n_layers`` is the number of ReLU hidden layers of each network (both share the
    architecture ``input_dim -> hidden_dim x n_layers -> output_dim``). The two networks
    are initialised independently from the global torch RNG, so seed it first for
    reproducible runs. ``gamma`` discounts the forward filter whose scale normalises the
    bonus (pass the learner's discount: the filter then tracks the return the learner's
    value sees); ``input_clip`` bounds the whitened inputs.

    ``input_normaliser`` (per input dimension) and ``reward_normaliser`` (of the
    discounted intrinsic return) are updated only by :meth:`intrinsic_reward` and
    :meth:`reward_and_update`, from the unmasked samples of each batch, before they are
    used on it. ``state_dict()`` covers both networks and both normalisers;
    ``full_state_dict()`` adds the optimiser so that training resumes exactly.
    """

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        n_layers: int,
        lr: float,
        gamma: float = 0.99,
        input_clip: float = 5.0,
    ) -> None:
        super().__init__()
        self.input_dim = check_int("input_dim", input_dim, 1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, 1)
        self.output_dim = check_int("output_dim", output_dim, 1)
        self.n_layers = check_int("n_layers", n_layers, 1)
        self.lr = float(check_range("lr", lr, low=0.0, low_open=True))
        self.gamma = float(check_range("gamma", gamma, low=0.0, high=1.0))
        self.input_clip = float(check_range("input_clip", input_clip, low=0.0, low_open=True))

        self.target = _mlp(input_dim, hidden_dim, output_dim, n_layers)
        self.predictor = _mlp(input_dim, hidden_dim, output_dim, n_layers)
        self.target.requires_grad_(False)
        self.target.eval()
        self.input_normaliser = RunningMeanStd((input_dim,))
        self.reward_normaliser = RunningMeanStd()
        # Only the predictor's parameters: the target must stay the fixed random function
        # that defines novelty. Fused (one kernel for all parameters instead of a dozen ops
        # per parameter) where torch has it for the CPU parameters the RND is built with.
        self.optimizer = torch.optim.Adam(self.predictor.parameters(), lr=self.lr,
                                          fused=fused_adam_on_cpu() or None)

    def train(self, mode: bool = True) -> "RND":
        super().train(mode)
        # The target is a fixed function; keep it in eval mode whatever the host does.
        self.target.eval()
        return self

    # ----------------------------------------------------------------- checks
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 1:
            raise ValueError(f"x has shape {list(x.shape)}, expected [..., {self.input_dim}]")
        check_shape("x", x, [None] * (x.dim() - 1) + [self.input_dim])
        dtype = self.predictor[0].weight.dtype
        device = self.predictor[0].weight.device
        return x.to(device=device, dtype=dtype)

    def _rows(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``x [B,T,D] | [B,T,N,D]`` and ``mask [B,T] | [B,T,1]``.

        Returns the unmasked samples ``[n, D] | [n, N, D]`` cast to the network dtype,
        in the order of ``x[valid]``, and the mask as bool ``[B, T]``. Only these rows
        are scored and trained on: padding after an episode's end (most of a batch of
        short SMAC episodes) costs nothing, and whatever it holds (NaN included) never
        reaches a network.
        """
        if x.dim() not in (3, 4):
            raise ValueError(
                f"x has shape {list(x.shape)}, expected [B, T, {self.input_dim}] "
                f"or [B, T, N, {self.input_dim}]"
            )
        x = self._check_x(x)
        b, t = x.shape[:2]
        if mask.dim() == 3:
            check_shape("mask", mask, [b, t, 1])
            mask = mask.squeeze(-1)
        check_shape("mask", mask, [b, t])
        valid = (mask != 0).to(x.device)
        rows = x.reshape(b * t, *x.shape[2:]) if bool(valid.all()) else x[valid]
        return rows, valid

    @staticmethod
    def _scatter(rows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Per-row values ``[n]`` back to ``[B, T]``, 0 where ``valid`` is False."""
        out = torch.zeros(valid.shape, dtype=rows.dtype, device=rows.device)
        out[valid] = rows
        return out

    # ----------------------------------------------------------------- novelty
    def normalise_input(self, x: torch.Tensor) -> torch.Tensor:
        """Whitened, clipped input ``[..., input_dim]`` with the current statistics.

        Computed in ``x``'s dtype. The float64 mean is split into a float32 head and
        tail, ``x - head`` being exact when ``x`` is near the mean, so a feature at
        50 +- 0.01 is still whitened to float32 accuracy without a float64 copy of ``x``.
        """
        stats = self.input_normaliser
        mean = stats.mean.to(x.device)
        head = mean.to(x.dtype)
        tail = (mean - head.to(torch.float64)).to(x.dtype)
        scale = stats.std.to(x.device).reciprocal().to(x.dtype)
        z = x - head
        return z.sub_(tail).mul_(scale).clamp_(-self.input_clip, self.input_clip)

    def _error(self, x: torch.Tensor) -> torch.Tensor:
        z = self.normalise_input(x)
        with torch.no_grad():
            target = self.target(z)
        return (self.predictor(z) - target).square().mean(dim=-1)

    def novelty(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample squared prediction error ``[...]`` for ``x [..., input_dim]``,
        with the input statistics as they are (not updated)."""
        x = self._check_x(x)
        with torch.no_grad():
            return self._error(x)

    def intrinsic_reward(
        self, x: torch.Tensor, mask: torch.Tensor, update_stats: bool = True
    ) -> torch.Tensor:
        """Bonus ``[B, T]``, >= 0, zero where ``mask`` is 0.

        With ``update_stats`` (the default) both normalisers first absorb this batch's
        unmasked samples (each agent's observation counts as one input sample for
        per-agent input). Pass ``update_stats=False`` to score without changing them.
        """
        rows, valid = self._rows(x, mask)
        if update_stats:
            self._update_inputs(rows)
        return self._bonus(self.novelty(rows), valid, update_stats)

    def _update_inputs(self, rows: torch.Tensor) -> None:
        self.input_normaliser.update(rows)

    def _bonus(self, nov: torch.Tensor, valid: torch.Tensor, update_stats: bool) -> torch.Tensor:
        """Bonus ``[B, T]`` from the novelty of the unmasked rows, ``[n]`` or ``[n, N]``."""
        if nov.dim() == 2:
            nov = nov.mean(dim=-1)
        nov = self._scatter(nov.to(torch.float64), valid)
        if update_stats:
            returns = discounted_forward_returns(nov, valid, self.gamma)
            self.reward_normaliser.update(returns[valid])
        # Masked steps hold novelty 0 (scattered), so their reward is 0 too.
        return (nov / self.reward_normaliser.rms.to(nov.device)).to(self.predictor[0].weight.dtype)

    # ----------------------------------------------------------------- training
    def update(self, x: torch.Tensor, mask: torch.Tensor) -> float:
        """One Adam step of the predictor on the masked mean squared error.

        Uses the input statistics as they are. Returns the loss before the step. With
        no unmasked sample no step is taken (Adam would still advance its moments) and
        0.0 is returned.
        """
        rows, _ = self._rows(x, mask)
        return self._step(self._error(rows))

    def reward_and_update(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
        """:meth:`intrinsic_reward` then :meth:`update`, sharing one forward pass.

        The reward is the novelty *before* this step, as when RND scores collected
        experience; it equals calling the two methods in that order, at half the cost.
        """
        rows, valid = self._rows(x, mask)
        self._update_inputs(rows)
        err = self._error(rows)
        reward = self._bonus(err.detach(), valid, update_stats=True)
        return reward, self._step(err)

    def _step(self, err: torch.Tensor) -> float:
        if err.numel() == 0:
            return 0.0
        loss = err.mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # ----------------------------------------------------------------- checkpoints
    def full_state_dict(self) -> dict[str, Any]:
        """Snapshot of networks, normalisers and optimiser (deep-copied, so later
        training does not alter a snapshot held in memory)."""
        return copy.deepcopy(
            {"module": self.state_dict(), "optimizer": self.optimizer.state_dict()}
        )

    def load_full_state_dict(self, state: dict[str, Any]) -> None:
        missing = [k for k in ("module", "optimizer") if k not in state]
        if missing:
            raise ValueError(
                f"RND full state dict is missing {missing}; expected keys "
                "['module', 'optimizer'] as written by full_state_dict()"
            )
        self.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])


def combine_rewards(r_ext: torch.Tensor, r_int: torch.Tensor, beta: float) -> torch.Tensor:
    """``r_ext + beta * r_int`` with the shape of ``r_ext``.

    ``r_int`` is ``[B, T]``; ``r_ext`` may be ``[B, T]`` or PyMARL's ``[B, T, 1]``.
    Silent broadcasting of ``[B, T, 1] + [B, T]`` to ``[B, T, T]`` is refused.
    """
    beta = float(check_range("rnd_beta", beta, low=0.0))
    if r_ext.shape != r_int.shape:
        if r_ext.dim() == r_int.dim() + 1 and r_ext.shape[-1] == 1:
            check_shape("r_int", r_int, list(r_ext.shape[:-1]))
            r_int = r_int.unsqueeze(-1)
        else:
            check_shape("r_int", r_int, list(r_ext.shape))
    return r_ext + beta * r_int.to(r_ext.dtype)
