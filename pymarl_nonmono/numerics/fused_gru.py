"""A GRU unrolled over many steps on the CPU, with its gates fused: what torch's ``GRUCell``
computes, in about half the time of a forward and backward at PyMARL sizes.

Why: per step, ``GRUCell`` on the CPU runs two matrix products and about ten element-wise
kernels, and autograd records each with its own fresh buffers; at a few hundred rows of width
64 the element-wise part and autograd's bookkeeping cost more than the products (docs/performance.md).
Here each step is the two products (torch) plus one pass over the gates (``fused_gru.c``), and
the whole unroll is a single autograd node whose backward walks the steps in reverse with one
more pass per step and the four products of the gradients.

Steps are given packed, step-major (:func:`gru_steps`): step ``s`` has ``rows[s]`` rows, a
prefix of step ``s - 1``'s (episodes sorted longest first), which covers both the dense unroll
(every step all rows) and the padding-skipping one of :mod:`.recurrent`.

The kernels are a C extension built with the package (``setup.py``). Where it was not built
(no C compiler at install time, another platform), where tensors are not float32 on the CPU, or
for a cell without biases, :func:`supports` is false and callers use ``GRUCell``.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Optional, Sequence

import torch
from torch import nn

from ..errors import check_choice

__all__ = ["KERNELS", "check_kernel", "gru_steps", "load_error", "supports"]

#: Values of the ``gru_kernel`` setting: ``auto`` uses the fused kernel where it applies and
#: ``GRUCell`` elsewhere; ``fused`` requires it (an error where it cannot run); ``torch`` never
#: uses it.
KERNELS = ("auto", "fused", "torch")

_library: Optional[ctypes.CDLL] = None
_load_error: Optional[str] = None
_loaded = False
_load_lock = threading.Lock()


def _load() -> ctypes.CDLL:
    from . import _fused_gru  # built by setup.py from fused_gru.c

    library = ctypes.CDLL(_fused_gru.__file__)
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.gru_step_forward.argtypes = [pointer] * 7 + [size, size]
    library.gru_step_forward.restype = None
    library.gru_step_backward.argtypes = [pointer] * 7 + [size, size]
    library.gru_step_backward.restype = None
    return library


def _kernels() -> Optional[ctypes.CDLL]:
    """The compiled kernels, loaded on first use (None, with :func:`load_error` saying why, when
    the extension is missing or unusable). Threads loading at once wait for one load."""
    global _library, _load_error, _loaded
    if _loaded:
        return _library
    with _load_lock:
        if not _loaded:
            try:
                _library = _load()
            except (ImportError, OSError) as error:
                _load_error = (f"the compiled extension pymarl_nonmono.numerics._fused_gru is not there ({error}); "
                               f"reinstall pymarl-nonmono where a C compiler is available to build it")
            except AttributeError as error:  # built, but without the kernels' symbols
                _load_error = (f"the compiled extension pymarl_nonmono.numerics._fused_gru lacks its kernels "
                               f"({error}); reinstall pymarl-nonmono to rebuild it")
            _loaded = True  # last: another thread that sees it also sees the outcome
    return _library


def load_error() -> Optional[str]:
    """Why the fused kernels cannot be loaded here, or None when they can."""
    _kernels()
    return _load_error


def _parameters(cell: nn.GRUCell) -> tuple[torch.Tensor, ...]:
    return (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)


def supports(cell: nn.GRUCell, *tensors: torch.Tensor) -> bool:
    """Whether :func:`gru_steps` can run this cell on these tensors (every parameter and tensor
    float32 on the CPU, with biases, the kernels built)."""
    if cell.bias_ih is None or cell.bias_hh is None or _kernels() is None:
        return False
    return all(t.device.type == "cpu" and t.dtype == torch.float32 for t in (*_parameters(cell), *tensors))


def _check_cell(cell: nn.GRUCell) -> None:
    """The parameters' shapes, before the kernel reads as many floats as they should hold."""
    hidden, inputs = cell.hidden_size, cell.input_size
    expected = {"weight_ih": (3 * hidden, inputs), "weight_hh": (3 * hidden, hidden),
                "bias_ih": (3 * hidden,), "bias_hh": (3 * hidden,)}
    for name, shape in expected.items():
        actual = tuple(getattr(cell, name).shape)
        if actual != shape:
            raise ValueError(f"GRUCell.{name} has shape {list(actual)}, expected {list(shape)} "
                             f"(input_size={inputs}, hidden_size={hidden})")


def check_kernel(kernel: str) -> str:
    return check_choice("gru_kernel", kernel, KERNELS)


def gru_steps(cell: nn.GRUCell, x: torch.Tensor, rows: Sequence[int], h0: torch.Tensor) -> torch.Tensor:
    """Hidden states ``[P, H]`` of ``cell`` run over packed steps.

    ``x`` ``[P, D]``: step 0's ``rows[0]`` rows, then step 1's ``rows[1]``, ... (``sum(rows) = P``,
    ``rows`` non-increasing); ``h0`` ``[rows[0], H]``. Step ``s`` continues the first ``rows[s]``
    rows of step ``s - 1``. Differentiable in ``x``, ``h0`` and the cell's parameters (once).
    """
    rows = tuple(int(r) for r in rows)
    if x.dim() != 2 or x.shape[1] != cell.input_size or x.shape[0] != sum(rows):
        raise ValueError(f"x has shape {list(x.shape)}, expected [{sum(rows)}, {cell.input_size}] "
                         f"(the rows of all steps, packed)")
    if not rows or rows[0] < 1 or any(b > a or b < 1 for a, b in zip(rows, rows[1:])):
        raise ValueError(f"rows per step must be positive and non-increasing, got {list(rows)}")
    if tuple(h0.shape) != (rows[0], cell.hidden_size):
        raise ValueError(f"h0 has shape {list(h0.shape)}, expected [{rows[0]}, {cell.hidden_size}]")
    _check_cell(cell)
    if not supports(cell, x, h0):
        raise RuntimeError("fused GRU kernel cannot run here: " + (
            load_error() or "it needs float32 tensors on the CPU and a GRUCell with biases"))
    inputs = (x.contiguous(), h0.contiguous(), cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    if torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
        return _FusedUnroll.apply(*inputs, rows)
    # No backward to come (the target network): no graph, and no gates kept for one.
    return _unroll_forward(*inputs, rows, None)


def _unroll_forward(x, h0, w_ih, w_hh, b_ih, b_hh, rows, gates: Optional[list]) -> torch.Tensor:
    """The hidden states ``[P, H]``; with ``gates`` a list, each step's ``(r, z, n, hn)``
    ``[rows[s], 4H]`` appended to it for the backward."""
    with torch.profiler.record_function("pymarl_nonmono::fused_gru_forward"):
        return _forward_steps(x, h0, w_ih, w_hh, b_ih, b_hh, rows, gates)


def _forward_steps(x, h0, w_ih, w_hh, b_ih, b_hh, rows, gates: Optional[list]) -> torch.Tensor:
    kernels = _kernels()
    hidden = w_hh.shape[1]
    width = rows[0]
    out = x.new_empty(x.shape[0], hidden)
    gi = x.new_empty(width, 3 * hidden)
    gh = x.new_empty(width, 3 * hidden)
    b_ih, b_hh = b_ih.detach().contiguous(), b_hh.detach().contiguous()
    w_ih_t, w_hh_t = w_ih.detach().t(), w_hh.detach().t()
    previous = h0.detach()
    for start, r in zip(_starts(rows), rows):
        h = previous[:r]
        step_gi, step_gh, step_out = gi[:r], gh[:r], out[start:start + r]
        torch.mm(x[start:start + r], w_ih_t, out=step_gi)
        torch.mm(h, w_hh_t, out=step_gh)
        saved = None if gates is None else x.new_empty(r, 4 * hidden)
        kernels.gru_step_forward(_ptr(step_gi), _ptr(step_gh), _ptr(b_ih), _ptr(b_hh), _ptr(h),
                                 _ptr(step_out), None if saved is None else _ptr(saved), r, hidden)
        if gates is not None:
            gates.append(saved)
        previous = step_out
    return out


def _starts(rows: tuple[int, ...]) -> list[int]:
    starts, at = [], 0
    for r in rows:
        starts.append(at)
        at += r
    return starts


def _ptr(t: torch.Tensor) -> int:
    return t.data_ptr()


class _FusedUnroll(torch.autograd.Function):
    """Buffers are per step or per call and small (a step's rows): large ones would be fresh
    memory at every update, and the page faults of first touching them cost more than the fusion
    saves (measured: docs/performance.md)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b_ih, b_hh, rows):
        gates: list[torch.Tensor] = []
        out = _unroll_forward(x.detach(), h0, w_ih, w_hh, b_ih, b_hh, rows, gates)
        # The gates too, so autograd frees them after the backward, or keeps them for a second
        # one under retain_graph=True, exactly as it does GRUCell's.
        ctx.save_for_backward(x, h0, out, w_ih, w_hh, *gates)
        ctx.rows = rows
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        with torch.profiler.record_function("pymarl_nonmono::fused_gru_backward"):
            return _backward_steps(ctx, grad_out)


def _backward_steps(ctx, grad_out):
    """The backward of :class:`_FusedUnroll`: steps in reverse, one kernel pass and the gradients' products each."""
    x, h0, out, w_ih, w_hh, *gates = ctx.saved_tensors
    rows = ctx.rows
    kernels = _kernels()
    need_x, need_h0, need_w_ih, need_w_hh, need_b_ih, need_b_hh = ctx.needs_input_grad[:6]
    grad_out = grad_out.contiguous()
    hidden = w_hh.shape[1]
    width = rows[0]
    w_ih, w_hh = w_ih.detach(), w_hh.detach()
    dgi = x.new_empty(width, 3 * hidden)
    dgh = x.new_empty(width, 3 * hidden)
    direct = x.new_empty(width, hidden)
    # Two carries, swapped each step. A step has at least the next one's rows; the rows it has
    # beyond them ended there and get no gradient from later steps: those rows of both buffers
    # are never written before (steps are walked in reverse, row counts only grow), so stay 0.
    carry, spare = x.new_zeros(width, hidden), x.new_zeros(width, hidden)
    d_w_ih = torch.zeros_like(w_ih)
    d_w_hh = torch.zeros_like(w_hh)
    d_b_ih = x.new_zeros(3 * hidden)
    d_b_hh = x.new_zeros(3 * hidden)
    d_x = torch.empty_like(x) if need_x else None
    starts = _starts(rows)
    for s in range(len(rows) - 1, -1, -1):
        start, r = starts[s], rows[s]
        h = h0[:r] if s == 0 else out[starts[s - 1]:starts[s - 1] + r]
        step_dgi, step_dgh, step_direct = dgi[:r], dgh[:r], direct[:r]
        kernels.gru_step_backward(_ptr(carry), _ptr(grad_out[start:start + r]), _ptr(gates[s]), _ptr(h),
                                  _ptr(step_dgi), _ptr(step_dgh), _ptr(step_direct), r, hidden)
        # Bias gradients as GRUCell's autograd forms them: each step's column sums (a tree
        # reduction), then a sum over steps; one running sum over every row loses digits.
        d_b_ih.add_(step_dgi.sum(0))
        d_b_hh[2 * hidden:].add_(step_dgh[:, 2 * hidden:].sum(0))
        if need_w_ih:
            d_w_ih.addmm_(step_dgi.t(), x[start:start + r])
        if need_w_hh:
            d_w_hh.addmm_(step_dgh.t(), h)
        if need_x:
            torch.mm(step_dgi, w_ih, out=d_x[start:start + r])
        torch.addmm(step_direct, step_dgh, w_hh, out=spare[:r])
        carry, spare = spare, carry
    d_b_hh[:2 * hidden] = d_b_ih[:2 * hidden]
    return (d_x, carry if need_h0 else None, d_w_ih if need_w_ih else None, d_w_hh if need_w_hh else None,
            d_b_ih if need_b_ih else None, d_b_hh if need_b_hh else None, None)
