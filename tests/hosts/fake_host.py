"""Minimal stand-ins for PyMARL2's EpisodeBatch, agent and logger, for adapter unit tests.

They follow the host protocols in FACTS.md closely enough to drive our learner and
controller without a PyMARL2 checkout; the integration tests use the real host.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

CONFIG = Path(__file__).resolve().parents[2] / "config"

# default.yaml keys that our learner reads (PyMARL2's defaults).
HOST_DEFAULTS = dict(gamma=0.99, grad_norm_clip=10, optim_alpha=0.99, optim_eps=1e-5,
                     learner_log_interval=0, use_cuda=False, device="cpu", rnn_hidden_dim=16,
                     env="fake_env", env_args={}, seed=0)


def make_args(alg: str, n_agents=3, n_actions=4, **overrides) -> SimpleNamespace:
    with open(CONFIG / "algs" / f"{alg}.yaml") as f:
        cfg = yaml.safe_load(f)
    cfg.update(HOST_DEFAULTS)
    cfg.update(n_agents=n_agents, n_actions=n_actions)
    cfg.update(overrides)
    return SimpleNamespace(**cfg)


class FakeBatch:
    def __init__(self, data: dict, batch_size: int, max_seq_length: int):
        self.data = data
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self.device = "cpu"

    def __getitem__(self, key):
        return self.data[key]

    def update(self, data, bs=slice(None), ts=slice(None), mark_filled=True):
        for k, v in data.items():
            target = self.data[k][bs, ts]
            self.data[k][bs, ts] = v.view_as(target).to(target.dtype)


def scheme(obs_dim=5, state_dim=7, n_actions=4):
    return {"obs": {"vshape": obs_dim}, "state": {"vshape": state_dim},
            "actions_onehot": {"vshape": (n_actions,)}}


def random_batch(B=4, T=6, N=3, A=4, obs_dim=5, state_dim=7, seed=0) -> FakeBatch:
    """Episodes of random length <= T with random available actions; PyMARL2 layout [B, T+1, ...]."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    filled = torch.zeros(B, T + 1, 1, dtype=torch.long)
    terminated = torch.zeros(B, T + 1, 1, dtype=torch.uint8)
    for b, L in enumerate(lengths.tolist()):
        filled[b, :L + 1] = 1  # the runners fill the final state's row too
        terminated[b, L - 1] = 1
    avail = (torch.rand(B, T + 1, N, A, generator=g) > 0.3).int()
    avail[..., 0] = 1
    logits = torch.rand(B, T + 1, N, A, generator=g).masked_fill(avail == 0, -1.0)
    actions = logits.argmax(-1, keepdim=True)
    data = {
        "obs": torch.randn(B, T + 1, N, obs_dim, generator=g),
        "state": torch.randn(B, T + 1, state_dim, generator=g),
        "actions": actions,
        "actions_onehot": torch.nn.functional.one_hot(actions.squeeze(-1), A).float(),
        "avail_actions": avail,
        "probs": torch.zeros(B, T + 1, N, A),
        "reward": torch.randn(B, T + 1, 1, generator=g),
        "terminated": terminated,
        "filled": filled,
    }
    return FakeBatch(data, B, T + 1)


def empty_data(B, rows, N, A, obs_dim, state_dim) -> dict:
    """Every field of PyMARL2's episode batch, zero: ``[B, rows, ...]``."""
    return {
        "obs": torch.zeros(B, rows, N, obs_dim),
        "state": torch.zeros(B, rows, state_dim),
        "actions": torch.zeros(B, rows, N, 1, dtype=torch.long),
        "actions_onehot": torch.zeros(B, rows, N, A),
        "avail_actions": torch.zeros(B, rows, N, A, dtype=torch.int),
        "probs": torch.zeros(B, rows, N, A),
        "reward": torch.zeros(B, rows, 1),
        "terminated": torch.zeros(B, rows, 1, dtype=torch.uint8),
        "filled": torch.zeros(B, rows, 1, dtype=torch.long),
    }


def matrix_batch(payoff, actions, n_actions, obs_dim=5, state_dim=7) -> FakeBatch:
    """One-step episodes of a matrix game in PyMARL2's layout: ``actions [B, N]`` taken at row 0
    from one constant state, every action available."""
    b, n = actions.shape
    data = empty_data(b, 2, n, n_actions, obs_dim, state_dim)
    for key in ("obs", "state", "avail_actions", "filled"):
        data[key].fill_(1)
    data["actions"][:, 0, :, 0] = actions
    data["actions_onehot"][:, 0] = torch.nn.functional.one_hot(actions, n_actions).float()
    data["reward"][:, 0, 0] = payoff[tuple(actions.T)]
    data["terminated"][:, 0] = 1
    return FakeBatch(data, b, 2)


def episode_batch(lengths, truncated=None, time_limit=None, N=3, A=4, obs_dim=5, state_dim=7, seed=0,
                  cut=True) -> FakeBatch:
    """Episodes laid out exactly as PyMARL2's runners store them, terminated or truncated.

    Episode ``b`` has ``lengths[b]`` = L transitions (rows 0..L-1: obs, state, actions,
    reward, terminated) and its final state at row L together with the action the
    controller chose there (the action a SARSA target bootstraps from). The runners mark
    ``filled`` on rows 0..L, the final state's row included. ``terminated`` is 1 at row L-1,
    except for a ``truncated`` episode: it hit the time limit (the env's
    ``info["episode_limit"]``) and the runners store 0; it may be shorter than
    ``time_limit`` (default: the longest episode), the buffer's length, when the env cut
    it at a limit of its own. Rows after L are the buffer's zeros.
    The buffer holds ``time_limit + 1`` rows; like run.py (``max_t_filled``) the batch is cut
    to the longest episode's ``L + 1`` rows unless ``cut=False``.
    """
    lengths = [int(x) for x in lengths]
    truncated = [False] * len(lengths) if truncated is None else [bool(x) for x in truncated]
    time_limit = max(lengths) if time_limit is None else int(time_limit)
    if len(truncated) != len(lengths) or min(lengths) < 1 or max(lengths) > time_limit:
        raise ValueError(f"lengths={lengths} must be >= 1 and <= time_limit={time_limit}, one truncated flag each")
    B, rows = len(lengths), time_limit + 1
    g = torch.Generator().manual_seed(seed)
    data = empty_data(B, rows, N, A, obs_dim, state_dim)
    for b, (L, trunc) in enumerate(zip(lengths, truncated)):
        seen = slice(0, L + 1)  # every state the episode visited, the final one included
        data["obs"][b, seen] = torch.randn(L + 1, N, obs_dim, generator=g)
        data["state"][b, seen] = torch.randn(L + 1, state_dim, generator=g)
        avail = (torch.rand(L + 1, N, A, generator=g) > 0.3).int()
        avail[..., 0] = 1
        actions = torch.rand(L + 1, N, A, generator=g).masked_fill(avail == 0, -1.0).argmax(-1)
        data["avail_actions"][b, seen] = avail
        data["actions"][b, seen] = actions.unsqueeze(-1)
        data["actions_onehot"][b, seen] = torch.nn.functional.one_hot(actions, A).float()
        data["reward"][b, :L] = torch.randn(L, 1, generator=g)
        data["terminated"][b, L - 1] = 0 if trunc else 1
        data["filled"][b, seen] = 1
    keep = max(lengths) + 1 if cut else rows
    return FakeBatch({k: v[:, :keep].clone() for k, v in data.items()}, B, keep)


class TinyAgent(torch.nn.Module):
    """Recurrent agent with PyMARL2's agent interface: forward(inputs [b, n, d], h) -> (q, h)."""

    def __init__(self, input_shape, args):
        super().__init__()
        self.hidden = args.rnn_hidden_dim
        # PyMARL2's n_rnn layout (fc1 -> GRUCell rnn -> fc2): our controller unrolls it batched.
        self.fc1 = torch.nn.Linear(input_shape, self.hidden)
        self.rnn = torch.nn.GRUCell(self.hidden, self.hidden)
        self.fc2 = torch.nn.Linear(self.hidden, args.n_actions)

    def init_hidden(self):
        return self.fc1.weight.new_zeros(1, self.hidden)

    def forward(self, inputs, hidden):
        b, n, _ = inputs.shape
        h = self.rnn(torch.relu(self.fc1(inputs.reshape(b * n, -1))), hidden.reshape(b * n, -1))
        return self.fc2(h).view(b, n, -1), h.view(b, n, -1)


class RecordingLogger:
    def __init__(self):
        self.stats = {}

    def log_stat(self, key, value, t):
        self.stats.setdefault(key, []).append((t, value))
