"""End to end on a real PyMARL2 checkout: install, train, Sacred records, uninstall.

Runs on conftest's pymarl2_pristine ($PYMARL2_DIR, else a clone of hijkzzz/pymarl2 at
8ccac7c); works on a temporary copy. Each run is a real ``python src/main.py`` subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from install_helpers import assert_logged_alike, info_series, sigterm_once_training

from pymarl_nonmono import cli

pytestmark = [pytest.mark.integration]

SHORT = [
    "use_cuda=False", "t_max=120", "test_interval=40", "test_nepisode=4", "log_interval=40",
    "runner_log_interval=40", "learner_log_interval=40", "batch_size=8", "buffer_size=32",
    "target_update_interval=20",
]
LEARNER_STATS = {"loss_td", "td_error_abs", "q_taken_mean", "target_mean", "grad_norm"}
OUR_STATS = {"td_error_abs_mean", "joint_q_taken_mean", "joint_target_mean", "target_update_count",
             "igm_violation_rate", "igm_violation_rate_lower_bound"}
RND_STATS = {"rnd_reward_mean", "rnd_reward_std", "rnd_loss"}


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file in the checkout, ignoring run outputs and bytecode."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        # .git/: Sacred's `git diff` of every run refreshes .git/index; git's bookkeeping, not the checkout.
        if path.is_file() and not rel.startswith(("results/", ".git/")) and "__pycache__" not in rel:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def host(pymarl2_pristine, tmp_path_factory):
    root = tmp_path_factory.mktemp("host") / "pymarl2"
    shutil.copytree(pymarl2_pristine, root, symlinks=True, ignore=shutil.ignore_patterns("results", "__pycache__"))
    pristine = tree_digest(root)
    assert cli.main(["install", str(root)]) == 0
    assert tree_digest(root) != pristine
    return root, pristine


def run_main(root: Path, *args: str, env_extra: dict | None = None, timeout: int = 900):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run(
        [sys.executable, "src/main.py", *args], cwd=root, env=env, capture_output=True, text=True,
        timeout=timeout, stdin=subprocess.DEVNULL,
    )


def refused_output(proc) -> str:
    """The output of a run that must stop with a message of ours, not a traceback."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Traceback" not in out
    return out


def latest_run(root: Path, map_name: str, name: str) -> Path:
    runs = [p for p in (root / "results" / "sacred" / map_name / name).iterdir() if p.name.isdigit()]
    return max(runs, key=lambda p: int(p.name))


def trained_info(root: Path, map_name: str, name: str, *args: str) -> dict:
    """Run ``main.py`` with ``args`` as run ``name``, which must succeed; its Sacred info.json."""
    proc = run_main(root, *args, f"name={name}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((latest_run(root, map_name, name) / "info.json").read_text())


@pytest.mark.parametrize(
    "alg,name,extra",
    [
        ("nonmono_qmix", "nonmono_qmix", []),
        ("nonmono_qmix_sarsa", "nonmono_qmix_sarsa", []),
        ("nonmono_qmix_rnd", "nonmono_qmix_rnd", []),
        ("nonmono_qmix_rnd", "nonmono_qmix_rnd_episode", ["runner=episode", "batch_size_run=1"]),
        ("qmix", "qmix_env=8_adam_td_lambda", []),
    ],
)
def test_trains_on_matrix_game_and_sacred_records_metrics(host, alg, name, extra):
    root, _ = host
    if name.endswith("_episode"):
        extra = extra + [f"name={name}"]
    proc = run_main(root, f"--config={alg}", "--env-config=one_step_matrix_game", "with", *SHORT, *extra)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = latest_run(root, "one_step_matrix_game", name)
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    info = json.loads((run_dir / "info.json").read_text())
    expected = LEARNER_STATS | (RND_STATS if "rnd" in alg else set()) | (OUR_STATS if alg.startswith("nonmono") else set())
    assert expected <= set(info), sorted(info)
    assert "test_return_mean" in info
    config = json.loads((run_dir / "config.json").read_text())
    if alg.startswith("nonmono"):
        assert config["mixer"] == "nonmono_qmix" and config["learner"] == "nonmono_learner"


def test_mission_command_without_starcraft_fails_with_one_clear_message(host, tmp_path):
    root, _ = host
    proc = run_main(
        root, "--config=nonmono_qmix_rnd", "--env-config=sc2", "with", "env_args.map_name=3s5z_vs_3s6z",
        "use_cuda=False", env_extra={"SC2PATH": str(tmp_path / "no_sc2")},
    )
    out = refused_output(proc)
    assert out.count("no StarCraft II game at") == 1 and str(tmp_path / "no_sc2") in out
    assert "s2client-proto" in out  # how to install


@pytest.mark.parametrize("alg", ["nonmono_qmix", "qmix"])
def test_misspelled_key_on_the_command_line_is_an_error(host, alg):
    # Our plugin refuses a `with` key that no config of the run has before Sacred does
    # (Sacred's ConfigAddedError says nothing of what was meant), for stock algorithms too.
    root, _ = host
    proc = run_main(root, f"--config={alg}", "--env-config=one_step_matrix_game", "with",
                    "use_cuda=False", "td_lamda=0.3")
    out = refused_output(proc)
    assert "pymarl-nonmono: unknown config key(s): 'td_lamda' (did you mean 'td_lambda'?)" in out
    assert "ConfigAddedError" not in out


@pytest.mark.parametrize("args,message", [
    (["--config=qmx", "--env-config=matrix_game"], "--config=qmx: no such config (did you mean --config=qmix?)"),
    (["--config=qmix", "--env-config=smaclit"], "--env-config=smaclit: no such config (did you mean --env-config=smaclite?)"),
])
def test_a_misspelled_config_name_gets_a_did_you_mean(host, args, message):
    root, _ = host
    assert message in refused_output(run_main(root, *args, "with", "use_cuda=False"))


def cheap_doc_commands() -> list[tuple[str, list[str]]]:
    """The docs' main.py commands that run in seconds here: matrix games, short budgets."""
    import shlex

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from test_docs_commands import COMMANDS

    cheap = []
    for where, line in COMMANDS:
        args = shlex.split(line.partition("   #")[0].split("src/main.py", 1)[1])
        env = next((a.split("=", 1)[1] for a in args if a.startswith("--env-config=")), "")
        t_max = next((int(a.split("=", 1)[1]) for a in args if a.startswith("t_max=")), None)
        if env in ("matrix_game", "one_step_matrix_game") and "--config=ALG" not in args and (
                "--config=nonmono_qmix_matrix" in args or (t_max or 10**9) <= 2000):
            cheap.append((where, args))
    return cheap


@pytest.mark.parametrize("where,args", cheap_doc_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_the_docs_cheap_commands_run_as_written(host, where, args):
    root, _ = host
    proc = run_main(root, *args, env_extra={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, (where, proc.stdout[-2000:] + proc.stderr[-2000:])
    assert "Completed after" in proc.stdout + proc.stderr


def test_stock_algorithm_trains_with_our_softmax_exploration(host):
    # The README offers stock algorithms our Boltzmann selector; its keys must be ones a stock
    # config accepts on the command line.
    root, _ = host
    proc = run_main(root, "--config=qmix", "--env-config=one_step_matrix_game", "with", *SHORT,
                    "action_selector=softmax", "temperature_start=2.0", "selector_schedule=exp", "name=qmix_softmax")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # patch 0006: no pygame banner or GitPython DEBUG lines before the run's own output
    assert "git.cmd" not in proc.stdout + proc.stderr and "pygame community" not in proc.stdout + proc.stderr
    run_dir = latest_run(root, "one_step_matrix_game", "qmix_softmax")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["action_selector"], config["temperature_start"], config["selector_schedule"]) == ("softmax", 2.0, "exp")


def test_no_warning_that_is_not_the_users_business(host):
    # sacred's import warned "pkg_resources is deprecated"; PyMARL2 printed the ImportError
    # of the optional gfootball on every run.
    root, _ = host
    proc = run_main(root, "--config=qmix", "--env-config=one_step_matrix_game", "with", "use_cuda=False", "t_max=20",
                    "env_args.map_name=one_step_matrix_game", "seed=3")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "pkg_resources" not in out and "No module named 'gfootball'" not in out
    # Nor our own DEBUG lines (PyMARL2's console shows DEBUG), unless asked for; nor torch's
    # warning about copying a tensor, which PyMARL2's EpisodeBatch.update caused at every step.
    ours = [line for line in out.splitlines() if line.startswith("[DEBUG") and "pymarl_nonmono" in line]
    assert not ours, ours
    assert "To copy construct from a tensor" not in out
    proc = run_main(root, "--config=nonmono_qmix", "--env-config=one_step_matrix_game", "with", "use_cuda=False",
                    "t_max=20", "seed=3", env_extra={"PYMARL_NONMONO_DEBUG": "1"})
    assert proc.returncode == 0 and "pymarl-nonmono registered" in proc.stdout + proc.stderr


def test_misspelled_key_in_a_users_yaml_is_an_error_at_startup(host):
    # A YAML typo passes Sacred (the key is in the config); our start-up check names it.
    root, _ = host
    ours = Path(cli.__file__).resolve().parents[1] / "config" / "algs" / "nonmono_qmix.yaml"
    text = ours.read_text().replace("td_lambda: 0.6", "td_lamda: 0.6").replace('name: "nonmono_qmix"', 'name: "typo"')
    (root / "src" / "config" / "algs" / "my_typo.yaml").write_text(text)
    try:
        proc = run_main(root, "--config=my_typo", "--env-config=one_step_matrix_game", "with", "use_cuda=False")
    finally:
        (root / "src" / "config" / "algs" / "my_typo.yaml").unlink()
    assert "unknown config key(s): 'td_lamda' (did you mean 'td_lambda'?)" in refused_output(proc)


def test_invalid_value_is_an_error_at_startup(host):
    root, _ = host
    proc = run_main(root, "--config=nonmono_qmix_sarsa", "--env-config=one_step_matrix_game", "with",
                    "use_cuda=False", "td_lambda=1.5")
    assert "td_lambda=1.5 is outside the allowed range" in refused_output(proc)


def test_matrix_game_run_records_igm_diagnostics(host):
    root, _ = host
    info = trained_info(root, "matrix_game", "nonmono_qmix", "--config=nonmono_qmix", "--env-config=matrix_game",
                        "with", *SHORT, "runner=episode", "batch_size_run=1", "env_args.preset=climbing")
    expected = {"igm_violation_rate", "igm_violation_rate_lower_bound", "igm_consistent", "greedy_optimal", "payoff_max_abs_error",
                "greedy_joint_index", "q_tot_0_0", "q_tot_2_2", "test_optimal_mean"}
    assert expected <= set(info), sorted(info)


@pytest.mark.parametrize("alg,name", [("qmix", "qmix_env=8_adam_td_lambda"), ("qplex", "qplex_env=8_adam_td_lambda")])
def test_stock_learner_on_matrix_game_records_payoff_diagnostics(host, alg, name):
    # Monotonic QMIX and QPLEX are IGM by construction: a diagnostic that says otherwise is wrong.
    root, _ = host
    proc = run_main(root, f"--config={alg}", "--env-config=matrix_game", "with", *SHORT,
                    "runner=episode", "batch_size_run=1")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    info = json.loads((latest_run(root, "matrix_game", name) / "info.json").read_text())
    assert {"payoff_max_abs_error", "greedy_optimal", "q_tot_0_0", "q_tot_2_2"} <= set(info), sorted(info)
    assert info["igm_consistent"] and set(info["igm_consistent"]) == {1.0}
    if alg == "qmix":  # a mixer called on agent values: the batch rates too, all zero for abs weights
        assert set(info["negative_mixing_gradient_rate"]) == set(info["igm_violation_rate"]) == {0.0}


def test_a_policy_gradient_learner_with_a_qmix_mixer_trains_without_igm_diagnostics(host):
    # VMIX: PyMARL2's QMIX mixer over critic values, a controller that returns (policy, value);
    # reading its outputs as Q-values stopped the run at its first update. Our matrix game, as
    # vmix.yaml sets env_args.state_last_action (it was refused as an unknown key).
    root, _ = host
    info = trained_info(root, "matrix_game", "vmix", "--config=vmix", "--env-config=matrix_game",
                        "with", *SHORT, "runner=episode", "batch_size_run=1")
    assert "coma_loss" in info and "igm_violation_rate" not in info, sorted(info)  # it trained; no diagnostics


@pytest.mark.parametrize("runner", ["parallel", "episode"])
def test_sign_symmetry_options_diagnostics_and_joint_greedy_tests_on_a_real_run(host, runner):
    root, _ = host
    name = f"symmetry_{runner}"
    info = trained_info(root, "matrix_game", name, "--config=nonmono_qmix_sarsa", "--env-config=matrix_game", "with",
                        *SHORT, f"runner={runner}", f"batch_size_run={4 if runner == 'parallel' else 1}",
                        "env_args.preset=paper_b", "test_joint_greedy=True", "mixer_init=positive_bias",
                        "monotonicity_penalty=0.5", "igm_penalty=0.5")
    assert {"negative_mixing_gradient_rate", "worst_greedy_action_rate", "monotonicity_hinge", "igm_hinge",
            "loss_total", "test_joint_greedy_return_mean", "test_joint_greedy_optimal_mean"} <= set(info), sorted(info)
    # One joint-greedy test set after every ordinary one, at the same steps.
    assert info["test_joint_greedy_return_mean_T"] == info["test_return_mean_T"]
    config = json.loads((latest_run(root, "matrix_game", name) / "config.json").read_text())
    assert (config["mixer_init"], config["igm_penalty"]) == ("positive_bias", 0.5)


# An additive game: each agent's best action is fixed, so an agent acting on the mirror image is plainly wrong.
GAUGE_GAME = ["--config=nonmono_qmix_sarsa", "--env-config=matrix_game", "with", *SHORT, "env_args.preset=None",
              "env_args.payoff=[[2,0,5],[6,4,9],[3,1,6]]", "save_model=True", "save_model_interval=40", "seed=7"]
# Checks at every update on the least evidence, so that a short run decides.
GAUGE_ON = ["sign_gauge=greedy_flip", "sign_gauge_interval=1", "sign_gauge_patience=1", "sign_gauge_margin=0.0"]


def mirror_checkpoint(src: Path, dst: Path, agent: int, n_agents: int) -> None:
    """``src``'s checkpoint in the other gauge for ``agent``, at ``dst``: its sign and its rows of the
    last layer of W1's hypernetwork negated, online and target (Q_tot unchanged everywhere)."""
    torch = pytest.importorskip("torch")
    shutil.copytree(src, dst)
    torch.save(torch.tensor([-1.0 if i == agent else 1.0 for i in range(n_agents)]), dst / "agent_sign.th")
    learner = torch.load(dst / "nonmono_learner.th", map_location="cpu", weights_only=False)
    for mixer in ("mixer", "target_mixer"):
        state = learner[mixer]
        last = [k for k in state if k.startswith("hyper_w1.") and k.endswith(".weight")][-1]
        for key in (last, last[: -len("weight")] + "bias"):
            rows = state[key].shape[0] // n_agents
            state[key][agent * rows:(agent + 1) * rows] *= -1
    torch.save(learner, dst / "nonmono_learner.th")


def test_the_sign_gauge_on_a_real_run_flips_the_mirrored_side_and_checkpoints_the_signs(host):
    root, _ = host
    proc = run_main(root, *GAUGE_GAME, "sign_gauge=off", "name=gauge_off")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    trained = sorted((root / "results" / "models").glob("gauge_off__*"))[-1]
    step = max((p for p in trained.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert "agent_sign.th" not in {p.name for p in step.iterdir()}  # no gauge, no signs
    # The same Q_tot twice, agent 0 on either side of the mirror: its gain from playing its argmin in one
    # is its loss in the other, so at the first check exactly one of the two continuations flips it back.
    mirrored = root / "results" / "mirrored" / step.name
    mirror_checkpoint(step, mirrored, agent=0, n_agents=2)
    flipped = {}
    for label, checkpoint in (("as_trained", trained), ("mirrored", mirrored.parent)):
        proc = run_main(root, *GAUGE_GAME, *GAUGE_ON, "t_max=200", f"checkpoint_path={checkpoint}", f"name=gauge_{label}")
        out = proc.stdout + proc.stderr
        assert proc.returncode == 0, out[-3000:]
        info = json.loads((latest_run(root, "matrix_game", f"gauge_{label}") / "info.json").read_text())
        flips, share = info["sign_flips"], info["negative_sign_share"]
        assert flips == sorted(flips) and all(0.0 <= x <= 1.0 for x in share), (flips, share)
        assert out.count("sign gauge: agent") == flips[-1], out[-3000:]  # every flip announced, once
        flipped[label] = "sign gauge: agent 0 changes sides" in out
        saved = sorted((root / "results" / "models").glob(f"gauge_{label}__*"))[-1]
        last = max((p for p in saved.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        assert {"agent.th", "agent_sign.th", "nonmono_learner.th"} <= {p.name for p in last.iterdir()}
    assert sum(flipped.values()) == 1, flipped


BROKEN_ENV = """


def _nonmono_test_broken_env(**env_args):
    raise RuntimeError("this env cannot start (test)")


REGISTRY["broken_for_test"] = _nonmono_test_broken_env
"""


@pytest.mark.parametrize("alg", ["qmix", "nonmono_qmix"])
def test_a_run_whose_env_workers_fail_stops_at_once_with_their_error(host, alg):
    # The parallel runner waits on pipes it holds open itself: workers that died with an error
    # left it waiting for good. An env that passes every start-up check and fails in the workers:
    root, _ = host
    registry, config = root / "src" / "envs" / "__init__.py", root / "src" / "config" / "envs" / "broken_for_test.yaml"
    original = registry.read_text()
    registry.write_text(original + BROKEN_ENV)
    config.write_text("env: broken_for_test\nenv_args:\n  map_name: broken_for_test\n")
    try:
        proc = run_main(root, f"--config={alg}", "--env-config=broken_for_test", "with", "use_cuda=False", "t_max=100",
                        timeout=120)
    finally:
        registry.write_text(original)
        config.unlink()
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.strip().splitlines()[-1] == "pymarl-nonmono: an env worker failed: RuntimeError: this env cannot start (test)"
    assert out.count("this env cannot start") == 1 and "Traceback" not in out  # said once, by the main process
    run = latest_run(root, "broken_for_test", {"qmix": "qmix_env=8_adam_td_lambda"}.get(alg, alg))
    assert json.loads((run / "run.json").read_text())["status"] == "FAILED"


def test_joint_greedy_tests_with_a_stock_controller_are_refused_in_one_line(host):
    root, _ = host
    proc = run_main(root, "--config=qmix", "--env-config=one_step_matrix_game", "with", *SHORT, "test_joint_greedy=True")
    assert "test_joint_greedy=True needs our controller (mac='nonmono_mac'" in refused_output(proc)


@pytest.mark.parametrize("bad,message", [
    ("env_args.preset=qtrn", "env_args.preset='qtrn' is not one of"),
    ("lr=1e999", "lr=inf must be a finite number"),
])
def test_a_bad_value_stops_a_parallel_run_before_sacred_records_it(host, bad, message):
    # With the parallel runner a bad preset used to fail in every env worker while the main
    # process waited for ever; now nothing starts, and no FAILED run folder is left.
    root, _ = host
    name = "bad_value_" + bad.split("=")[0].replace(".", "_")
    proc = run_main(root, "--config=nonmono_qmix", "--env-config=matrix_game", "with", "use_cuda=False", "t_max=100",
                    bad, f"name={name}", timeout=120)
    assert message in refused_output(proc)
    assert not (root / "results" / "sacred" / "matrix_game" / name).exists()


@pytest.mark.skipif(not __import__("torch").cuda.is_available(),
                    reason="needs a CUDA GPU (torch.cuda.is_available() is False here); without one the GPU path is "
                           "covered on a fake CUDA device by tests/hosts/test_cuda_path.py")
def test_shipped_config_trains_on_the_gpu(host):
    root, _ = host
    info = trained_info(root, "matrix_game", "on_gpu", "--config=nonmono_qmix_rnd", "--env-config=matrix_game", "with",
                        *SHORT, "use_cuda=True", "test_joint_greedy=True")
    assert {"payoff_max_abs_error", "rnd_loss", "test_joint_greedy_return_mean"} <= set(info)


def test_per_run_saves_models_and_a_new_run_resumes_from_them(host):
    root, _ = host
    saved_counts = trained_info(root, "one_step_matrix_game", "per_save", "--config=nonmono_qmix_rnd",
                                "--env-config=one_step_matrix_game", "with", *SHORT, "use_per=True", "save_model=True",
                                "save_model_interval=40")["target_update_count"]
    saved = sorted((root / "results" / "models").glob("per_save__*"))[-1]
    step = max((p for p in saved.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert {"agent.th", "nonmono_learner.th"} <= {p.name for p in step.iterdir()}
    # Resume for 160 more steps: run.py restarts its episode counter at 0 after loading.
    longer = [a for a in SHORT if not a.startswith("t_max=")] + ["t_max=280"]
    proc = run_main(root, "--config=nonmono_qmix_rnd", "--env-config=one_step_matrix_game", "with", *longer,
                    f"checkpoint_path={saved}", "name=resumed")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Loading model from {step}" in proc.stdout + proc.stderr
    info = json.loads((latest_run(root, "one_step_matrix_game", "resumed") / "info.json").read_text())
    counts, ts = info["target_update_count"], info["target_update_count_T"]
    # One-step episodes on 8 parallel envs: each train call comes 8 episodes after the previous
    # one, so with target_update_interval=20 the targets are copied on every third call.
    calls = (ts[-1] - ts[0]) // 8
    assert calls >= 12 and counts[0] >= saved_counts[-1], (ts, counts, saved_counts)
    assert calls // 3 <= counts[-1] - counts[0] <= -(-calls // 3), (ts, counts)
    assert "updated target networks" not in proc.stdout + proc.stderr


# A run stopped at a checkpoint and resumed, against the same run never stopped: one-step episodes
# of the matrix game on the episode runner, a replay of one episode (so the empty buffer of a
# resumed run costs nothing), every update logged; RND, the sign gauge and target copies included.
RESUME_RUN = ["--config=nonmono_qmix_rnd", "--env-config=matrix_game", "with", "use_cuda=False", "runner=episode",
              "batch_size_run=1", "buffer_size=1", "batch_size=1", "env_args.preset=paper_b", "seed=7",
              "test_interval=25", "test_nepisode=1", "log_interval=50", "runner_log_interval=50",
              "learner_log_interval=1", "target_update_interval=20", "epsilon_anneal_time=150", "save_model=True",
              "save_model_interval=50", "sign_gauge=greedy_flip", "sign_gauge_interval=2", "sign_gauge_patience=1"]
FOLLOWED = ("loss_td", "td_error_abs_mean", "rnd_loss", "target_update_count", "sign_flips", "q_tot_0_0", "grad_norm")


def test_a_run_resumed_from_its_checkpoint_logs_what_the_unstopped_run_logs(host):
    root, _ = host
    unstopped = trained_info(root, "matrix_game", "unstopped", *RESUME_RUN, "t_max=200")
    trained_info(root, "matrix_game", "stopped", *RESUME_RUN, "t_max=110")
    saved = sorted((root / "results" / "models").glob("stopped__*"))[-1]
    step = max(int(p.name) for p in saved.iterdir() if p.name.isdigit())
    assert step == 101  # saves at 1, 51, 101; stopped at 111
    resumed = trained_info(root, "matrix_game", "resumed", *RESUME_RUN, "t_max=200", f"checkpoint_path={saved}",
                           f"load_step={step}", f"sweep_resume_step={step}")
    assert_logged_alike(info_series(resumed), info_series(unstopped), FOLLOWED, step + 1)
    assert resumed["sign_flips"][-1] >= 1  # the gauge's state went across the stop


# The same with a stock learner: OW-QMIX's central Q is not in PyMARL2's own checkpoint files; our
# selector, whose greedy test episodes draw nothing, keeps the random streams aligned across the
# resumed run's extra test. One-step episodes: target networks never enter a target here (the
# unit tests in tests/hosts/test_stock_checkpoint.py check them).
STOCK_RESUME_RUN = ["--config=ow_qmix", "--env-config=matrix_game", "with", "use_cuda=False", "runner=episode",
                    "batch_size_run=1", "buffer_size=1", "batch_size=1",
                    "env_args.preset=paper_b", "seed=7", "test_interval=25", "test_nepisode=1", "log_interval=50",
                    "runner_log_interval=50", "learner_log_interval=1", "action_selector=softmax",
                    "temperature_start=2.0", "save_model=True", "save_model_interval=50"]
STOCK_FOLLOWED = ("loss", "central_loss", "qmix_loss", "td_error_abs", "w_to_use")  # its grad_norm is logged as a tensor


def test_a_stock_learner_resumed_from_its_checkpoint_logs_what_the_unstopped_run_logs(host):
    root, _ = host
    unstopped = trained_info(root, "matrix_game", "ow_unstopped", *STOCK_RESUME_RUN, "t_max=140")
    trained_info(root, "matrix_game", "ow_stopped", *STOCK_RESUME_RUN, "t_max=110")
    saved = sorted((root / "results" / "models").glob("ow_stopped__*"))[-1]
    assert (saved / "101" / "stock_learner_state.th").is_file()
    resumed = trained_info(root, "matrix_game", "ow_resumed", *STOCK_RESUME_RUN, "t_max=140",
                           f"checkpoint_path={saved}", "load_step=101")
    assert_logged_alike(info_series(resumed), info_series(unstopped), STOCK_FOLLOWED, 102)
    assert all(len(set(resumed[f"{key}_T"])) >= 30 for key in STOCK_FOLLOWED)


def test_bench_resumes_an_interrupted_run_from_its_checkpoint_and_reports_it_as_one_run(host, tmp_path, capsys):
    import signal
    import time

    root, _ = host
    words = ["use_cuda=False", "runner=episode", "batch_size_run=1", "buffer_size=32", "batch_size=8",
             "t_max=1000", "test_interval=100", "test_nepisode=1", "save_model=True", "save_model_interval=200"]
    argv = ["bench", str(root), "--alg", "nonmono_qmix_sarsa", "--env", "one_step_matrix_game", "--seeds", "1",
            "--name", "resume", "--no-progress", "--no-mongo", *[a for w in words for a in ("--set", w)]]
    bench = subprocess.Popen([sys.executable, "-m", "pymarl_nonmono.cli", *argv], cwd=root, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    models = root / "results" / "models"
    try:
        for _ in range(1200):  # until a checkpoint past the first one is on disk
            saved = [p for p in models.glob("nonmono_qmix_sarsa__*/*") if p.name.isdigit() and int(p.name) >= 400
                     and (p / "nonmono_learner.th").exists()] if models.exists() else []
            if saved:
                break
            assert bench.poll() is None, bench.communicate()
            time.sleep(0.1)
        assert saved
        bench.send_signal(signal.SIGTERM)
        out, err = bench.communicate(timeout=120)
    finally:
        if bench.poll() is None:
            bench.kill()
    assert bench.returncode == 128 + signal.SIGTERM, out + err
    state_file = root / "results" / "sweeps" / "resume" / "runs" / "nonmono_qmix_sarsa__one_step_matrix_game__seed1.json"
    assert json.loads(state_file.read_text())["status"] == "INTERRUPTED"

    assert cli.main(argv) == 0
    state = json.loads(state_file.read_text())
    assert state["status"] == "COMPLETED" and state["resumed_from"]["step"] >= 400
    assert [a["status"] for a in state["attempts"]] == ["INTERRUPTED"]
    log = Path(state["log"]).read_text()
    assert f"Loading model from {state['resumed_from']['checkpoint']}/{state['resumed_from']['step']}" in log
    capsys.readouterr()
    assert cli.main(["report", str(root), "--sweep", "resume", "--metric", "test_return_mean",
                     "--out", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert f"resumed from its checkpoint at step {state['resumed_from']['step']:,}" in text
    first = state["attempts"][0]["results_dir"]
    assert f"continuing {first}" in text and "continued:" not in text and "unfinished" not in text


# nq_learner's statistics, by name, and the settings under which our learner computes the
# same update: VDN mixing, double-Q bootstrap, the same lambda; PyMARL2's own n_rnn agent, which
# nq_learner unrolls step by step and our controller in one batched pass. With PER, the
# priorities each returns, from the TD errors or (return_priority) from the episodes' returns,
# over two updates so that return_priority's running range moves.
NQ_COMPARISON = """
import copy, json, sys
import numpy as np, torch
sys.path[:0] = ["", sys.argv[1]]
from learners.nq_learner import NQLearner
from fake_host import RecordingLogger, episode_batch, make_args, scheme
from pymarl_nonmono.hosts.pymarl2.controller import NonMonoMAC
from pymarl_nonmono.hosts.pymarl2.learner import NonMonoLearner
out = {}
for use_per, return_priority in ((False, False), (True, False), (True, True)):
    torch.manual_seed(0)
    args = make_args("nonmono_qmix", mixer="vdn", td_bootstrap="q", double_q=True, td_lambda=0.6, use_per=use_per,
                     return_priority=return_priority, agent="n_rnn")
    mac = NonMonoMAC(scheme(), {"agents": 3}, args)
    assert mac._unroll_parts is not None  # the batched unroll
    # Mixed lengths, one episode cut by the time limit at the last index.
    batches = [episode_batch([6, 3, 6, 5], truncated=[True, False, False, False], seed=2),
               episode_batch([2, 6, 4, 6], truncated=[False, False, False, True], seed=3)]
    weights = np.array([0.5, 1.0, 1.5, 2.0], dtype=np.float32) if use_per else None
    logs, priorities = {}, {}
    for name, cls in (("stock", NQLearner), ("ours", NonMonoLearner)):
        logs[name] = RecordingLogger()
        learner = cls(copy.deepcopy(mac), scheme(), logs[name], args)
        infos = [learner.train(batch, t, t, per_weight=weights) for t, batch in enumerate(batches)]
        priorities[name] = [info["td_errors_abs"].reshape(-1).tolist() for info in infos] if use_per else []
    key = f"per={use_per},return_priority={return_priority}"
    out[key] = {k: [float(logs[n].stats[k][-1][1]) for n in ("stock", "ours")] for k in logs["stock"].stats}
    out[key]["priorities"] = [priorities["stock"], priorities["ours"]]
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
"""


def test_statistics_shared_with_nq_learner_are_computed_as_it_computes_them(host, tmp_path):
    # The real nq_learner and ours on the same batch, the same agent network and the same
    # settings: every statistic both log must agree.
    root, _ = host
    result = tmp_path / "stats.json"
    hosts = Path(__file__).resolve().parents[1] / "hosts"
    proc = subprocess.run([sys.executable, "-c", NQ_COMPARISON, str(hosts), str(result)], cwd=root / "src",
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(result.read_text())
    assert len(results) == 3
    for setting, stats in results.items():
        stock_priorities, our_priorities = stats.pop("priorities")
        assert set(stats) == LEARNER_STATS, stats
        for key, (stock, ours) in stats.items():
            assert ours == pytest.approx(stock, rel=1e-5, abs=1e-6), (setting, key, stock, ours)
        assert len(our_priorities) == (2 if "per=True" in setting else 0)
        for stock, ours in zip(stock_priorities, our_priorities):
            assert len(ours) == 4 and ours == pytest.approx(stock, rel=1e-5, abs=1e-6), (setting, stock, ours)


# Keep last: pytest runs a module in file order, and the runs above need the patches.
def test_a_run_stopped_by_sigterm_is_recorded_as_interrupted(host, tmp_path):
    # bench, SLURM and `kill` stop runs with SIGTERM; without our handler Sacred's run.json
    # would say RUNNING for good. The parallel runner's env workers must end with it.
    root, _ = host
    code = sigterm_once_training(root, ["--config=nonmono_qmix", "--env-config=one_step_matrix_game", "with",
                                        "use_cuda=False", "t_max=10000000", "name=sigterm"], tmp_path / "out.log")
    assert code != 0
    run = json.loads((latest_run(root, "one_step_matrix_game", "sigterm") / "run.json").read_text())
    assert run["status"] == "INTERRUPTED" and run["stop_time"]


def test_zz_uninstall_restores_the_checkout_byte_for_byte(host):
    root, pristine = host
    assert cli.main(["uninstall", str(root)]) == 0
    assert tree_digest(root) == pristine
