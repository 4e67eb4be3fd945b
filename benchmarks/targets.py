"""TD(lambda) targets: ours against PyMARL2's ``build_td_lambda_targets`` loop.

Times :func:`pymarl_nonmono.numerics.targets.lambda_returns` against PyMARL2's
``utils.rl_utils.build_td_lambda_targets``, and ``q_lambda_returns`` against
``build_q_lambda_targets``, on the same float32 batches (episodes of random length that
terminate or run to the horizon, where both compute the same targets; checked before
timing), each with the tensor layout its learner passes, one thread, interleaved. Prints
median times and the ratio ours/stock, and exits with status 1 if ours is slower
anywhere. Needs a PyMARL2 checkout:

    PYMARL2_DIR=/path/to/pymarl2 python benchmarks/targets.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch
from torch.testing import assert_close

from harness import median_times, setup

log = logging.getLogger("targets")
BATCHES = (32, 128)
HORIZONS = (60, 150, 400, 1000)  # 400: corridor's episode limit
GAMMA, TD_LAMBDA = 0.99, 0.6  # PyMARL2's qmix.yaml


def make_batch(batch: int, steps: int, seed: int) -> dict[str, torch.Tensor]:
    """``[B, T]`` / ``[B, T + 1]`` float32 tensors; no episode is truncated before the horizon."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=gen)
    step = torch.arange(steps)
    mask = (step < lengths[:, None]).float()
    # Shorter episodes end by termination; one at the horizon terminates or not.
    ends = (~(lengths == steps) | (torch.rand(batch, generator=gen) < 0.5))[:, None]
    terminated = ((step == lengths[:, None] - 1) & ends).float()
    values = torch.randn(batch, steps + 1, generator=gen)
    return {
        "rewards": torch.randn(batch, steps, generator=gen),
        "terminated": terminated,
        "mask": mask,
        "values": values,
        "taken": values - torch.rand(batch, steps + 1, generator=gen),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per function")
    opts = parser.parse_args(argv)
    if setup() is None:
        return 2
    from utils.rl_utils import build_q_lambda_targets, build_td_lambda_targets

    from pymarl_nonmono.numerics.targets import lambda_returns, q_lambda_returns

    rows = []
    for batch in BATCHES:
        for steps in HORIZONS:
            x = make_batch(batch, steps, seed=steps + batch)
            # PyMARL2's learner passes [B, T(+1), 1] tensors and n_agents (unused).
            y = {key: value.unsqueeze(-1) for key, value in x.items()}
            pairs = {
                "td_lambda": (
                    lambda: lambda_returns(x["rewards"], x["terminated"], x["mask"], x["values"],
                                           GAMMA, TD_LAMBDA),
                    lambda: build_td_lambda_targets(y["rewards"], y["terminated"], y["mask"],
                                                    y["values"], 1, GAMMA, TD_LAMBDA),
                ),
                "q_lambda": (
                    lambda: q_lambda_returns(x["rewards"], x["terminated"], x["mask"], x["values"],
                                             x["taken"], GAMMA, TD_LAMBDA),
                    lambda: build_q_lambda_targets(y["rewards"], y["terminated"], y["mask"],
                                                   y["values"], y["taken"], GAMMA, TD_LAMBDA),
                ),
            }
            for target, (ours, stock) in pairs.items():
                assert_close(ours(), stock().squeeze(-1), rtol=1e-4, atol=1e-4)
                med = median_times({"ours": lambda _: ours(), "stock": lambda _: stock()}, opts.repeats)
                rows.append((target, batch, steps, med["stock"], med["ours"]))

    log.info("TD targets, float32, 1 thread, median of %d calls", opts.repeats)
    log.info("| target | B | T | PyMARL2 loop (ms) | ours (ms) | ours/stock |")
    log.info("|---|---|---|---|---|---|")
    slower = []
    for target, batch, steps, stock, ours in rows:
        log.info("| %s | %d | %d | %.2f | %.2f | %.2f |", target, batch, steps, stock * 1e3, ours * 1e3,
                 ours / stock)
        if ours > stock:
            slower.append(f"{target} B={batch} T={steps}")
    if slower:
        log.error("slower than PyMARL2's loop at: %s", ", ".join(slower))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
