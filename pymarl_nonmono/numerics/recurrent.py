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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import check_shape

__all__ = ["GRUAgentParts", "unroll_gru", "unroll_gru_reference"]

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

    def _head(self, h: torch.Tensor) -> torch.Tensor:
        return self.head(h if self.norm is None else self.norm(h))

def unroll_gru(parts: GRUAgentParts, inputs: Inputs, h0: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Q-values ``[B, T, N, A]`` and the last hidden state ``[B, N, H]``.

    ``inputs`` is ``[B, T, N, D]`` or a sequence of feature blocks (module docstring);
    ``h0`` ``[B, N, H]`` defaults to zeros. Encoder and head run once over all steps;
    the time loop holds only the GRU cell. Steps are taken with ``unbind`` rather than
    by indexing, so backpropagation stacks one gradient instead of building a
    full-size zero gradient per step.
    """
    blocks, (b, t, n) = parts._check(inputs, h0)
    h = parts._h0(h0, blocks[0], b, n)
    encoded = F.relu(parts._encode(blocks, b, t, n))
    steps = encoded.transpose(0, 1).reshape(t, b * n, -1).unbind(0)
    hidden = []
    for x in steps:
        h = parts.cell(x, h)
        hidden.append(h)
    # The head runs time-major, on the stacked states as they are, and only its narrower
    # output is transposed back.
    q = parts._head(torch.stack(hidden, dim=0)).view(t, b, n, -1).transpose(0, 1).contiguous()
    return q, h.view(b, n, -1)


def unroll_gru_reference(
    parts: GRUAgentParts, inputs: Inputs, h0: Optional[torch.Tensor] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`unroll_gru` one step at a time on the concatenated input, as the agent's
    own forward does it."""
    blocks, (b, t, n) = parts._check(inputs, h0)
    h = parts._h0(h0, blocks[0], b, n)
    x_all = torch.cat([block.expand(b, t, n, -1) for block in blocks], dim=-1)
    qs = []
    for step in range(t):
        x = F.relu(parts.encoder(x_all[:, step].reshape(b * n, -1)))
        h = parts.cell(x, h)
        qs.append(parts._head(h).view(b, n, -1))
    return torch.stack(qs, dim=1), h.view(b, n, -1)
