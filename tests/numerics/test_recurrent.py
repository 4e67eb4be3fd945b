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
