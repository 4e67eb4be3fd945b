"""Random Network Distillation (Burda et al., 2018) as an intrinsic-reward source.

A fixed, randomly initialised *target* network maps inputs to features; a *predictor*
network is trained to match it on the inputs actually visited. The prediction error
(the *novelty*) shrinks on familiar inputs and stays large on unfamiliar ones, so it
serves as an exploration bonus. The bonus is divided by a running standard deviation
of the novelty so that its scale, and hence the meaning of the coefficient beta, does
not drift as the predictor improves.

Shapes follow ``[B, T, ...]``: inputs are ``[B, T, D]`` (one input per step, e.g. the
state) or ``[B, T, N, D]`` (one observation per agent); masks are ``[B, T]`` (a
trailing singleton, as in PyMARL's ``[B, T, 1]`` masks, is accepted too).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..errors import check_bool, check_int, check_range, check_shape

__all__ = ["RunningMeanStd", "RND", "combine_rewards"]


class RunningMeanStd(nn.Module):
    """Running mean and (population) variance of a scalar stream.

    The statistics are float64 buffers: they accumulate over millions of samples, where
    float32 loses precision, and being buffers they travel with ``state_dict()``.
    Before any update the mean is 0 and the variance 1, so normalising is a no-op.
    """

    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(check_range("eps", eps, low=0.0, low_open=True))
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))
        self.register_buffer("var", torch.ones((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Fold every element of ``x`` into the statistics (empty ``x`` is a no-op)."""
        values = x.detach().reshape(-1).to(device=self.mean.device, dtype=torch.float64)
        n = values.numel()
        if n == 0:
            return
        batch_mean = values.mean()
        batch_var = values.var(unbiased=False)
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
        """``sqrt(var + mean^2) + eps``: the spread of the stream around zero.

        This is what RND divides novelty by. Novelty is non-negative, and when it is
        nearly constant (a one-state matrix game, or every state equally familiar)
        its variance is ~0: dividing by the plain std made rewards of 1e5 and more
        (seen on PyMARL2's one-step matrix game). Around zero the scale stays the
        size of the novelty itself, so the reward is O(1) either way.
        """
        return (self.var.clamp_min(0.0) + self.mean.square()).sqrt() + self.eps


def _mlp(input_dim: int, hidden_dim: int, output_dim: int, n_layers: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = input_dim
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden_dim), nn.ReLU()]
        width = hidden_dim
    layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)


class RND(nn.Module):
    """Target/predictor pair with the predictor's optimiser and a novelty normaliser.

    ``n_layers`` is the number of ReLU hidden layers of each network (both share the
    architecture ``input_dim -> hidden_dim x n_layers -> output_dim``). The two networks
    are initialised independently from the global torch RNG, so seed it first for
    reproducible runs.

    ``state_dict()`` covers both networks and the normaliser; ``full_state_dict()`` adds
    the optimiser so that training resumes exactly.
    """

    def __init__(
        self, input_dim: int, hidden_dim: int, output_dim: int, n_layers: int, lr: float,
        center: bool = False,
    ) -> None:
        super().__init__()
        # center=True subtracts the running mean novelty: in episodic tasks a bonus that is
        # positive at every step pays the agents for keeping episodes alive, and in GRF a
        # goal ends the episode (seen: beta*r_int ~ +0.1 a step, ~10 a 100-step episode,
        # against at most ~2 of extrinsic reward). Centred, only above-average novelty pays.
        self.center = check_bool("center", center)
        self.input_dim = check_int("input_dim", input_dim, 1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, 1)
        self.output_dim = check_int("output_dim", output_dim, 1)
        self.n_layers = check_int("n_layers", n_layers, 1)
        self.lr = float(check_range("lr", lr, low=0.0, low_open=True))

        self.target = _mlp(input_dim, hidden_dim, output_dim, n_layers)
        self.predictor = _mlp(input_dim, hidden_dim, output_dim, n_layers)
        self.target.requires_grad_(False)
        self.target.eval()
        self.normaliser = RunningMeanStd()
        # Only the predictor's parameters: the target must stay the fixed random function
        # that defines novelty.
        self.optimizer = torch.optim.Adam(self.predictor.parameters(), lr=self.lr)

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

    def _check_batch(
        self, x: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Validate ``x [B,T,D] | [B,T,N,D]`` and ``mask [B,T] | [B,T,1]``.

        Returns ``x`` cast to the network dtype and the mask as bool ``[B, T]``.
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
        return x, (mask != 0).to(x.device)

    # ----------------------------------------------------------------- novelty
    def _error(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.target(x)
        return (self.predictor(x) - target).square().mean(dim=-1)

    def novelty(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample squared prediction error ``[...]`` for ``x [..., input_dim]``."""
        x = self._check_x(x)
        with torch.no_grad():
            return self._error(x)

    def intrinsic_reward(
        self, x: torch.Tensor, mask: torch.Tensor, update_normaliser: bool = True
    ) -> torch.Tensor:
        """Normalised novelty ``[B, T]``, zero where ``mask`` is 0.

        The normaliser is first updated with the novelty of the unmasked samples (each
        agent's observation counts as one sample for per-agent input), then divides
        the novelty; per-agent input is averaged over agents afterwards. Pass
        ``update_normaliser=False`` to score without changing the statistics.
        """
        x, valid = self._check_batch(x, mask)
        return self._normalised(self.novelty(x), valid, update_normaliser)

    def _normalised(self, nov: torch.Tensor, valid: torch.Tensor, update_normaliser: bool) -> torch.Tensor:
        per_agent = nov.dim() == 3
        sample_mask = valid.unsqueeze(-1).expand_as(nov) if per_agent else valid
        if update_normaliser:
            self.normaliser.update(nov[sample_mask])
        scale = self.normaliser.rms.to(device=nov.device)
        shift = self.normaliser.mean.to(device=nov.device) if self.center else 0.0
        reward = ((nov.to(torch.float64) - shift) / scale).to(nov.dtype)
        if per_agent:
            reward = reward.mean(dim=-1)
        # where, not multiply: a masked slot may hold padding that yields inf/NaN.
        return torch.where(valid, reward, torch.zeros_like(reward))

    # ----------------------------------------------------------------- training
    def update(self, x: torch.Tensor, mask: torch.Tensor) -> float:
        """One Adam step of the predictor on the masked mean squared error.

        Returns the loss before the step. With no unmasked sample no step is taken
        (Adam would still advance its moments) and 0.0 is returned.
        """
        x, valid = self._check_batch(x, mask)
        return self._step(self._error(x), valid)

    def reward_and_update(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, float]:
        """:meth:`intrinsic_reward` then :meth:`update`, sharing one forward pass.

        The reward is the novelty *before* this step, as when RND scores collected
        experience; it equals calling the two methods in that order, at half the cost.
        """
        x, valid = self._check_batch(x, mask)
        err = self._error(x)
        reward = self._normalised(err.detach(), valid, update_normaliser=True)
        return reward, self._step(err, valid)

    def _step(self, err: torch.Tensor, valid: torch.Tensor) -> float:
        if not bool(valid.any()):
            return 0.0
        if err.dim() == 3:
            valid = valid.unsqueeze(-1).expand_as(err)
        loss = err[valid].mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach())

    # ----------------------------------------------------------------- checkpoints
    def full_state_dict(self) -> dict[str, Any]:
        """Snapshot of networks, normaliser and optimiser (deep-copied, so later
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
