import pytest
import torch
from torch import nn

from pymarl_nonmono.numerics.recurrent import GRUAgentParts, unroll_gru, unroll_gru_reference

D, H, A = 7, 16, 5


def make_parts(norm: bool = False, seed: int = 0) -> GRUAgentParts:
    torch.manual_seed(seed)
    return GRUAgentParts(nn.Linear(D, H), nn.GRUCell(H, H), nn.Linear(H, A), nn.LayerNorm(H) if norm else None)


@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_unroll_matches_step_by_step_reference_values_and_gradients(norm, with_h0):
    parts = make_parts(norm)
    g = torch.Generator().manual_seed(1)
    inputs = torch.randn(3, 9, 4, D, generator=g)
    h0 = torch.randn(3, 4, H, generator=g) if with_h0 else None
    q, h = unroll_gru(parts, inputs, h0)
    q_ref, h_ref = unroll_gru_reference(parts, inputs, h0)
    assert q.shape == (3, 9, 4, A) and h.shape == (3, 4, H)
    torch.testing.assert_close(q, q_ref)
    torch.testing.assert_close(h, h_ref)
    # Same gradients: the learner backpropagates through the unroll.
    weights = torch.randn(q.shape, generator=g)
    params = [p for m in (parts.encoder, parts.cell, parts.head) for p in m.parameters()]
    grads = torch.autograd.grad((q * weights).sum(), params)
    grads_ref = torch.autograd.grad((q_ref * weights).sum(), params)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_steps_are_causal_and_agents_and_episodes_independent():
    parts = make_parts()
    inputs = torch.randn(2, 6, 3, D)
    q, _ = unroll_gru(parts, inputs)
    changed = inputs.clone()
    changed[1, 4, 2] += 1.0
    q2, _ = unroll_gru(parts, changed)
    differs = (q2 - q).abs().amax(dim=-1) > 0
    expected = torch.zeros(2, 6, 3, dtype=torch.bool)
    expected[1, 4:, 2] = True
    assert torch.equal(differs, expected)


def test_shapes_and_parts_are_checked():
    parts = make_parts()
    with pytest.raises(ValueError, match=r"inputs have shapes \[\[2, 3, 4\]\]"):
        unroll_gru(parts, torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match="h0 has shape"):
        unroll_gru(parts, torch.randn(2, 3, 4, D), torch.randn(2, 3, H))
    with pytest.raises(ValueError, match="do not chain"):
        GRUAgentParts(nn.Linear(D, H), nn.GRUCell(H + 1, H), nn.Linear(H, A))
    with pytest.raises(TypeError, match="GRUCell"):
        GRUAgentParts(nn.Linear(D, H), nn.LSTMCell(H, H), nn.Linear(H, A))


def test_feature_blocks_equal_their_concatenation_with_broadcast_ids():
    parts = make_parts(norm=True)
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(3, 5, 4, D - 4, generator=g)
    ids = torch.eye(4).view(1, 1, 4, 4)
    q, h = unroll_gru(parts, [obs, ids])
    whole = torch.cat([obs, ids.expand(3, 5, 4, 4)], dim=-1)
    q_ref, h_ref = unroll_gru_reference(parts, whole)
    torch.testing.assert_close(q, q_ref)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(unroll_gru_reference(parts, [obs, ids])[0], q_ref)
    grads = torch.autograd.grad(q.square().sum(), [parts.encoder.weight, parts.encoder.bias])
    grads_ref = torch.autograd.grad(q_ref.square().sum(), [parts.encoder.weight, parts.encoder.bias])
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="D sum to 7"):
        unroll_gru(parts, [obs, torch.eye(3).view(1, 1, 3, 3)])
    with pytest.raises(ValueError, match="D sum to 7"):
        unroll_gru(parts, [obs, torch.eye(5).view(1, 1, 5, 5)[..., :4]])


# -- episodes of different lengths: padding skipped ------------------------------------

LENGTHS = torch.tensor([3, 9, 1, 5, 5])
# 44 of 45 rows real: above RAGGED_BELOW, so computed whole and the padding zeroed after.
ALMOST_FULL = torch.tensor([9, 9, 9, 9, 8])


def _params(parts: GRUAgentParts) -> list[torch.Tensor]:
    return [p for m in (parts.encoder, parts.cell, parts.head, parts.norm) if m is not None for p in m.parameters()]


@pytest.mark.parametrize("lengths", [LENGTHS, ALMOST_FULL], ids=["skipped", "dense"])
@pytest.mark.parametrize("norm", [False, True])
@pytest.mark.parametrize("with_h0", [False, True])
def test_ragged_unroll_matches_reference_values_last_states_and_gradients(norm, with_h0, lengths):
    parts = make_parts(norm)
    g = torch.Generator().manual_seed(3)
    obs = torch.randn(5, 9, 4, D - 4, generator=g)
    inputs = [obs, torch.eye(4).view(1, 1, 4, 4)]  # a broadcast block, as the agent id is
    h0 = torch.randn(5, 4, H, generator=g, requires_grad=True) if with_h0 else None
    q, h = unroll_gru(parts, inputs, h0, lengths=lengths)
    q_ref, h_ref = unroll_gru_reference(parts, inputs, h0, lengths=lengths)
    assert q.shape == (5, 9, 4, A) and h.shape == (5, 4, H)
    torch.testing.assert_close(q, q_ref)
    # The last state is the one after each episode's own last step, not the batch's.
    torch.testing.assert_close(h, h_ref)
    weights = torch.randn(q.shape, generator=g)
    wanted = _params(parts) + ([h0] if with_h0 else [])
    grads = torch.autograd.grad((q * weights).sum() + h.square().sum(), wanted)
    grads_ref = torch.autograd.grad((q_ref * weights).sum() + h_ref.square().sum(), wanted)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("lengths", [LENGTHS, ALMOST_FULL], ids=["skipped", "dense"])
def test_ragged_unroll_is_zero_on_padding_and_ignores_it(lengths):
    parts = make_parts()
    g = torch.Generator().manual_seed(4)
    inputs = torch.randn(5, 9, 3, D, generator=g)
    q, h = unroll_gru(parts, inputs, lengths=lengths)
    padding = torch.arange(9).unsqueeze(0) >= lengths.unsqueeze(1)  # [B, T]
    assert q[padding].abs().max() == 0 and q[~padding].abs().min() > 0
    garbage = inputs.clone()
    garbage[padding] = 1e3  # what padding holds must not reach a real row
    q2, h2 = unroll_gru(parts, garbage, lengths=lengths)
    assert torch.equal(q2, q) and torch.equal(h2, h)


def test_ragged_unroll_runs_the_cell_on_real_steps_only():
    parts = make_parts()
    rows = []
    parts.cell.register_forward_hook(lambda module, args, out: rows.append(out.shape[0]))
    # GRUCell's own steps (the fused kernel's rows: test_fused_gru.py).
    unroll_gru(parts, torch.randn(5, 9, 3, D), lengths=LENGTHS, kernel="torch")
    assert len(rows) == int(LENGTHS.max()) and sum(rows) == int(LENGTHS.sum()) * 3
    rows.clear()
    unroll_gru(parts, torch.randn(5, 9, 3, D), kernel="torch")
    assert sum(rows) == 5 * 9 * 3


def test_full_lengths_equal_no_lengths():
    parts = make_parts()
    inputs = torch.randn(2, 6, 3, D)
    q, h = unroll_gru(parts, inputs, lengths=torch.tensor([6, 6]))
    q_none, h_none = unroll_gru(parts, inputs)
    assert torch.equal(q, q_none) and torch.equal(h, h_none)


@pytest.mark.parametrize("lengths,error,match", [
    (torch.tensor([3, 4]), ValueError, r"lengths has shape \[2\]"),
    (torch.tensor([3.0, 4.0, 5.0]), TypeError, "lengths must be integers"),
    (torch.tensor([0, 4, 5]), ValueError, r"lengths must lie in 1..6 .*got 0..5"),
    (torch.tensor([3, 7, 5]), ValueError, r"lengths must lie in 1..6 .*got 3..7"),
])
def test_lengths_are_checked(lengths, error, match):
    with pytest.raises(error, match=match):
        unroll_gru(make_parts(), torch.randn(3, 6, 2, D), lengths=lengths)


def test_ragged_unroll_keeps_to_the_inputs_device(monkeypatch):
    from fake_cuda import fake_cuda

    with fake_cuda(monkeypatch):
        parts = make_parts()
        for module in (parts.encoder, parts.cell, parts.head):
            module.cuda()
        inputs = torch.randn(5, 9, 3, D, device="cuda")
        q, h = unroll_gru(parts, inputs, lengths=LENGTHS.to("cuda"))
        q.sum().backward()
    assert q.device.type == "cuda" and h.device.type == "cuda"
