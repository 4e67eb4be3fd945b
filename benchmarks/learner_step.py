"""One learner update: our three configs against the host's stock ``qmix`` (PyMARL2's nq_learner,
or EPyMARL's q_learner with use_rnn=True and standardise_rewards=False, as ours).

Identical synthetic batches shaped like SMAC maps (sizes from SMAC's map table):
3s5z_vs_3s6z (8 agents, 15 actions, obs 136, state 230; B=32, T=60) and corridor (6
agents, 30 actions, obs 156, state 282; B=32, T=400, its episode limit), and PyMARL2's stag_hunt
(8 agents, 6 actions, obs 75, state 300; B=128, T=200: qmix_predator_prey's batch). One thread,
runs interleaved so machine noise hits all four alike; prints the median time of each
and its ratio to stock measured in the same run. Needs a PyMARL2 checkout (patched or not):

    PYMARL2_DIR=/path/to/pymarl2 python benchmarks/learner_step.py [--repeats 9] [--size corridor] [--clock cpu]
    EPYMARL_DIR=/path/to/epymarl python benchmarks/learner_step.py --host epymarl [same options]
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

from pymarl_nonmono.hosts.pymarl_family.batch import transition_mask
from pymarl_nonmono.numerics.recurrent import real_steps

from harness import CLOCKS, HOST_DIRS, machine, median_times, setup

log = logging.getLogger("learner_step")
ROOT = Path(__file__).resolve().parents[1]
OURS = ("nonmono_qmix", "nonmono_qmix_sarsa", "nonmono_qmix_rnd")
# The goal README's table is held to: each of our configs at most this fraction of stock qmix's
# time per learner update (issue #22).
GOAL = 0.85


@dataclass(frozen=True)
class HostBench:
    """What differs between the hosts here: where our YAMLs are, our controller and learner
    (``module:Class``), and overrides of stock qmix.yaml that make it comparable with ours."""

    our_algs: Path
    mac: str
    learner: str
    stock_overrides: tuple[tuple[str, object], ...] = ()


HOSTS = {
    "pymarl2": HostBench(ROOT / "config" / "algs", "pymarl_nonmono.hosts.pymarl2.controller:NonMonoMAC",
                         "pymarl_nonmono.hosts.pymarl2.learner:NonMonoLearner"),
    # EPyMARL's qmix: a GRU agent like ours (its default is a feed-forward one) and raw rewards
    # (ours does not standardise them; docs/design/epymarl_host.md).
    "epymarl": HostBench(ROOT / "config" / "hosts" / "epymarl" / "algs",
                         "pymarl_nonmono.hosts.epymarl.agents:NonMonoMAC",
                         "pymarl_nonmono.hosts.pymarl_family.learner:PymarlFamilyLearner",
                         (("use_rnn", True), ("standardise_rewards", False))),
}


def _load(dotted: str):
    import importlib

    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class Size:
    """A map's agent and feature sizes, and the batch shape: B episodes of T steps."""

    n_agents: int
    n_actions: int
    obs: int
    state: int
    batch: int
    steps: int


SIZES = {
    "3s5z_vs_3s6z": Size(n_agents=8, n_actions=15, obs=136, state=230, batch=32, steps=60),
    "corridor": Size(n_agents=6, n_actions=30, obs=156, state=282, batch=32, steps=400),
    # PyMARL2's stag_hunt (predator-prey) in qmix_predator_prey's regime: batch 128, episodes of 200.
    "stag_hunt": Size(n_agents=8, n_actions=6, obs=75, state=300, batch=128, steps=200),
}
DEFAULT_SIZES = ("3s5z_vs_3s6z", "corridor")


def load_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def make_args(src: Path, alg_path: Path, size: Size, overrides: tuple[tuple[str, object], ...] = ()) -> SimpleNamespace:
    cfg = load_yaml(src / "config" / "default.yaml")
    cfg.update(load_yaml(alg_path))
    cfg.update(overrides)
    cfg.update(
        n_agents=size.n_agents, n_actions=size.n_actions, state_shape=size.state, obs_shape=size.obs,
        episode_limit=size.steps, use_cuda=False, device="cpu", env="sc2", batch_size=size.batch,
        learner_log_interval=10**12, seed=0,
    )
    return SimpleNamespace(**cfg)


def draw_lengths(seed: int, size: Size, episodes: str) -> torch.Tensor:
    """Transitions per episode: all ``T`` (``full``: no padding, the most work per update), or
    (``ragged``) one episode of ``T``, as a batch is as long as its longest episode, and the
    others uniform in ``1..T``, so about half the rows are padding."""
    if episodes == "full":
        return torch.full((size.batch,), size.steps)
    lengths = torch.randint(1, size.steps + 1, (size.batch,), generator=torch.Generator().manual_seed(seed))
    lengths[0] = size.steps
    return lengths


def make_batch(seed: int, size: Size, episodes: str = "full"):
    from components.episode_buffer import EpisodeBatch
    from components.transforms import OneHot

    n_agents, n_actions, B, T = size.n_agents, size.n_actions, size.batch, size.steps
    scheme = {
        "state": {"vshape": size.state},
        "obs": {"vshape": size.obs, "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (n_actions,), "group": "agents", "dtype": torch.int},
        "probs": {"vshape": (n_actions,), "group": "agents", "dtype": torch.float},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": torch.uint8},
    }
    preprocess = {"actions": ("actions_onehot", [OneHot(out_dim=n_actions)])}
    batch = EpisodeBatch(scheme, {"agents": n_agents}, B, T + 1, preprocess=preprocess, device="cpu")
    g = torch.Generator().manual_seed(seed)
    avail = (torch.rand(B, T + 1, n_agents, n_actions, generator=g) > 0.4).int()
    avail[..., 0] = 1
    actions = torch.multinomial(avail.view(-1, n_actions).float(), 1, generator=g).view(B, T + 1, n_agents, 1)
    probs = avail.float() / avail.sum(-1, keepdim=True)
    lengths = draw_lengths(seed, size, episodes)
    steps = torch.arange(T + 1).unsqueeze(0)
    terminated = (steps == (lengths - 1).unsqueeze(1)).to(torch.uint8).unsqueeze(-1)
    batch.update({
        "obs": torch.randn(B, T + 1, n_agents, size.obs, generator=g),
        "state": torch.randn(B, T + 1, size.state, generator=g),
        "avail_actions": avail, "actions": actions, "probs": probs,
        "reward": torch.randn(B, T + 1, 1, generator=g), "terminated": terminated,
    }, bs=slice(None), ts=slice(None))
    # As the runners leave it: rows 0..L written (the final state's included), the rest padding.
    batch.data.transition_data["filled"] = real_steps(lengths + 1, T + 1).long().unsqueeze(-1)
    return batch


def build_learners(src: Path, size: Size, host: HostBench):
    from controllers import REGISTRY as macs
    from learners import REGISTRY as learners

    NonMonoMAC, NonMonoLearner = _load(host.mac), _load(host.learner)

    class SilentLogger:
        def log_stat(self, *a, **k):
            pass

    built = {}
    alg_paths = {"qmix (stock)": src / "config" / "algs" / "qmix.yaml"}
    alg_paths.update({name: host.our_algs / f"{name}.yaml" for name in OURS})
    for name, path in alg_paths.items():
        torch.manual_seed(0)
        args = make_args(src, path, size, () if name in OURS else host.stock_overrides)
        batch = make_batch(0, size)
        if name in OURS:
            mac = NonMonoMAC(batch.scheme, {"agents": size.n_agents}, args)
            learner = NonMonoLearner(mac, batch.scheme, SilentLogger(), args)
        else:
            mac = macs[args.mac](batch.scheme, {"agents": size.n_agents}, args)
            learner = learners[args.learner](mac, batch.scheme, SilentLogger(), args)
        built[name] = learner
    return built


def gru_kernel_in_use() -> str:
    """What ``gru_kernel: auto`` (our YAMLs) runs here, for the reader of the timings."""
    from pymarl_nonmono.numerics.fused_gru import load_error

    error = load_error()
    return "fused CPU kernel (gru_kernel: auto)" if error is None else f"torch GRUCell: {error}"


def profile_updates(calls, top: int, updates: int = 3) -> None:
    """Each learner's ``top`` operators by self CPU time, in ms per update (torch profiler)."""
    from torch.profiler import ProfilerActivity, profile

    for name, call in calls.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for r in range(updates):
                call(r)
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops) / 1e3 / updates
        log.info("profile of %s: %.1f ms of operators per update (profiled; the profiler adds its own)", name, total)
        for e in ops[:top]:
            log.info("  %-58s %7.2f ms %6d calls", e.key[:58], e.self_cpu_time_total / 1e3 / updates,
                     e.count // updates)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", choices=sorted(HOSTS), default="pymarl2",
                        help=f"whose stock qmix and adapter (default: pymarl2; checkouts: {HOST_DIRS})")
    parser.add_argument("--repeats", type=int, default=9, help="timed updates per learner (>= 7)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall: elapsed time (idle machine); cpu: this thread's CPU time (default: wall)")
    parser.add_argument("--size", choices=sorted(SIZES), action="append",
                        help=f"batch shape to time (repeatable; default: {', '.join(DEFAULT_SIZES)}, the two the "
                             f"0.85x goal is held to)")
    parser.add_argument("--episodes", choices=("full", "ragged"), default="full",
                        help="full: every episode T steps, no padding (default; the 0.85x goal is "
                             "held to this); ragged: one episode of T, the others 1..T long")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="after timing, print each learner's N most expensive operators (torch "
                             "profiler, self CPU time per update; default: none)")
    opts = parser.parse_args(argv)
    src = setup(opts.host)
    if src is None:
        return 2
    log.info("machine: %s", machine())
    log.info("our agents' GRU: %s", gru_kernel_in_use())
    worst = {}
    for size_name in opts.size or DEFAULT_SIZES:
        size = SIZES[size_name]
        learners = build_learners(src, size, HOSTS[opts.host])
        batch = make_batch(1, size, opts.episodes)
        calls = {name: (lambda r, learner=learner: learner.train(batch, r, 0))
                 for name, learner in learners.items()}
        repeats = max(7, opts.repeats)
        medians = median_times(calls, repeats, opts.clock)
        stock = medians["qmix (stock)"]
        real = transition_mask(batch).mean().item()
        log.info("one learner update on %s, %s-sized: B=%d T=%d agents=%d actions=%d, %s episodes (%.0f%% of "
                 "transitions real), 1 thread, median of %d, %s clock", opts.host, size_name, size.batch,
                 size.steps, size.n_agents, size.n_actions, opts.episodes, 100 * real, repeats, opts.clock)
        for name, med in medians.items():
            log.info("%-20s %8.1f ms   %.2fx stock", name, med * 1e3, med / stock)
            if name in OURS:
                worst[(name, size_name)] = med / stock
        if opts.profile:
            profile_updates(calls, opts.profile)
    (name, size_name), ratio = max(worst.items(), key=lambda kv: kv[1])
    verdict = "meets" if ratio <= GOAL else "misses"
    log.info("verdict: %s the %.2fx goal; slowest of ours: %s at %s, %.2fx stock qmix", verdict, GOAL, name,
             size_name, ratio)
    return 0


if __name__ == "__main__":
    sys.exit(main())
