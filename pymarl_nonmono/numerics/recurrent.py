"""Unrolling a recurrent agent network over a whole batch of episodes.

PyMARL-style agents are ``q = head(norm(GRUCell(relu(encoder(x)), h)))`` applied one
time step at a time. Learning needs every step of a ``[B, T, N, D]`` batch; only the
GRU cell depends on the previous step, so the encoder and the head can run as one
matrix product over all ``B*T*N`` rows instead of ``T`` small ones.
:func:`unroll_gru_reference` is the plain step-by-step loop that :func:`unroll_gru`
must agree with.

Shapes: inputs ``[B, T, N, D]`` (batch, time, agents, features), Q-values
``[B, T, N, A]``, hidden states ``[B, N, H]``. Inputs may also be given as blocks of
features that would be concatenated (observation, last action, agent id), each
``[B|1, T|1, N, D_k]``: the encoder is then applied block by block and the sum taken,
so a constant block (the agent id, ``[1, 1, N, N]``) costs one small product and the
``[B, T, N, D]`` concatenation, a copy as large as the observations, is never built.

Episodes of a batch have different lengths; the batch is as long as its longest one and
the rest is padding. Given ``lengths`` ``[B]`` (steps of each episode, the rest padding),
the GRU and the head run on real steps only -- episodes sorted longest first, so the
episodes still running at step ``t`` are a prefix of the rows -- and the padded steps'
Q-values are 0 (with under a tenth of the rows padding, :data:`RAGGED_BELOW`, everything is
computed and the padding zeroed after). Real SMAC batches are mostly padding (a few long
episodes set the length), so this is where a learner update's time goes down; the values
on real steps are the same as without ``lengths``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import check_shape
from .fused_gru import check_kernel, gru_steps, load_error, supports

__all__ = ["GRUAgentParts", "real_steps", "unroll_gru", "zero_padding"]

Inputs = Union[torch.Tensor, Sequence[torch.Tensor]]


@dataclass(frozen=True)
class GRUAgentParts:
    """The modules of a GRU agent, in the order its forward applies them."""

    encoder: nn.Linear
    cell: nn.GRUCell
    head: nn.Linear
    norm: Optional[nn.Module] = None

    def __post_init__(self) -> None:
        if not isinstance(self.encoder, nn.Linear) or not isinstance(self.head, nn.Linear):
            raise TypeError("encoder and head must be nn.Linear")
        if not isinstance(self.cell, nn.GRUCell):
            raise TypeError(f"cell must be nn.GRUCell, got {type(self.cell).__name__}")
        if self.encoder.out_features != self.cell.input_size or self.cell.hidden_size != self.head.in_features:
            raise ValueError(
                f"sizes do not chain: encoder -> {self.encoder.out_features}, cell {self.cell.input_size} -> "
                f"{self.cell.hidden_size}, head from {self.head.in_features}"
            )

    def _check(self, inputs: Inputs, h0: Optional[torch.Tensor]) -> tuple[list[torch.Tensor], tuple[int, int, int]]:
        """Blocks as a list, and the ``(B, T, N)`` they broadcast to; the initial hidden
        state ``[B*N, H]``."""
        blocks = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
        if not blocks or any(block.dim() != 4 for block in blocks):
            raise ValueError(
                f"inputs have shapes {[list(block.shape) for block in blocks]}, expected "
                f"[B, T, N, D] blocks whose D sum to {self.encoder.in_features}"
            )
        width = sum(block.shape[-1] for block in blocks)
        try:
            b, t, n = torch.broadcast_shapes(*(block.shape[:-1] for block in blocks))
        except RuntimeError:
            b = t = n = -1
        if width != self.encoder.in_features or b < 0:
            raise ValueError(
                f"inputs have shapes {[list(block.shape) for block in blocks]}, expected "
                f"[B, T, N, D] blocks whose D sum to {self.encoder.in_features}"
            )
        return blocks, (b, t, n)

    def _h0(self, h0: Optional[torch.Tensor], like: torch.Tensor, b: int, n: int) -> torch.Tensor:
        hidden = self.cell.hidden_size
        if h0 is None:
            return like.new_zeros(b * n, hidden)
        check_shape("h0", h0, [b, n, hidden])
        return h0.reshape(b * n, hidden)

    def _encode(self, blocks: list[torch.Tensor], b: int, t: int, n: int) -> torch.Tensor:
        """``encoder(cat(blocks))`` as ``[B, T, N, H]``, without building the concatenation.

        Full-size blocks are chained as matrix products accumulated inside BLAS
        (``addmm``); broadcast blocks (the agent id) are folded with the bias into one
        ``[.., N, H]`` term, added once.
        """
        weight, bias = self.encoder.weight, self.encoder.bias
        hidden = weight.shape[0]
        out = None
        small = bias
        start = 0
        for block in blocks:
            w = weight[:, start:start + block.shape[-1]]
            start += block.shape[-1]
            if tuple(block.shape[:-1]) == (b, t, n):
                rows = block.reshape(b * t * n, -1)
                out = rows @ w.t() if out is None else torch.addmm(out, rows, w.t())
            else:
                term = F.linear(block, w)
                small = term if small is None else small + term
        if out is None:
            return small.expand(b, t, n, hidden)
        out = out.view(b, t, n, hidden)
        return out if small is None else out + small

    def _encode_rows(self, blocks: list[torch.Tensor], episode: torch.Tensor, step: torch.Tensor,
                     agent: torch.Tensor) -> torch.Tensor:
        """``encoder(cat(blocks))`` at the rows ``(episode, step, agent)`` only, ``[P, H]``:
        each block's rows are gathered (a broadcast block's from its size-1 dimensions)
        and the products accumulated as in :meth:`_encode`."""
        weight = self.encoder.weight
        out, start = None, 0
        for block in blocks:
            bb, tb, nb, width = block.shape
            index = torch.zeros_like(episode)
            for size, stride, position in ((bb, tb * nb, episode), (tb, nb, step), (nb, 1, agent)):
                if size > 1:
                    index = index + position * stride
            rows = block.reshape(bb * tb * nb, width).index_select(0, index)
            w = weight[:, start:start + width]
            start += width
            out = rows @ w.t() if out is None else torch.addmm(out, rows, w.t())
        return out if self.encoder.bias is None else out + self.encoder.bias

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h if self.norm is None else self.norm(h))

def unroll_gru(
    parts: GRUAgentParts,
    inputs: Inputs,
    h0: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
    kernel: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Q-values ``[B, T, N, A]`` and the last hidden state ``[B, N, H]``.

    ``inputs`` is ``[B, T, N, D]`` or a sequence of feature blocks (module docstring);
    ``h0`` ``[B, N, H]`` defaults to zeros. ``lengths`` ``[B]`` (integers in ``1..T``):
    each episode's real steps; its later steps are skipped, their Q-values are 0 and the
    last hidden state is the one after its last real step. Encoder and head run once
    over all steps; the time loop holds only the GRU cell. ``kernel`` (:data:`.fused_gru.KERNELS`)
    says whether that loop may be :func:`.fused_gru.gru_steps` (``auto``: where it applies),
    must be (``fused``) or must be ``GRUCell`` (``torch``).
    """
    check_kernel(kernel)
    blocks, (b, t, n) = parts._check(inputs, h0)
    running = _running_episodes(lengths, b, t)
    if running is not None and sum(running) < RAGGED_BELOW * b * t:
        return _unroll_ragged(parts, blocks, (b, t, n), h0, lengths, running, kernel)
    h = parts._h0(h0, blocks[0], b, n)
    encoded = F.relu(parts._encode(blocks, b, t, n))
    steps = encoded.transpose(0, 1).reshape(t * b * n, -1)
    stacked = _run_cell(parts.cell, steps, [b * n] * t, h, kernel).view(t, b * n, -1)
    h = stacked[-1]
    # The head runs time-major, on the stacked states as they are, and only its narrower
    # output is transposed back.
    q = parts._head(stacked).view(t, b, n, -1).transpose(0, 1).contiguous()
    if running is None:
        return q, h.view(b, n, -1)
    # Too little padding to be worth skipping: computed, then given the values skipping gives.
    q = zero_padding(q, lengths)
    last = stacked[(lengths - 1).repeat_interleave(n), torch.arange(b * n, device=lengths.device)]
    return q, last.view(b, n, -1)


def _run_cell(cell: nn.GRUCell, x: torch.Tensor, rows: Sequence[int], h: torch.Tensor, kernel: str) -> torch.Tensor:
    """``cell`` over packed steps (``x`` ``[P, D]``, step ``s`` the ``rows[s]`` first rows of
    the state; :func:`.fused_gru.gru_steps`): hidden states ``[P, H]``."""
    if kernel != "torch" and supports(cell, x, h):
        return gru_steps(cell, x, rows, h)
    if kernel == "fused":
        raise RuntimeError("gru_kernel=fused, but the fused GRU kernel cannot run here: " + (
            load_error() or f"it needs float32 tensors on the CPU and a GRUCell with biases "
                            f"(got {x.dtype} on {x.device}, bias={cell.bias})"))
    hidden = []
    for step, r in zip(x.split(list(rows)), rows):
        h = cell(step, h[:r])
        hidden.append(h)
    return torch.cat(hidden, dim=0)


def real_steps(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, steps]`` bool: step ``t`` of episode ``b`` is real (``t < lengths[b]``)."""
    return torch.arange(steps, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


def zero_padding(values: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
    """``values`` ``[B, T, ...]`` with each episode's steps from ``lengths[b]`` on set to 0,
    as :func:`unroll_gru` leaves them (unchanged when ``lengths`` is None)."""
    if lengths is None:
        return values
    real = real_steps(lengths, values.shape[1])
    real = real.view(*real.shape, *([1] * (values.dim() - 2)))
    return torch.where(real, values, torch.zeros_like(values))


#: Below this fraction of real rows the unroll skips the padding; above it, sorting and
#: gathering the rows cost more than the padding they save (measured on a CPU: break-even
#: near 0.9 at 3s5z_vs_3s6z's size, 8% slower with a single row of padding).
RAGGED_BELOW = 0.9


def _running_episodes(lengths: Optional[torch.Tensor], b: int, t: int) -> Optional[list[int]]:
    """How many episodes are still running at each step, longest first (a Python list: the
    loop slices by it), or None when every episode runs all ``t`` steps."""
    if lengths is None:
        return None
    check_shape("lengths", lengths, [b])
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be integers, got {lengths.dtype}")
    shortest, longest = int(lengths.min()), int(lengths.max())
    if shortest < 1 or longest > t:
        raise ValueError(f"lengths must lie in 1..{t} (the inputs' steps), got {shortest}..{longest}")
    if shortest == t:
        return None
    steps = torch.arange(longest, device=lengths.device)
    return (lengths.unsqueeze(0) > steps.unsqueeze(1)).sum(1).tolist()


def _unroll_ragged(parts: GRUAgentParts, blocks: list[torch.Tensor], dims: tuple[int, int, int],
                   h0: Optional[torch.Tensor], lengths: torch.Tensor, running: list[int],
                   kernel: str) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unroll_gru` on real steps only.

    The real rows are gathered once into a packed, step-major ``[P, D]`` layout (step 0's
    rows, then step 1's, ...), episodes longest first within a step: the ``running[s]``
    episodes still going at step ``s`` are then the first rows of the state carried from
    step ``s - 1``, and the cell runs on that prefix. Encoder and head run on the ``P``
    packed rows; Q-values are scattered back into zeros, in the inputs' order.
    """
    b, t, n = dims
    device = lengths.device
    order = torch.argsort(lengths, descending=True, stable=True)
    rows_per_step = [episodes * n for episodes in running]
    steps = len(running)
    per_step = torch.tensor(rows_per_step, device=device)
    starts = torch.cumsum(per_step, 0) - per_step
    step = torch.repeat_interleave(torch.arange(steps, device=device), per_step)  # [P]
    within = torch.arange(step.shape[0], device=device) - starts[step]
    episode, agent = order[within // n], within % n
    encoded = F.relu(parts._encode_rows(blocks, episode, step, agent))

    h = parts._h0(None if h0 is None else h0.index_select(0, order), blocks[0], b, n)
    packed = _run_cell(parts.cell, encoded, rows_per_step, h, kernel)
    q_packed = parts._head(packed)
    q = q_packed.new_zeros(b * t * n, q_packed.shape[-1]).index_copy(0, (episode * t + step) * n + agent, q_packed)
    # Each row's state after its episode's last real step: sorted row j*N + a of that step.
    sorted_rows = torch.arange(b * n, device=device)
    last_step = lengths.index_select(0, order).repeat_interleave(n) - 1
    last = packed.index_select(0, starts[last_step] + sorted_rows).view(b, n, -1)
    return q.view(b, t, n, -1), last.index_select(0, torch.argsort(order))


def unroll_gru_reference(
    parts: GRUAgentParts, inputs: Inputs, h0: Optional[torch.Tensor] = None,
    lengths: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unroll_gru` one step at a time on the concatenated input, as the agent's
    own forward does it; with ``lengths``, every step is computed and the padded ones
    zeroed afterwards."""
    blocks, (b, t, n) = parts._check(inputs, h0)
    h = parts._h0(h0, blocks[0], b, n)
    x_all = torch.cat([block.expand(b, t, n, -1) for block in blocks], dim=-1)
    qs, hs = [], []
    for step in range(t):
        x = F.relu(parts.encoder(x_all[:, step].reshape(b * n, -1)))
        h = parts.cell(x, h)
        qs.append(parts._head(h).view(b, n, -1))
        hs.append(h.view(b, n, -1))
    q, h_last = torch.stack(qs, dim=1), h.view(b, n, -1)
    if lengths is not None:
        q = zero_padding(q, lengths)
        h_last = torch.stack([hs[int(length) - 1][episode] for episode, length in enumerate(lengths)])
    return q, h_last
