"""One learner update: our three configs against stock PyMARL2 ``qmix`` (nq_learner).

Identical synthetic batches shaped like SMAC's 3s5z_vs_3s6z (8 agents, 15 actions,
obs 136, state 230; B=32, T=60), one thread, runs interleaved so machine noise hits
all four alike; prints the median time of each and its ratio to stock measured in the
same run. Needs a PyMARL2 checkout (patched or not):

    PYMARL2_DIR=/path/to/pymarl2 python benchmarks/learner_step.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import yaml

log = logging.getLogger("learner_step")
ROOT = Path(__file__).resolve().parents[1]
N_AGENTS, N_ACTIONS, OBS, STATE, B, T = 8, 15, 136, 230, 32, 60
OURS = ("nonmono_qmix", "nonmono_qmix_sarsa", "nonmono_qmix_rnd")


def load_yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def make_args(src: Path, alg_path: Path) -> SimpleNamespace:
    cfg = load_yaml(src / "config" / "default.yaml")
    cfg.update(load_yaml(alg_path))
    cfg.update(
        n_agents=N_AGENTS, n_actions=N_ACTIONS, state_shape=STATE, obs_shape=OBS, episode_limit=T,
        use_cuda=False, device="cpu", env="sc2", batch_size=B, learner_log_interval=10**12, seed=0,
    )
    return SimpleNamespace(**cfg)


def make_batch(seed: int):
    from components.episode_buffer import EpisodeBatch
    from components.transforms import OneHot

    scheme = {
        "state": {"vshape": STATE},
        "obs": {"vshape": OBS, "group": "agents"},
        "actions": {"vshape": (1,), "group": "agents", "dtype": torch.long},
        "avail_actions": {"vshape": (N_ACTIONS,), "group": "agents", "dtype": torch.int},
        "probs": {"vshape": (N_ACTIONS,), "group": "agents", "dtype": torch.float},
        "reward": {"vshape": (1,)},
        "terminated": {"vshape": (1,), "dtype": torch.uint8},
    }
    preprocess = {"actions": ("actions_onehot", [OneHot(out_dim=N_ACTIONS)])}
    batch = EpisodeBatch(scheme, {"agents": N_AGENTS}, B, T + 1, preprocess=preprocess, device="cpu")
    g = torch.Generator().manual_seed(seed)
    avail = (torch.rand(B, T + 1, N_AGENTS, N_ACTIONS, generator=g) > 0.4).int()
    avail[..., 0] = 1
    actions = torch.multinomial(avail.view(-1, N_ACTIONS).float(), 1, generator=g).view(B, T + 1, N_AGENTS, 1)
    probs = avail.float() / avail.sum(-1, keepdim=True)
    terminated = torch.zeros(B, T + 1, 1, dtype=torch.uint8)
    terminated[:, T - 1] = 1
    batch.update({
        "obs": torch.randn(B, T + 1, N_AGENTS, OBS, generator=g),
        "state": torch.randn(B, T + 1, STATE, generator=g),
        "avail_actions": avail, "actions": actions, "probs": probs,
        "reward": torch.randn(B, T + 1, 1, generator=g), "terminated": terminated,
    }, bs=slice(None), ts=slice(None))
    return batch


def build_learners(src: Path):
    from controllers import REGISTRY as macs
    from learners import REGISTRY as learners

    from pymarl_nonmono.hosts.pymarl2.controller import NonMonoMAC
    from pymarl_nonmono.hosts.pymarl2.learner import NonMonoLearner

    class SilentLogger:
        def log_stat(self, *a, **k):
            pass

    built = {}
    alg_paths = {"qmix (stock)": src / "config" / "algs" / "qmix.yaml"}
    alg_paths.update({name: ROOT / "config" / "algs" / f"{name}.yaml" for name in OURS})
    for name, path in alg_paths.items():
        torch.manual_seed(0)
        args = make_args(src, path)
        batch = make_batch(0)
        if name in OURS:
            mac = NonMonoMAC(batch.scheme, {"agents": N_AGENTS}, args)
            learner = NonMonoLearner(mac, batch.scheme, SilentLogger(), args)
        else:
            mac = macs[args.mac](batch.scheme, {"agents": N_AGENTS}, args)
            learner = learners[args.learner](mac, batch.scheme, SilentLogger(), args)
        built[name] = learner
    return built


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed updates per learner (>= 7)")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    host = os.environ.get("PYMARL2_DIR")
    if not host or not (Path(host) / "src" / "main.py").is_file():
        log.error("set PYMARL2_DIR to a PyMARL2 checkout (hijkzzz/pymarl2)")
        return 2
    src = Path(host).resolve() / "src"
    sys.path.insert(0, str(src))
    torch.set_num_threads(1)
    learners = build_learners(src)
    batch = make_batch(1)
    for learner in learners.values():  # warm-up: allocator, first-call overheads
        learner.train(batch, 0, 0)
    times = {name: [] for name in learners}
    for r in range(max(7, opts.repeats)):
        for name, learner in learners.items():
            start = time.perf_counter()
            learner.train(batch, r + 1, 0)
            times[name].append(time.perf_counter() - start)
    stock = statistics.median(times["qmix (stock)"])
    log.info("one learner update, B=%d T=%d agents=%d actions=%d, 1 thread, median of %d",
             B, T, N_AGENTS, N_ACTIONS, len(times["qmix (stock)"]))
    for name, ts in times.items():
        med = statistics.median(ts)
        log.info("%-20s %8.1f ms   %.2fx stock", name, med * 1e3, med / stock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
