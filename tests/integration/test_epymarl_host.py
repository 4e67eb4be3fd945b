"""End to end on a real EPyMARL checkout: install, train our algorithms and stock qmix side by
side on our matrix game and on LBF, Sacred records, uninstall.

Runs on conftest's epymarl_pristine (a clone of the EPyMARL bundle), on a temporary copy.
Each run is a real ``python src/main.py`` subprocess; they are started together (two at a
time) by one module fixture and each test reads its run's folder.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from install_helpers import assert_logged_alike, metrics_series, sigterm_once_training, tree_digest

from pymarl_nonmono import cli

pytestmark = [pytest.mark.integration]

LBF = "lbforaging:Foraging-8x8-2p-3f-v3"
SHORT = ["use_cuda=False", "test_nepisode=1", "batch_size=4", "buffer_size=16"]
ENVS = {
    "matrix_game": ("--env-config=matrix_game", ["t_max=60", "test_interval=30", "log_interval=30",
                                                 "runner_log_interval=30", "learner_log_interval=30"]),
    LBF: ("--env-config=gymma", [f"env_args.key={LBF}", "env_args.time_limit=50", "t_max=300", "test_interval=150",
                                 "log_interval=150", "runner_log_interval=150", "learner_log_interval=150"]),
}
# (--config, extra `with` words): the paper's three, one without parameter sharing (expected SARSA:
# the probs field of patch 0004) and with the sign gauge checking every update (per-agent networks'
# signs), RND on the parallel runner (our env adapter in its workers), stock qmix.
# Ours copy the target networks every target_update_interval episodes (hard), EPyMARL's q_learner
# by its own target_update_interval_or_tau (training steps, or Polyak tau if <= 1).
RUNS = [
    ("nonmono_qmix", ["target_update_interval=5"]),
    ("nonmono_qmix_sarsa", ["target_update_interval=5"]),
    ("nonmono_qmix_rnd", ["target_update_interval=5", "runner=parallel", "batch_size_run=2", "test_joint_greedy=True",
                          "igm_penalty=0.5"]),
    ("nonmono_qmix_sarsa_ns", ["target_update_interval=5", "td_bootstrap=expected_sarsa", "sign_gauge=greedy_flip",
                               "sign_gauge_interval=1", "sign_gauge_patience=1", "sign_gauge_margin=0.0"]),
    ("qmix", ["target_update_interval_or_tau=5"]),
]
OUR_STATS = {"loss_td", "td_error_abs", "q_taken_mean", "target_mean", "grad_norm", "td_error_abs_mean",
             "joint_q_taken_mean", "joint_target_mean", "target_update_count", "igm_violation_rate_lower_bound",
             "negative_mixing_gradient_rate", "worst_greedy_action_rate"}
RND_STATS = {"rnd_reward_mean", "rnd_reward_std", "rnd_loss"}


HAVE_LBF = importlib.util.find_spec("lbforaging") is not None


def run_main(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "src/main.py", *args], cwd=root, env=env, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def host(epymarl_pristine, tmp_path_factory):
    root = tmp_path_factory.mktemp("host") / "epymarl"
    shutil.copytree(epymarl_pristine, root, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__", "results"))
    pristine = tree_digest(root)
    assert cli.main(["install", str(root)]) == 0
    return root, pristine


@pytest.fixture(scope="module")
def runs(host):
    """Every (env, alg) run of RUNS, done: {(env, alg): CompletedProcess}."""
    root, _ = host
    jobs = {(env, alg): (f"--config={alg}", env_config, "with", *SHORT, *env_words, *extra)
            for env, (env_config, env_words) in ENVS.items() for alg, extra in RUNS if env != LBF or HAVE_LBF}
    with ThreadPoolExecutor(max_workers=2) as pool:
        done = {key: pool.submit(run_main, root, *args) for key, args in jobs.items()}
        return {key: future.result() for key, future in done.items()}


@pytest.mark.parametrize("env", list(ENVS))
def test_ours_and_stock_qmix_train_to_completed_with_our_statistics(host, runs, env):
    root, _ = host
    if env == LBF and not HAVE_LBF:
        pytest.skip("lbforaging is not installed: pip install lbforaging")
    for alg, _ in RUNS:
        proc = runs[(env, alg)]
        assert proc.returncode == 0, f"{alg} on {env}:\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
        # patch 0005: no GitPython DEBUG lines before the run's own output
        assert "git.cmd" not in proc.stdout + proc.stderr, alg
        # EPyMARL's folder order is <name>/<map_name or env_args.key>; one run each.
        run_dir = root / "results" / "sacred" / alg / env / "1"
        assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED", alg
        metrics = set(json.loads((run_dir / "metrics.json").read_text()))
        assert "test_return_mean" in metrics, (alg, sorted(metrics))
        if alg == "qmix":
            assert {"loss", "td_error_abs"} <= metrics and "loss_td" not in metrics
            # Our IGM diagnostics for stock learners on a game with a known payoff, the batch rates on any.
            assert ("q_tot_0_0" in metrics) is (env == "matrix_game")
            assert "negative_mixing_gradient_rate" in metrics
            continue
        expected = OUR_STATS | (RND_STATS if "rnd" in alg else set()) | ({"q_tot_0_0"} if env == "matrix_game" else set())
        if alg == "nonmono_qmix_rnd":
            expected |= {"test_joint_greedy_return_mean", "igm_hinge"}
        if alg == "nonmono_qmix_sarsa_ns":
            expected |= {"sign_flips", "negative_sign_share"}
        assert expected <= metrics, (alg, sorted(expected - metrics))
        config = json.loads((run_dir / "config.json").read_text())
        assert config["learner"] == "nonmono_learner" and config["mac"] == "nonmono_mac"


def test_per_agent_rewards_stop_at_start_up_with_one_message(host):
    root, _ = host
    proc = run_main(root, "--config=nonmono_qmix", "--env-config=matrix_game", "with", "use_cuda=False",
                    "common_reward=False")
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert out.count("pymarl-nonmono: common_reward=False") == 1


HAVE_GFOOTBALL = importlib.util.find_spec("gfootball") is not None


@pytest.mark.skipif(not HAVE_GFOOTBALL, reason="gfootball not installed: see docs/football.md (CI installs it)")
def test_our_football_env_trains_in_epymarl(host):
    # Our grf env through EPyMARL's env protocol, with the env config we ship for PyMARL2
    # (config/hosts/epymarl/envs links to it), RND on the state as in the paper's GRF runs.
    root, _ = host
    proc = run_main(root, "--config=nonmono_qmix_rnd", "--env-config=grf_academy_3_vs_1_with_keeper", "with",
                    *SHORT, "env_args.time_limit=50", "t_max=400", "test_interval=200", "log_interval=200",
                    "runner_log_interval=200", "learner_log_interval=200", "target_update_interval=5")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_json,) = (root / "results" / "sacred" / "nonmono_qmix_rnd" / "academy_3_vs_1_with_keeper").glob("*/run.json")
    assert json.loads(run_json.read_text())["status"] == "COMPLETED"
    metrics = json.loads((run_json.parent / "metrics.json").read_text())
    assert {"loss_td", "rnd_reward_mean", "test_return_mean"} <= set(metrics)


def test_a_run_stopped_by_sigterm_is_recorded_as_interrupted(host, tmp_path):
    root, _ = host
    code = sigterm_once_training(root, ["--config=nonmono_qmix", "--env-config=matrix_game", "with", *SHORT,
                                        "t_max=10000000", "name=sigterm", "runner=parallel", "batch_size_run=2"],
                                 tmp_path / "out.log")
    assert code != 0
    # EPyMARL names the folder after the config: the newest run there is this one.
    run_dir = max((root / "results" / "sacred" / "nonmono_qmix" / "matrix_game").glob("[0-9]*"), key=lambda p: int(p.name))
    assert json.loads((run_dir / "config.json").read_text())["name"] == "sigterm"
    run = json.loads((run_dir / "run.json").read_text())
    assert run["status"] == "INTERRUPTED" and run["stop_time"]


def resume_and_compare(root: Path, config: str, base: list[str], followed: tuple[str, ...], batch: int) -> int:
    """Run ``base`` with a replay of ``batch`` one-step episodes to t_max 200 unstopped, and to 110
    (checkpoints every 50 steps); resume the second from its last checkpoint to 200; every
    ``followed`` statistic the resumed run logs, from its first update on (the replay is not saved:
    ``batch`` new episodes first), must equal the unstopped run's at the same step. Returns the
    step resumed from."""
    base = [*base, f"buffer_size={batch}", f"batch_size={batch}"]
    infos = {}
    for name, extra in (("unstopped", ["t_max=200"]), ("stopped", ["t_max=110"])):
        proc = run_main(root, *base, *extra, f"name={config}_{name}")
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    saved = sorted((root / "results" / "models").glob(f"{config}_stopped_seed7_*"))[-1]
    step = max(int(p.name) for p in saved.iterdir() if p.name.isdigit())
    proc = run_main(root, *base, "t_max=200", f"checkpoint_path={saved}", f"load_step={step}",
                    f"sweep_resume_step={step}", f"name={config}_resumed")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("unstopped", "resumed"):
        (run_dir,) = [d for d in (root / "results" / "sacred" / config / "matrix_game").glob("[0-9]*")
                      if json.loads((d / "config.json").read_text())["name"] == f"{config}_{name}"]
        infos[name] = metrics_series(json.loads((run_dir / "metrics.json").read_text()))
    assert_logged_alike(infos["resumed"], infos["unstopped"], followed, step + batch)
    for key in followed:  # every update after the resume is compared
        assert len(infos["resumed"][key][0]) >= 30, key
    return step


# One-step episodes, every update logged, checkpoints every 50 steps.
RESUME_WORDS = ["use_cuda=False", "runner=episode", "batch_size_run=1", "env_args.preset=paper_b", "seed=7",
                "test_interval=25", "test_nepisode=1", "log_interval=50", "runner_log_interval=50",
                "learner_log_interval=1", "save_model=True", "save_model_interval=50"]


def test_a_run_resumed_from_its_checkpoint_logs_what_the_unstopped_run_logs(host):
    # As on PyMARL2 (test_pymarl2_host.py): RND and the sign gauge on, target copies included;
    # EPyMARL's run.py loads the checkpoint the same way.
    root, _ = host
    resume_and_compare(root, "nonmono_qmix_rnd",
                       ["--config=nonmono_qmix_rnd", "--env-config=matrix_game", "with", *RESUME_WORDS,
                        "target_update_interval=20", "epsilon_anneal_time=150", "sign_gauge=greedy_flip",
                        "sign_gauge_interval=2", "sign_gauge_patience=1"],
                       ("loss_td", "rnd_loss", "target_update_count", "sign_flips", "q_tot_0_0"), batch=1)


def test_a_stock_learner_resumed_from_its_checkpoint_logs_what_the_unstopped_run_logs(host):
    # EPyMARL's q_learner saves its agent, mixer and optimiser; the random streams and its target
    # mixer come from the state file our registration adds. Our softmax selector draws nothing in
    # greedy test episodes, so the resumed run's extra test at its start leaves the streams aligned.
    # Batches of one episode (a larger one loses updates at the resume: the replay is not saved),
    # so without qmix.yaml's standardise_rewards, whose variance of a single reward is NaN; its
    # running statistics are restored too (tests/hosts/test_stock_checkpoint.py).
    root, _ = host
    resume_and_compare(root, "qmix",
                       ["--config=qmix", "--env-config=matrix_game", "with", *RESUME_WORDS, "standardise_rewards=False",
                        "action_selector=softmax", "temperature_start=2.0"],
                       ("loss", "grad_norm", "td_error_abs", "q_taken_mean", "target_mean"), batch=1)


def test_uninstall_restores_the_checkout(host, runs):
    # Last in this file: the tests above need the installed checkout.
    root, pristine = host
    assert cli.main(["uninstall", str(root)]) == 0
    shutil.rmtree(root / "results")
    for cache in list(root.rglob("__pycache__")):
        shutil.rmtree(cache)
    assert tree_digest(root) == pristine

