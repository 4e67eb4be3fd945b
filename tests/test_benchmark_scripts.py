"""The parts of benchmark scripts that turn measurements into numbers."""

from __future__ import annotations

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
