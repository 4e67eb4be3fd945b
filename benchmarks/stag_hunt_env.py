"""PyMARL2's stag_hunt env as a parallel runner's env worker drives it (``step``, then
``get_state``, ``get_avail_actions`` and ``get_obs``, every step), with the env's own methods and with ours
(hosts/pymarl2/stag_hunt.py: ``step`` on Python scalars, the other two in one pass), on random
episodes of the predator-prey study's setting. Needs a PyMARL2 checkout:

    PYMARL2_DIR=/path/to/pymarl2 python benchmarks/stag_hunt_env.py [--episodes 21] [--clock cpu]

Episodes alternate between the two; prints the median ms per env step of each and the ratio
ours / stock, for the whole worker step and for the two observation methods alone.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np
import yaml

from harness import CLOCKS, machine, median_times, setup

log = logging.getLogger("stag_hunt_env")


def make_envs(src, **changes):
    """(stock env, env with our methods), the study's setting unless ``changes``."""
    from envs.stag_hunt.stag_hunt import StagHunt

    from pymarl_nonmono.hosts.pymarl2.stag_hunt import accelerate

    args = yaml.safe_load((src / "config" / "envs" / "stag_hunt.yaml").read_text())["env_args"]
    args.update({"miscapture_punishment": -1, **changes})
    stock, ours = StagHunt(**args), StagHunt(**args)
    if not accelerate(ours):
        raise SystemExit("our methods do not cover this setting")
    return stock, ours


def episode_calls(env, rng, steps: int):
    """``(worker, methods)``: ``steps`` env steps driven as an env worker does (random available
    actions; a new episode where one ends), and the observation methods alone ``steps`` times."""
    def worker(_):
        env.reset()
        for _ in range(steps):
            avail = env.get_avail_actions()
            _, done, _ = env.step(np.array([rng.choice(np.flatnonzero(a)) for a in avail]))
            env.get_state(), env.get_avail_actions(), env.get_obs()
            if done:
                env.reset()

    def methods(_):
        for _ in range(steps):
            env.get_avail_actions(), env.get_obs()

    return worker, methods


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=21, help="timed episodes (of 200 steps) of each (>= 7)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (idle machine) or cpu (this thread's CPU time)")
    opts = parser.parse_args(argv)
    src = setup("pymarl2")
    if src is None:
        return 2
    log.info("machine: %s", machine())
    stock, ours = make_envs(src)
    rng = np.random.default_rng(0)
    steps = stock.episode_limit
    calls = {}
    for name, env in (("stock", stock), ("ours", ours)):
        calls[("worker", name)], calls[("methods", name)] = episode_calls(env, rng, steps)
    medians = median_times(calls, max(7, opts.episodes), opts.clock)
    for kind, what in (("worker", "step + get_state + get_avail_actions + get_obs"),
                       ("methods", "get_avail_actions + get_obs")):
        a, b = medians[(kind, "stock")] / steps * 1e3, medians[(kind, "ours")] / steps * 1e3
        log.info("%s, ms per env step (%s clock): stock %.3f  ours %.3f  %.2fx", what, opts.clock, a, b, b / a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
