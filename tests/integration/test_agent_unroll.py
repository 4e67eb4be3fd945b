"""Our controller's batched unroll against the real PyMARL2 agents' own step-wise forward.

``UNROLLABLE_AGENTS`` replays ``rnn`` and ``n_rnn`` (with and without ``use_layer_norm``)
over a whole batch at once; Q-values and gradients must equal calling the agent's
forward one step at a time, and an agent that computes something else must be caught
and unrolled step by step.

Runs on conftest's pymarl2_pristine ($PYMARL2_DIR, else a clone of hijkzzz/pymarl2 at 8ccac7c);
imports from its ``src/`` (read only).
"""

from __future__ import annotations

import logging

import pytest
import torch

from pymarl_nonmono.hosts.pymarl2.controller import NonMonoMAC
from pymarl_nonmono.hosts.pymarl_family.batch import episode_lengths
from pymarl_nonmono.numerics.recurrent import zero_padding

from fake_host import make_args, random_batch, scheme
from host_modules import imported_from_host

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def host_agents(pymarl2_pristine):
    with imported_from_host(pymarl2_pristine, "modules.agents") as module:
        yield module


def make_mac(agent, **overrides):
    torch.manual_seed(0)
    args = make_args("nonmono_qmix", agent=agent, rnn_hidden_dim=16, **overrides)
    return NonMonoMAC(scheme(), {"agents": 3}, args)


@pytest.mark.parametrize("agent, overrides", [
    ("rnn", {}),
    ("n_rnn", {}),
    ("n_rnn", {"use_layer_norm": True}),
    ("n_rnn", {"obs_last_action": False, "obs_agent_id": False}),
])
def test_batched_unroll_equals_the_host_agents_stepwise_forward(host_agents, agent, overrides):
    mac = make_mac(agent, **overrides)
    assert mac._unroll_parts is not None, "expected the batched path for a known agent"
    assert (mac._unroll_parts.norm is not None) == bool(overrides.get("use_layer_norm"))
    batch = random_batch(seed=3)
    q = mac.unroll(batch)
    mac.init_hidden(batch.batch_size)
    # Equal on every written row; the padding rows the unroll skips are 0 (the batch has some).
    lengths = episode_lengths(batch)
    assert lengths is not None and int(lengths.min()) < batch.max_seq_length
    reference = zero_padding(mac._unroll_stepwise(batch), lengths)
    torch.testing.assert_close(q, reference)
    weights = torch.randn(q.shape)
    params = list(mac.parameters())
    grads = torch.autograd.grad((q * weights).sum(), params)
    grads_ref = torch.autograd.grad((reference * weights).sum(), params)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a, b)


def test_an_agent_that_computes_otherwise_is_caught_and_unrolled_stepwise(host_agents, caplog):
    mac = make_mac("n_rnn")
    forward = type(mac.agent).forward

    def doubled(inputs, hidden_state):
        q, h = forward(mac.agent, inputs, hidden_state)
        return 2 * q, h

    mac.agent.forward = doubled
    batch = random_batch(seed=4)
    with caplog.at_level(logging.WARNING, logger="pymarl_nonmono"):
        q = mac.unroll(batch)
    assert "unrolling it one step at a time" in caplog.text and mac._unroll_parts is None
    mac.init_hidden(batch.batch_size)
    torch.testing.assert_close(q, mac._unroll_stepwise(batch))
