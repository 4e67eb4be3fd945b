"""The agents' GRU alone: our fused CPU kernel against torch's ``GRUCell`` stepped once per time
step (how stock PyMARL2 and EPyMARL agents run it), forward and backward, and forward without
gradients (the target network). Needs no host checkout:

    python benchmarks/gru_unroll.py [--rows 256 --rows 1024] [--steps 61] [--threads 1] [--clock cpu]

Rows are episodes x agents (PyMARL2's batch_size 128 x 8 agents = 1,024; the learner benchmark's
3s5z batch, 32 x 8 = 256). Runs interleaved; prints each median and the ratio fused / GRUCell.
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch
from torch import nn

from pymarl_nonmono.numerics.fused_gru import gru_steps, load_error

from harness import CLOCKS, machine, median_times

log = logging.getLogger("gru_unroll")


def grucell_steps(cell: nn.GRUCell, x: torch.Tensor, rows, h0: torch.Tensor) -> torch.Tensor:
    """What the stock agents do: the cell once per step."""
    out, h = [], h0
    for step in x.split(list(rows)):
        h = cell(step, h)
        out.append(h)
    return torch.cat(out)


def calls_for(rows: int, steps: int, hidden: int, seed: int = 0):
    """``{(kind, name): call}``: fwd+bwd and no-grad, GRUCell and fused, on the same data."""
    torch.manual_seed(seed)
    cell = nn.GRUCell(hidden, hidden)
    x = torch.randn(steps * rows, hidden)
    h0 = torch.zeros(rows, hidden)
    per_step = [rows] * steps
    calls = {}
    for name, run in (("GRUCell", grucell_steps), ("fused", gru_steps)):
        def train(_, run=run):
            inputs = x.detach().requires_grad_()  # as the encoder's output is in learning
            run(cell, inputs, per_step, h0).sum().backward()

        def target(_, run=run):
            with torch.no_grad():
                run(cell, x, per_step, h0)

        calls[("fwd+bwd", name)] = train
        calls[("no-grad", name)] = target
    return calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, action="append", help="rows per step (repeatable; default 256 and 1024)")
    parser.add_argument("--steps", type=int, default=61, help="time steps (default 61: 3s5z's T+1)")
    parser.add_argument("--hidden", type=int, default=64, help="GRU width (default 64, PyMARL2's rnn_hidden_dim)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=21, help="timed calls of each (>= 7)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="wall (idle machine) or cpu (this thread's CPU time: only with --threads 1)")
    opts = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if opts.clock == "cpu" and opts.threads != 1:
        parser.error("--clock cpu counts this thread only: use it with --threads 1")
    error = load_error()
    if error is not None:
        log.error("nothing to compare: %s", error)
        return 2
    torch.set_num_threads(opts.threads)
    log.info("machine: %s", machine())
    for rows in opts.rows or (256, 1024):
        medians = median_times(calls_for(rows, opts.steps, opts.hidden), max(7, opts.repeats), opts.clock)
        for kind in ("fwd+bwd", "no-grad"):
            stock, fused = medians[(kind, "GRUCell")], medians[(kind, "fused")]
            log.info("%4d rows x %d steps, width %d, %s: GRUCell %7.2f ms  fused %7.2f ms  %.2fx", rows,
                     opts.steps, opts.hidden, kind, stock * 1e3, fused * 1e3, fused / stock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
