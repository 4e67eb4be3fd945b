"""Run a PyMARL2 ``src/main.py`` with the learner's ``train`` timed: one JSON line per update.

    cd "$PYMARL2_DIR" && python /path/to/benchmarks/timed_train.py OUT.jsonl src/main.py --config=qmix ...

A run's learner seconds are per-update cost x number of updates x batch length (a batch is
as long as its longest episode), and the last two follow the policies. Timing every update
with the batch's length separates them, for stock learners and ours alike: the learner that
``run.py`` builds gets an instance-level wrapper, so a subclass calling ``super().train`` is
timed once. Each line: ``t_env``, ``episode``, ``B`` and ``T`` of the batch, wall seconds
``s`` and this thread's CPU seconds ``cpu_s``.
"""

from __future__ import annotations

import functools
import json
import runpy
import sys
import time
from pathlib import Path


def _timed(train, out):
    @functools.wraps(train)
    def timed_train(batch, t_env, episode_num, *rest, **kwargs):
        wall, cpu = time.perf_counter(), time.thread_time()
        result = train(batch, t_env, episode_num, *rest, **kwargs)
        row = {"t_env": int(t_env), "episode": int(episode_num), "B": int(batch.batch_size),
               "T": int(batch.max_seq_length), "s": time.perf_counter() - wall,
               "cpu_s": time.thread_time() - cpu}
        out.write(json.dumps(row) + "\n")
        out.flush()
        return result
    return timed_train


def _timing_factory(cls, out):
    @functools.wraps(cls, updated=())
    def build(*args, **kwargs):
        learner = cls(*args, **kwargs)
        learner.train = _timed(learner.train, out)
        return learner
    return build


def main(argv: list[str]) -> None:
    if len(argv) < 2 or not argv[1].endswith("main.py"):
        sys.exit("usage: timed_train.py OUT.jsonl path/to/src/main.py [main.py arguments]")
    out_path, main_py = Path(argv[0]), Path(argv[1]).resolve()
    sys.path.insert(0, str(main_py.parent))
    import learners
    import run as host_run

    out = open(out_path, "w", encoding="utf-8")

    # Plugins register their learners when main.py starts, i.e. after this point; run
    # functions are called once everything is registered, so wrap the learners there.
    def wrap_learners_then(fn):
        @functools.wraps(fn)
        def run_with_timed_learners(*args, **kwargs):
            for name, cls in list(learners.REGISTRY.items()):
                learners.REGISTRY[name] = _timing_factory(cls, out)
            return fn(*args, **kwargs)
        return run_with_timed_learners

    for name, fn in list(host_run.REGISTRY.items()):
        host_run.REGISTRY[name] = wrap_learners_then(fn)
    sys.argv = [str(main_py)] + argv[2:]
    try:
        runpy.run_path(str(main_py), run_name="__main__")
    finally:
        out.close()


if __name__ == "__main__":
    main(sys.argv[1:])
