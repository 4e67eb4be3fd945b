"""The fused GRU kernels against torch's GRUCell run step by step (the reference): values and
every gradient, on dense and ragged (prefix) steps, in the regions where the kernels' own exp
and tanh take different branches."""

import copy
import shutil
import sysconfig

import pytest
import torch
from torch import nn

from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.numerics import fused_gru, recurrent
from pymarl_nonmono.numerics.fused_gru import check_kernel, gru_steps, load_error, supports
from pymarl_nonmono.numerics.recurrent import GRUAgentParts, unroll_gru

needs_kernel = pytest.mark.skipif(
    load_error() is not None,
    reason=f"fused GRU extension not built ({load_error()}); `pip install -e .` with a C compiler builds it",
)


def reference_steps(cell: nn.GRUCell, x: torch.Tensor, rows, h0: torch.Tensor) -> torch.Tensor:
    """Step ``s`` continues the first ``rows[s]`` rows: GRUCell, one step at a time."""
    out, h = [], h0
    for step, r in zip(x.split(list(rows)), rows):
        h = cell(step, h[:r])
        out.append(h)
    return torch.cat(out)


def make_case(d: int, hidden: int, rows, scale: float = 1.0, seed: int = 0):
    torch.manual_seed(seed)
    cell = nn.GRUCell(d, hidden)
    with torch.no_grad():
        for p in cell.parameters():
            p.mul_(scale)
    x = torch.randn(sum(rows), d, requires_grad=True)
    h0 = torch.randn(rows[0], hidden, requires_grad=True)
    return cell, x, h0


def values_and_gradients(run, cell, x, h0, weights):
    out = run(cell, x, h0)
    wanted = [x, h0, *cell.parameters()]
    grads = torch.autograd.grad((out * weights).sum(), wanted)
    return [out.detach(), *grads]


CASES = {
    "dense": (5, 16, [12] * 7, 1.0),
    "ragged": (7, 16, [9, 9, 7, 4, 4, 1], 1.0),
    # Width 5: the vector loops' remainders; one row per step.
    "narrow": (3, 5, [1] * 4, 1.0),
    # Large pre-activations: exp's clamp and saturated gates.
    "saturated": (6, 20, [8, 6, 3], 40.0),
    # Tiny pre-activations: tanh's series branch near 0.
    "near_zero": (6, 20, [8, 6, 3], 1e-3),
}


# The sizes that run: PyMARL2's GRU (width 64) over batches of 3s5z_vs_3s6z-like episodes (T=61)
# of 256 and 1,024 agent-rows, and corridor-like ones (T=400): where a sum over every row and step
# loses digits that the small cases above cannot show.
REAL_SIZES = {
    "256x61": (64, 64, [256] * 61, 1.0),
    "1024x61": (64, 64, [1024] * 61, 1.0),
    "256x400": (64, 64, [256] * 400, 1.0),
}


@needs_kernel
@pytest.mark.parametrize("case", sorted(CASES) + sorted(REAL_SIZES))
def test_fused_steps_are_as_accurate_as_grucell_in_values_and_every_gradient(case):
    """Against the same maths in float64, the fused kernels' error is GRUCell's own float32
    error, up to a small factor and a few units of float32 rounding. (A direct comparison with
    GRUCell would not do: where the gates saturate, 1 - sigmoid loses every digit to rounding in
    both, differently.)"""
    d, hidden, rows, scale = {**CASES, **REAL_SIZES}[case]
    cell, x, h0 = make_case(d, hidden, rows, scale)
    weights = torch.randn(sum(rows), hidden)
    fused = values_and_gradients(lambda c, a, b: gru_steps(c, a, rows, b), cell, x, h0, weights)
    torch32 = values_and_gradients(lambda c, a, b: reference_steps(c, a, rows, b), cell, x, h0, weights)
    cell64 = copy.deepcopy(cell).double()
    x64, h64 = (t.detach().double().requires_grad_() for t in (x, h0))
    truth = values_and_gradients(lambda c, a, b: reference_steps(c, a, rows, b), cell64, x64, h64, weights.double())
    names = ["h", "dx", "dh0", "dW_ih", "dW_hh", "db_ih", "db_hh"]
    eps = torch.finfo(torch.float32).eps
    for name, ours, theirs, exact in zip(names, fused, torch32, truth):
        error, their_error = (ours.double() - exact).abs().max(), (theirs.double() - exact).abs().max()
        bound = 4 * their_error + 4 * eps * exact.abs().max()
        assert error <= bound, f"{case} {name}: error {error:.3g} against GRUCell's {their_error:.3g}"


@needs_kernel
def test_only_the_wanted_gradients_are_computed_and_no_grad_saves_nothing(monkeypatch):
    rows = [6, 6, 4]
    cell, x, h0 = make_case(4, 8, rows)
    x = x.detach()  # the encoder's output needs a gradient in learning; a frozen one need not
    cell.weight_ih.requires_grad_(False)
    out = gru_steps(cell, x, rows, h0)
    out.sum().backward()
    assert x.grad is None and cell.weight_ih.grad is None
    assert h0.grad is not None and cell.weight_hh.grad is not None and cell.bias_ih.grad is not None
    ref_h0 = h0.detach().clone().requires_grad_()
    reference_steps(cell, x, rows, ref_h0).sum().backward()
    torch.testing.assert_close(h0.grad, ref_h0.grad)

    saved = []
    real_empty = torch.Tensor.new_empty
    monkeypatch.setattr(torch.Tensor, "new_empty",
                        lambda self, *size, **kw: saved.append(size) or real_empty(self, *size, **kw))
    with torch.no_grad():  # the target network: nothing kept for a backward
        target = gru_steps(cell, x, rows, h0)
    assert all(size[-1] != 4 * 8 for size in saved), saved
    torch.testing.assert_close(target, out.detach())


@needs_kernel
@pytest.mark.parametrize("kernel", ["auto", "torch"])
@pytest.mark.parametrize("lengths", [None, torch.tensor([9, 3, 1, 9, 5])], ids=["dense", "ragged"])
def test_unroll_uses_the_kernel_it_is_told_and_gives_the_same_q(monkeypatch, kernel, lengths):
    torch.manual_seed(0)
    parts = GRUAgentParts(nn.Linear(7, 16), nn.GRUCell(16, 16), nn.Linear(16, 5))
    inputs = torch.randn(5, 9, 3, 7)
    q_ref, h_ref = unroll_gru(parts, inputs, lengths=lengths, kernel="torch")
    calls = []
    real = recurrent.gru_steps
    monkeypatch.setattr(recurrent, "gru_steps", lambda *a: calls.append(a[2]) or real(*a))
    cell_calls = []
    parts.cell.register_forward_hook(lambda *_: cell_calls.append(1))
    q, h = unroll_gru(parts, inputs, lengths=lengths, kernel=kernel)
    if kernel == "auto":
        assert len(calls) == 1 and not cell_calls
        expected_rows = 5 * 9 * 3 if lengths is None else int(lengths.sum()) * 3
        assert sum(calls[0]) == expected_rows
    else:
        assert not calls and cell_calls
    torch.testing.assert_close(q, q_ref)
    torch.testing.assert_close(h, h_ref)


def test_fused_is_refused_where_it_cannot_run_and_auto_falls_back():
    parts = GRUAgentParts(nn.Linear(7, 16).double(), nn.GRUCell(16, 16).double(), nn.Linear(16, 5).double())
    inputs = torch.randn(2, 4, 3, 7, dtype=torch.float64)
    assert not supports(parts.cell, inputs)
    with pytest.raises(RuntimeError, match="gru_kernel=fused.*float32 tensors on the CPU"):
        unroll_gru(parts, inputs, kernel="fused")
    q, _ = unroll_gru(parts, inputs, kernel="auto")
    assert q.dtype == torch.float64


def test_without_the_extension_auto_uses_grucell_and_fused_says_why(monkeypatch):
    monkeypatch.setattr(fused_gru, "_loaded", True)
    monkeypatch.setattr(fused_gru, "_library", None)
    monkeypatch.setattr(fused_gru, "_load_error", "the compiled extension ... is not there (test)")
    torch.manual_seed(0)
    parts = GRUAgentParts(nn.Linear(7, 16), nn.GRUCell(16, 16), nn.Linear(16, 5))
    inputs = torch.randn(2, 4, 3, 7)
    assert not supports(parts.cell, inputs)
    q, _ = unroll_gru(parts, inputs, kernel="auto")
    torch.testing.assert_close(q, unroll_gru(parts, inputs, kernel="torch")[0])
    with pytest.raises(RuntimeError, match=r"is not there \(test\)"):
        unroll_gru(parts, inputs, kernel="fused")


def test_a_cuda_tensor_never_reaches_the_cpu_kernel(monkeypatch):
    from fake_cuda import fake_cuda

    monkeypatch.setattr(recurrent, "gru_steps", lambda *a: pytest.fail("CPU kernel called on CUDA tensors"))
    with fake_cuda(monkeypatch):
        parts = GRUAgentParts(nn.Linear(7, 16), nn.GRUCell(16, 16), nn.Linear(16, 5))
        for module in (parts.encoder, parts.cell, parts.head):
            module.cuda()
        inputs = torch.randn(2, 4, 3, 7, device="cuda")
        q, h = unroll_gru(parts, inputs, kernel="auto")
        q.sum().backward()
        with pytest.raises(RuntimeError, match="gru_kernel=fused"):
            unroll_gru(parts, inputs, kernel="fused")
    assert q.device.type == "cuda" and h.device.type == "cuda"


def test_kernel_names_and_packed_shapes_are_checked():
    with pytest.raises(ConfigError, match=r"gru_kernel='fast' is not one of \['auto', 'fused', 'torch'\]"):
        check_kernel("fast")
    with pytest.raises(ConfigError, match="gru_kernel="):
        unroll_gru(GRUAgentParts(nn.Linear(2, 4), nn.GRUCell(4, 4), nn.Linear(4, 2)), torch.randn(1, 2, 1, 2),
                   kernel="Fused")
    cell = nn.GRUCell(3, 4)
    with pytest.raises(ValueError, match=r"x has shape \[5, 3\], expected \[6, 3\]"):
        gru_steps(cell, torch.randn(5, 3), [3, 3], torch.zeros(3, 4))
    with pytest.raises(ValueError, match="non-increasing"):
        gru_steps(cell, torch.randn(6, 3), [2, 4], torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"h0 has shape \[2, 4\], expected \[3, 4\]"):
        gru_steps(cell, torch.randn(6, 3), [3, 3], torch.zeros(2, 4))


@pytest.mark.skipif(not (shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC")
                                      else "cc")),
                    reason="no C compiler here: the extension is optional and GRUCell is used instead")
def test_the_extension_is_built_where_a_compiler_is():
    # Without this, a broken build would only turn the kernel tests into skips.
    assert load_error() is None


def _cell_with(name: str, value: torch.Tensor) -> nn.GRUCell:
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4)
    setattr(cell, name, nn.Parameter(value))
    return cell


@needs_kernel
@pytest.mark.parametrize("name,value", [
    ("bias_ih", torch.zeros(4)),           # [H] for [3H]: the kernel would read 2H floats past it
    ("bias_hh", torch.zeros(13)),
    ("weight_ih", torch.zeros(12, 2)),
    ("weight_hh", torch.zeros(12, 5)),
])
def test_a_parameter_of_the_wrong_shape_is_refused_before_the_kernel_reads_it(name, value):
    cell = _cell_with(name, value)
    with pytest.raises(ValueError, match=rf"GRUCell.{name} has shape {list(value.shape)}".replace("[", r"\[").replace("]", r"\]")):
        gru_steps(cell, torch.randn(6, 3), [3, 3], torch.zeros(3, 4))


@needs_kernel
@pytest.mark.parametrize("name,value", [
    ("weight_hh", torch.zeros(12, 4, dtype=torch.float64)),
    ("bias_hh", torch.zeros(12, dtype=torch.float64)),
    ("weight_ih", torch.zeros(12, 3, device="meta")),
    ("bias_ih", torch.zeros(12, device="meta")),
])
def test_a_parameter_of_another_dtype_or_device_is_not_for_the_kernel(name, value):
    cell = _cell_with(name, value)
    assert not supports(cell, torch.randn(6, 3), torch.zeros(3, 4))
    with pytest.raises(RuntimeError, match="float32 tensors on the CPU"):
        gru_steps(cell, torch.randn(6, 3), [3, 3], torch.zeros(3, 4))


@needs_kernel
def test_parameters_that_are_views_with_strides_give_grucells_values():
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4)
    with torch.no_grad():
        cell.bias_ih = nn.Parameter(torch.randn(24)[::2])  # not contiguous
        cell.weight_hh = nn.Parameter(torch.randn(4, 12).t())
    assert not cell.bias_ih.is_contiguous() and not cell.weight_hh.is_contiguous()
    x, h0 = torch.randn(6, 3), torch.randn(3, 4)
    torch.testing.assert_close(gru_steps(cell, x, [3, 3], h0), reference_steps(cell, x, [3, 3], h0))


@needs_kernel
def test_a_second_backward_works_with_retain_graph_and_says_why_without():
    rows = [5, 5, 2]
    cell, x, h0 = make_case(3, 8, rows)
    out = gru_steps(cell, x, rows, h0)
    out.sum().backward(retain_graph=True)
    first = cell.bias_ih.grad.clone()
    out.sum().backward()
    torch.testing.assert_close(cell.bias_ih.grad, 2 * first)
    again = gru_steps(cell, x, rows, h0)
    again.sum().backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        again.sum().backward()


def test_threads_loading_at_once_share_one_load(monkeypatch):
    import threading
    import time

    loads = []

    def slow_load():
        loads.append(1)
        time.sleep(0.2)
        return "library"

    monkeypatch.setattr(fused_gru, "_loaded", False)
    monkeypatch.setattr(fused_gru, "_library", None)
    monkeypatch.setattr(fused_gru, "_load", slow_load)
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(fused_gru._kernels())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == ["library"] * 4 and len(loads) == 1


def test_an_extension_without_its_kernels_falls_back_saying_why(monkeypatch):
    def no_symbols():
        raise AttributeError("/x/_fused_gru.so: undefined symbol: gru_step_forward")

    monkeypatch.setattr(fused_gru, "_loaded", False)
    monkeypatch.setattr(fused_gru, "_library", None)
    monkeypatch.setattr(fused_gru, "_load_error", None)
    monkeypatch.setattr(fused_gru, "_load", no_symbols)
    assert "lacks its kernels" in load_error()
    parts = GRUAgentParts(nn.Linear(7, 16), nn.GRUCell(16, 16), nn.Linear(16, 5))
    q, _ = unroll_gru(parts, torch.randn(2, 4, 3, 7), kernel="auto")
    assert q.shape == (2, 4, 3, 5)
