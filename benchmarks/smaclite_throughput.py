"""Training throughput on SMAClite maps, and where the time goes: stock qmix against our configs.

For each map and runner, one ``python src/main.py`` training run per algorithm, all with
the same settings, one after the other; each run is sampled by py-spy (``pip install
py-spy``), 100 times a second, idle time included, in the main process. A sample whose
Python stack is inside

- a learner's ``train``: learner update;
- a controller's ``select_actions``: action selection (our controller or stock's);
- a runner's ``run`` but neither of the above: environment (SMAClite's step, and with the
  parallel runner the wait for the env workers) and the runner's own bookkeeping;

anything else is start-up, logging and shutdown. Seconds per part are the run's wall time
times the part's share of samples. ``train steps/s`` = env steps / (runner + learner seconds),
i.e. without start-up. Ratios are against stock qmix measured in the same invocation;
``added`` is what our controller and learner take beyond stock's, as a share of stock's
runner + learner time (the issue's budget: at most 5%).

The learner's ``train`` is also timed update by update (``timed_train.py``), with each
batch's length T. A run's learner seconds are cost per batch step x number of updates x T,
and the last two follow the policies: a batch is as long as its longest episode, so one
episode that reaches the time limit lengthens every batch that samples it. Hence ``ms/step``
(learner ms per batch time step, first update excluded), ``1st s`` (the first update, which
logs and holds one-time checks) and ``added@eq``: ``added`` had our learner trained on
stock's batches (:func:`added_at_equal_batches`), i.e. the cost of our code alone.

    PYMARL2_DIR=/path/to/patched/pymarl2 python benchmarks/smaclite_throughput.py \\
        [--map 3s_vs_5z --map corridor ...] [--runner episode --runner parallel] \\
        [--steps 3s_vs_5z=20000 ...] [--seed 1 --seed 2] [--keep DIR] [--csv out.csv]

Needs a checkout with pymarl-nonmono installed (``pymarl-nonmono install``), SMAClite and
py-spy. Run on an otherwise idle machine, with nothing else in the background.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path

from harness import setup

log = logging.getLogger("smaclite_throughput")

ALGS = ("qmix", "nonmono_qmix", "nonmono_qmix_sarsa", "nonmono_qmix_rnd")
STOCK = "qmix"
MAPS = ("3s_vs_5z", "corridor", "3s5z_vs_3s6z")
# Env steps per run: corridor's 24 enemies make SMAClite ~8x slower per step.
DEFAULT_STEPS = {"3s_vs_5z": 6000, "corridor": 1500, "3s5z_vs_3s6z": 5000}
RUNNERS = {"episode": "runner=episode batch_size_run=1", "parallel": "runner=parallel batch_size_run=2"}
# Identical for every algorithm: the learner starts after 32 episodes, as it would with
# batch_size 32, and keeps every episode; tests only at the start and end.
COMMON = ("use_cuda=False save_model=False buffer_size=5000 batch_size=32 test_nepisode=2 "
          "test_interval=1000000 log_interval=1000000 runner_log_interval=1000000 learner_log_interval=1000000")

PARTS = ("learner", "controller", "env")
TIMED_TRAIN = Path(__file__).resolve().with_name("timed_train.py")
FRAME = re.compile(r"^(?P<func>[^ ]+) \((?P<file>[^:]+):\d+\)$")


@dataclass
class Run:
    map: str
    runner: str
    seed: int
    alg: str
    steps: int
    wall_s: float
    learner_s: float
    controller_s: float
    env_s: float
    other_s: float
    samples: int
    updates: int
    batch_steps: int
    first_update_s: float
    later_updates_s: float
    first_T: int

    @property
    def train_s(self) -> float:
        return self.learner_s + self.controller_s + self.env_s

    @property
    def steps_per_s(self) -> float:
        return self.steps / self.train_s if self.train_s > 0 else float("nan")

    @property
    def ms_per_batch_step(self) -> float:
        """Learner milliseconds per time step of the sampled batches, first update excluded."""
        later = self.batch_steps - self.first_T
        return 1000 * self.later_updates_s / later if later > 0 else float("nan")


def update_stats(trace: str) -> dict:
    """Number of updates, total batch length, first and later updates' seconds, first T,
    from ``timed_train.py``'s JSON lines."""
    rows = [json.loads(line) for line in trace.splitlines() if line.strip()]
    if not rows:
        return {"updates": 0, "batch_steps": 0, "first_update_s": 0.0, "later_updates_s": 0.0, "first_T": 0}
    return {"updates": len(rows), "batch_steps": sum(r["T"] for r in rows), "first_update_s": rows[0]["s"],
            "later_updates_s": sum(r["s"] for r in rows[1:]), "first_T": rows[0]["T"]}


def classify(stack: list[str]) -> str:
    """The part a main-thread stack belongs to (module docstring)."""
    frames = [FRAME.match(f) for f in stack]
    frames = [(m["func"], m["file"]) for m in frames if m]
    if any(func.endswith("train") and ("/learners/" in file or file.endswith("pymarl2/learner.py"))
           for func, file in frames):
        return "learner"
    if any(func.endswith("select_actions") for func, _ in frames):
        return "controller"
    if any(func.endswith(".run") and file.endswith("_runner.py") for func, file in frames):
        return "env"
    return "other"


def main_thread_shares(raw: str) -> Counter:
    """Samples per part, of the main thread only, from py-spy's ``--threads -f raw`` output."""
    counts: Counter = Counter()
    main_tid = None
    lines = [line for line in raw.splitlines() if line.strip()]
    for line in lines:
        m = re.match(r"^thread \((\d+)\): MainThread", line)
        if m:
            main_tid = m.group(1)
            break
    for line in lines:
        head, _, count = line.rpartition(" ")
        m = re.match(r"^thread \((\d+)\)(?:: [^;]*)?;?(.*)$", head)
        if not m or m.group(1) != main_tid:
            continue
        if not count.isdigit():
            # --nonblocking reads the process's memory while it runs: now and then a stack
            # comes out garbled. Those samples are dropped, and counted.
            counts["unreadable"] += 1
            continue
        counts[classify(m.group(2).split(";") if m.group(2) else [])] += int(count)
    return counts


def run_one(src: Path, alg: str, map_name: str, runner: str, seed: int, steps: int, workdir: Path) -> Run:
    raw = workdir / f"{map_name}_{runner}_{seed}_{alg}.txt"
    trace = workdir / f"{map_name}_{runner}_{seed}_{alg}.jsonl"
    cmd = (["py-spy", "record", "--idle", "--threads", "--nonblocking", "-r", "100", "-f", "raw", "-o", str(raw),
            "--", sys.executable, str(TIMED_TRAIN), str(trace), "src/main.py", f"--config={alg}",
            "--env-config=smaclite", "with", f"env_args.map_name={map_name}", f"t_max={steps}", f"seed={seed}", f"name=throughput_{alg}"]
           + RUNNERS[runner].split() + COMMON.split())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=src.parent, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0 or not raw.is_file():
        raise RuntimeError(f"{alg} on {map_name} ({runner}) failed, exit {proc.returncode}:\n{proc.stdout[-3000:]}")
    counts = main_thread_shares(raw.read_text(errors="replace"))
    unreadable = counts.pop("unreadable", 0)
    if unreadable:
        log.warning("%s on %s (%s): %d garbled py-spy stacks dropped", alg, map_name, runner, unreadable)
    total = sum(counts.values())
    if total == 0:
        raise RuntimeError(f"py-spy recorded no main-thread samples in {raw}")
    share = {part: wall * counts[part] / total for part in (*PARTS, "other")}
    return Run(map_name, runner, seed, alg, steps, wall, share["learner"], share["controller"], share["env"],
               share["other"], total, **update_stats(trace.read_text() if trace.is_file() else ""))


def added(run: Run, stock: Run) -> float:
    """What ``run``'s controller and learner took beyond stock's, as a share of stock's
    runner + learner time (py-spy's split of the wall time)."""
    return ((run.controller_s + run.learner_s) - (stock.controller_s + stock.learner_s)) / stock.train_s


def added_at_equal_batches(run: Run, stock: Run) -> float:
    """:func:`added` with ``run``'s learner given stock's updates: its first update, then its
    cost per batch time step over stock's later batches. Both learners' seconds from the
    per-update timer. Separates our code's cost from the number and length of updates, which
    the policies decide (one episode that reaches the time limit makes every batch that
    samples it that long)."""
    learner_at_stock_batches = run.first_update_s + run.ms_per_batch_step / 1000 * (stock.batch_steps - stock.first_T)
    stock_learner = stock.first_update_s + stock.later_updates_s
    return ((run.controller_s - stock.controller_s) + (learner_at_stock_batches - stock_learner)) / stock.train_s


def report(runs: list[Run]) -> None:
    stock = next(r for r in runs if r.alg == STOCK)
    log.info("%s, %s runner, seed %d, %d env steps each (ratios against stock qmix in this invocation)",
             stock.map, stock.runner, stock.seed, stock.steps)
    log.info("%-20s %7s %9s %8s %8s %8s %8s %9s %7s %8s %7s %6s %8s %7s %9s",
             "algorithm", "wall s", "train s/s", "ratio", "env s", "ctrl s", "learn s", "other s", "added",
             "updates", "mean T", "1st s", "ms/step", "ratio", "added@eq")
    for r in runs:
        mean_t = r.batch_steps / r.updates if r.updates else float("nan")
        log.info("%-20s %7.1f %9.1f %7.2fx %8.1f %8.1f %8.1f %9.1f %+6.1f%% %8d %7.1f %6.2f %8.3f %6.2fx %+8.1f%%",
                 r.alg, r.wall_s, r.steps_per_s, r.steps_per_s / stock.steps_per_s, r.env_s, r.controller_s,
                 r.learner_s, r.other_s, 100 * added(r, stock), r.updates, mean_t, r.first_update_s,
                 r.ms_per_batch_step, r.ms_per_batch_step / stock.ms_per_batch_step,
                 100 * added_at_equal_batches(r, stock))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--map", action="append", choices=MAPS, help="map (repeatable; default: all three)")
    parser.add_argument("--runner", action="append", choices=sorted(RUNNERS), help="runner (repeatable; default both)")
    parser.add_argument("--steps", action="append", default=[], metavar="MAP=N", help="env steps of each run on MAP")
    parser.add_argument("--alg", action="append", choices=ALGS, help="algorithms (default: all; qmix always runs)")
    parser.add_argument("--seed", action="append", type=int, help="the runs' seed (repeatable; default 1): the "
                        "policies, hence the number and length of updates, differ between seeds")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep py-spy's samples and the per-update "
                        "timings (timed_train.py's JSON lines, with CPU seconds) in DIR")
    parser.add_argument("--csv", type=Path, help="also write every run's numbers here")
    opts = parser.parse_args(argv)
    src = setup()
    if src is None:
        return 2
    if shutil.which("py-spy") is None:
        log.error("py-spy not found: pip install py-spy")
        return 2
    steps = dict(DEFAULT_STEPS)
    for item in opts.steps:
        name, _, value = item.partition("=")
        if name not in MAPS or not value.isdigit():
            parser.error(f"--steps {item!r}: expected MAP=N with MAP one of {', '.join(MAPS)}")
        steps[name] = int(value)
    algs = [STOCK] + [a for a in (opts.alg or ALGS) if a != STOCK]
    everything: list[Run] = []
    if opts.keep:
        opts.keep.mkdir(parents=True, exist_ok=True)
    workdir = contextlib.nullcontext(str(opts.keep)) if opts.keep else tempfile.TemporaryDirectory(prefix="throughput-")
    with workdir as tmp:
        for map_name in opts.map or MAPS:
            for runner in opts.runner or sorted(RUNNERS):
                for seed in opts.seed or [1]:
                    runs = [run_one(src, alg, map_name, runner, seed, steps[map_name], Path(tmp)) for alg in algs]
                    report(runs)
                    everything += runs
    if opts.csv:
        with open(opts.csv, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow([f.name for f in fields(Run)] + ["train_s", "steps_per_s", "ms_per_batch_step"])
            for r in everything:
                writer.writerow([getattr(r, f.name) for f in fields(Run)] + [r.train_s, r.steps_per_s, r.ms_per_batch_step])
    return 0


if __name__ == "__main__":
    sys.exit(main())
