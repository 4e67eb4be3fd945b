"""The parts of benchmark scripts that turn measurements into numbers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
throughput = pytest.importorskip("smaclite_throughput")

# py-spy `record --idle --threads -f raw`: one line per distinct stack, its sample count last.
RAW = """\
thread (11): MainThread;<module> (main.py:40);run_sequential (run.py:200);ParallelRunner.run (src/runners/parallel_runner.py:99);Connection.recv (multiprocessing/connection.py:250) 50
thread (11): MainThread;<module> (main.py:40);run_sequential (run.py:200);ParallelRunner.run (src/runners/parallel_runner.py:90);NonMonoMAC.select_actions (/p/pymarl_nonmono/hosts/pymarl2/controller.py:70) 7
thread (11): MainThread;<module> (main.py:40);run_sequential (run.py:220);NonMonoLearner.train (/p/pymarl_nonmono/hosts/pymarl2/learner.py:99);RND.reward_and_update (/p/rnd.py:330) 20
thread (11): MainThread;<module> (main.py:40);run_sequential (run.py:220);NQLearner.train (src/learners/nq_learner.py:54) 3
thread (11): MainThread;<module> (main.py:40);run_sequential (run.py:150);Logger.print_recent_stats (src/utils/logging.py:50) 4
thread (11);_find_and_load (<frozen importlib._bootstrap>:1176) 6
thread (12): Thread-1 (heartbeat);Thread._bootstrap (threading.py:1002);Event.wait (threading.py:629) 90
"""


def test_main_thread_samples_are_split_into_learner_controller_env_and_other():
    counts = throughput.main_thread_shares(RAW)
    # The heartbeat thread's 90 idle samples are not the main thread's time.
    assert counts == {"env": 50, "controller": 7, "learner": 23, "other": 10}


def test_a_garbled_stack_is_counted_apart_and_not_parsed():
    garbled = RAW + "thread (11): MainThread;<module> (main.py:40);x (\x00\x03:1) (\u9b00\x00\x05\x00\n"
    counts = throughput.main_thread_shares(garbled)
    assert counts == {"env": 50, "controller": 7, "learner": 23, "other": 10, "unreadable": 1}


def test_a_train_function_outside_a_learner_is_not_learner_time():
    stack = ["<module> (main.py:1)", "Trainer.train (/somewhere/else.py:3)"]
    assert throughput.classify(stack) == "other"


timed_train = pytest.importorskip("timed_train")


class _Batch:
    batch_size, max_seq_length = 4, 7


class _BaseLearner:
    def __init__(self, calls):
        self.calls = calls

    def train(self, batch, t_env, episode_num):
        self.calls.append(t_env)


class _SubclassLearner(_BaseLearner):
    # As our PyMARL2 learner: a subclass whose train calls the base class's.
    def train(self, batch, t_env, episode_num, per_weight=None):
        return super().train(batch, t_env, episode_num)


def test_a_subclassed_learner_is_timed_once_per_update(tmp_path):
    calls: list[int] = []
    with open(tmp_path / "trace.jsonl", "w", encoding="utf-8") as out:
        build = timed_train._timing_factory(_SubclassLearner, out)
        learner = build(calls)
        learner.train(_Batch(), 10, 1)
        learner.train(_Batch(), 20, 2, per_weight=None)
    rows = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert calls == [10, 20]
    assert [(r["t_env"], r["episode"], r["B"], r["T"]) for r in rows] == [(10, 1, 4, 7), (20, 2, 4, 7)]
    assert all(r["s"] >= 0 and r["cpu_s"] >= 0 for r in rows)


def test_update_stats_keep_the_first_update_apart():
    trace = "\n".join(json.dumps({"t_env": t, "episode": t, "B": 32, "T": T, "s": s, "cpu_s": s})
                      for t, T, s in [(1, 50, 2.0), (2, 60, 0.06), (3, 40, 0.04)])
    stats = throughput.update_stats(trace)
    assert stats == {"updates": 3, "batch_steps": 150, "first_update_s": 2.0,
                     "later_updates_s": pytest.approx(0.10), "first_T": 50}
    run = throughput.Run("m", "episode", 1, "qmix", 100, 10.0, 1.0, 1.0, 1.0, 1.0, 100, **stats)
    assert run.ms_per_batch_step == pytest.approx(1000 * 0.10 / 100)


def _run(alg, learner_s, updates, batch_steps, first_T, first_s, later_s, controller_s=1.0):
    return throughput.Run("m", "parallel", 1, alg, 5000, 60.0, learner_s, controller_s, 40.0, 5.0, 100,
                          updates, batch_steps, first_s, later_s, first_T)


def test_added_at_equal_batches_removes_what_the_episodes_decide():
    # Same cost per batch step (2 ms) and first update; ours sampled batches twice as long.
    stock = _run("qmix", 0.5 + 2.0, updates=11, batch_steps=1100, first_T=100, first_s=0.5, later_s=2.0)
    ours = _run("nonmono_qmix", 0.5 + 4.0, updates=11, batch_steps=2100, first_T=100, first_s=0.5, later_s=4.0)
    assert throughput.added(ours, stock) == pytest.approx(2.0 / stock.train_s)
    assert throughput.added_at_equal_batches(ours, stock) == pytest.approx(0.0)
    # Twice stock's cost per batch step: the whole difference is ours.
    slower = _run("nonmono_qmix", 0.5 + 4.0, updates=11, batch_steps=1100, first_T=100, first_s=0.5, later_s=4.0)
    assert throughput.added_at_equal_batches(slower, stock) == pytest.approx(2.0 / stock.train_s)


def test_the_machine_line_names_cpu_torch_threads_and_gpu():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from harness import machine

    line = machine()
    assert "cores" in line and f"torch {__import__('torch').__version__}" in line and "thread" in line
    assert "GPU" in line or "cuda" in line.lower()


def test_the_profile_lists_each_learners_top_operators_per_update(caplog):
    import logging

    import torch

    import learner_step

    a, b = torch.randn(64, 64), torch.randn(64, 64)
    calls = {"products": lambda r: (a @ b) @ b, "sums": lambda r: (a + b).sum()}
    with caplog.at_level(logging.INFO, logger="learner_step"):
        learner_step.profile_updates(calls, top=1, updates=2)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("profile of products:") and "aten::mm" in lines[1] and "2 calls" in lines[1]
    assert lines[2].startswith("profile of sums:") and len(lines) == 4


def test_the_header_says_which_gru_our_agents_ran(monkeypatch):
    import learner_step
    from pymarl_nonmono.numerics import fused_gru

    monkeypatch.setattr(fused_gru, "load_error", lambda: None)
    assert learner_step.gru_kernel_in_use().startswith("fused CPU kernel")
    monkeypatch.setattr(fused_gru, "load_error", lambda: "not built (test)")
    assert learner_step.gru_kernel_in_use() == "torch GRUCell: not built (test)"


def test_the_gru_benchmark_times_both_kernels_on_the_same_work(caplog):
    import logging

    import gru_unroll
    from pymarl_nonmono.numerics.fused_gru import load_error

    if load_error() is not None:
        pytest.skip(f"fused GRU extension not built ({load_error()})")
    calls = gru_unroll.calls_for(rows=3, steps=4, hidden=5)
    assert sorted(calls) == [("fwd+bwd", "GRUCell"), ("fwd+bwd", "fused"), ("no-grad", "GRUCell"), ("no-grad", "fused")]
    with caplog.at_level(logging.INFO, logger="gru_unroll"):
        assert gru_unroll.main(["--rows", "3", "--steps", "4", "--hidden", "5", "--repeats", "7"]) == 0
    lines = [r.getMessage() for r in caplog.records if "rows x" in r.getMessage()]
    assert len(lines) == 2 and "fwd+bwd" in lines[0] and "no-grad" in lines[1] and lines[0].endswith("x")
    with pytest.raises(SystemExit):
        gru_unroll.main(["--clock", "cpu", "--threads", "2"])


@pytest.mark.integration
def test_ragged_benchmark_batches_are_laid_out_as_the_runners_leave_them(pymarl2_pristine):
    """--episodes ragged must give the learner real padding (else it would time nothing new),
    and full episodes none."""
    from host_modules import imported_from_host
    from pymarl_nonmono.hosts.pymarl_family.batch import episode_lengths, transition_mask

    import learner_step

    size = learner_step.Size(n_agents=2, n_actions=3, obs=4, state=5, batch=6, steps=7)
    with imported_from_host(pymarl2_pristine, "components.episode_buffer"):
        sys.path.insert(0, str(pymarl2_pristine / "src"))
        try:
            full = learner_step.make_batch(1, size, "full")
            ragged = learner_step.make_batch(1, size, "ragged")
        finally:
            sys.path.remove(str(pymarl2_pristine / "src"))
    lengths = learner_step.draw_lengths(1, size, "ragged")
    assert int(lengths.max()) == 7 and int(lengths.min()) < 7
    # Rows 0..L written (the final state's included); transitions 0..L-1 real, the last terminal.
    assert episode_lengths(ragged).tolist() == (lengths + 1).tolist()
    assert transition_mask(ragged).sum(1).tolist() == lengths.tolist()
    assert episode_lengths(full).tolist() == [8] * 6 and bool(transition_mask(full).all())


@pytest.mark.integration
def test_the_stag_hunt_benchmark_drives_the_stock_and_the_one_pass_env_through_worker_steps(pymarl2_host):
    import numpy as np

    from host_modules import imported_from_host

    import stag_hunt_env

    with imported_from_host(pymarl2_host, "envs.stag_hunt.stag_hunt") as module:
        stock, ours = stag_hunt_env.make_envs(pymarl2_host / "src")
        assert stock.get_obs.__func__ is module.StagHunt.get_obs  # the env's own
        assert ours.get_obs.func.__module__ == "pymarl_nonmono.hosts.pymarl2.stag_hunt"
        assert stock.miscapture_punishment == ours.miscapture_punishment == -1  # the study's setting
        for env in (stock, ours):
            worker, methods = stag_hunt_env.episode_calls(env, np.random.default_rng(0), 5)
            worker(0)
            methods(0)
            assert env.steps == 5
