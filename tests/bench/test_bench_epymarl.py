"""bench, report and export on an EPyMARL checkout, as on PyMARL2 (issue #14).

The unit tests use hand-made configs and records, or a copy of EPyMARL cbc38c0 (conftest's
epymarl_pristine) where the checkout itself is what is checked; the integration test runs a
two-run sweep in a freshly installed copy and reports it.
"""

import ast
import json
import shutil
from pathlib import Path

import pytest
import yaml

from pymarl_nonmono import cli
from pymarl_nonmono.bench import launch
from pymarl_nonmono.bench import report as rep
from pymarl_nonmono.bench.spec import TAG_KEYS, SweepError, build_sweep, check_against_host
from pymarl_nonmono.hosts.spec import EPYMARL, HOSTS, PYMARL2

ROOT = Path(__file__).resolve().parents[2]
LBF = "lbforaging:Foraging-8x8-2p-3f-v3"


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- labels


def test_a_gymma_env_is_labelled_by_its_key_without_the_module():
    # gymma has no map_name: every LBF task was labelled "gymma", and two of them collided.
    sweep = build_sweep(algs=["qmix"], envs=[f"gymma env_args.key={LBF}", "gymma env_args.key=Foraging-2s-8x8-2p-2f-coop-v3"],
                        seeds="1")
    assert [e.label for e in sweep.envs] == ["Foraging-8x8-2p-3f-v3", "Foraging-2s-8x8-2p-2f-coop-v3"]
    assert f"env_args.key={LBF}" in sweep.runs()[0].command()  # the key itself reaches the run unchanged
    from_file = build_sweep(algs=["qmix"], envs=["sc2 env_args.map_name=3m"], seeds="1")
    assert from_file.envs[0].label == "3m"  # the map name still comes first


def test_report_labels_a_gymma_run_by_its_key(tmp_path):
    folder = tmp_path / "sacred" / "qmix" / LBF / "1"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
    # Not run by bench (no sweep_env): the label comes from the config alone.
    (folder / "config.json").write_text(json.dumps({"name": "qmix", "seed": 3, "env": "gymma",
                                                    "env_args": {"key": LBF, "time_limit": 50}}))
    (folder / "metrics.json").write_text(json.dumps({"test_return_mean": {"steps": [0, 100], "values": [0.0, 0.5]}}))
    (record,) = rep.load_file_storage([tmp_path / "sacred"])
    assert (record.alg, record.env, record.seed, record.suite) == ("qmix", "Foraging-8x8-2p-3f-v3", 3, "gymma")


# --------------------------------------------------------------------------- configs


def _fake_epymarl(root: Path) -> Path:
    # The keys of EPyMARL's default.yaml and qmix.yaml that our learner's start-up check reads or knows.
    for rel, text in {"src/config/default.yaml": "t_max: 100\nuse_cuda: False\nenv_args: {}\ncommon_reward: True\n"
                                                 "gamma: 0.99\ngrad_norm_clip: 10\noptim_alpha: 0.99\noptim_eps: 0.00001\n"
                                                 "learner_log_interval: 10000\nbatch_size_run: 1\n",
                      "src/config/algs/qmix.yaml": "name: qmix\nuse_rnn: False\nstandardise_rewards: True\nagent_output_type: q\n"
                                                   "batch_size: 32\nbuffer_size: 5000\nhidden_dim: 64\nlearner: q_learner\n"
                                                   "mac: basic_mac\nrunner: episode\n",
                      "src/config/envs/gymma.yaml": "env: gymma\nenv_args: {key: null, time_limit: 100}\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_configs_are_checked_against_the_hosts_own_configs_and_ours_for_it(tmp_path):
    host = _fake_epymarl(tmp_path / "epymarl")
    # nonmono_qmix_ns and use_rnn exist only in our EPyMARL configs (config/hosts/epymarl),
    # matrix_game's EPyMARL YAML there too.
    sweep = build_sweep(algs=["qmix standardise_rewards=False", "nonmono_qmix use_rnn=True", "nonmono_qmix_ns"],
                        envs=["matrix_game", f"gymma env_args.key={LBF}"], seeds="1")
    check_against_host(sweep, host, EPYMARL)
    with pytest.raises(SweepError, match=r"unknown algorithm config\(s\) 'nonmono_qmix_ns'"):
        check_against_host(sweep, host, PYMARL2)
    # PyMARL2's configs are not EPyMARL's: its PER keys are no key of a run here.
    with pytest.raises(SweepError, match=r"no config has the key\(s\) 'use_per' \(nonmono_qmix\)"):
        check_against_host(build_sweep(algs=["nonmono_qmix use_per=False"], envs=["matrix_game"], seeds="1"),
                           host, EPYMARL)


@pytest.mark.parametrize("host", list(HOSTS.values()), ids=list(HOSTS))
def test_every_key_bench_sets_on_a_run_is_a_default_of_ours_for_the_host(host):
    # Bench adds sweep_id/sweep_alg/sweep_env and mongo_url/mongo_db to every run's `with`;
    # EPyMARL's plugin refused them ("unknown config key(s): 'mongo_url', 'sweep_id'").
    defaults = yaml.safe_load((host.our_configs() / "default.yaml").read_text(encoding="utf-8"))
    assert {k for k in TAG_KEYS if k != "seed"} <= set(defaults)


def test_the_words_bench_adds_to_a_run_pass_epymarls_start_up_check(epymarl_pristine, monkeypatch):
    # main.py calls this with the merged YAMLs and the `with` words; it refused `seed` for
    # our algorithms (a Sacred key, in no YAML), so no bench run of them could start.
    from pymarl_nonmono.hosts.epymarl import plugin
    from pymarl_nonmono.hosts.pymarl_family import preflight

    monkeypatch.setattr(preflight, "host_config_dir", lambda: epymarl_pristine / "src" / "config")
    ours = EPYMARL.our_configs()
    config = yaml.safe_load((epymarl_pristine / "src" / "config" / "default.yaml").read_text())
    for key, value in yaml.safe_load((ours / "default.yaml").read_text()).items():
        config.setdefault(key, value)
    for part in (ours / "envs" / "matrix_game.yaml", ours / "algs" / "nonmono_qmix.yaml"):
        config.update(yaml.safe_load(part.read_text()))
    (run,) = build_sweep(algs=["nonmono_qmix"], envs=["matrix_game"], seeds="7", name="e").runs()
    plugin.check_command_line(config, run.with_args(None, True))


@pytest.mark.parametrize("host", list(HOSTS.values()), ids=list(HOSTS))
def test_setup_declares_the_plugin_and_observer_groups_of_every_host(host):
    # bench refuses a MongoDB sweep when the host's observer group has no entry point.
    tree = ast.parse((ROOT / "setup.py").read_text())
    groups = next(ast.literal_eval(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.keyword) and node.arg == "entry_points")
    assert groups.get(host.plugin_group) and groups.get(host.observer_group), host.name


# --------------------------------------------------------------------------- the checkout


def test_bench_recognises_an_epymarl_checkout_and_checks_its_patches(epymarl_pristine, tmp_path):
    copy = tmp_path / "epymarl"
    shutil.copytree(epymarl_pristine, copy, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__"))
    with pytest.raises(SweepError, match="patches: not applied 0001-current-stack, .*0005-quiet-start; fix: pymarl-nonmono install"):
        launch.check_host(copy)


def test_bench_prepares_a_sweep_in_an_installed_epymarl(epymarl_host, tmp_path, monkeypatch):
    sweep = build_sweep(algs=["nonmono_qmix_ns", "qmix standardise_rewards=False"],
                        envs=["matrix_game", f"gymma env_args.key={LBF}"], seeds="1", name="e")
    prepared = launch.prepare(sweep, epymarl_host, out_dir=str(tmp_path / "sweep"), no_mongo=True)
    assert prepared.spec is EPYMARL and prepared.host == epymarl_host.resolve() and len(prepared.plan.todo) == 4
    assert launch.check_host(epymarl_host, EPYMARL) == (epymarl_host.resolve(), EPYMARL)
    # With a MongoDB, EPyMARL's observer group must be there (PyMARL2's, registered here, is no help).
    import importlib.metadata

    real = importlib.metadata.entry_points
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group: [] if group == EPYMARL.observer_group else real(group=group))
    with pytest.raises(SweepError, match="no entry point in group 'epymarl.observers'"):
        launch.prepare(sweep, epymarl_host, out_dir=str(tmp_path / "sweep"), mongo_url="mongodb://127.0.0.1:1/",
                       ping=False)


# --------------------------------------------------------------------------- the whole path


SHORT = ["use_cuda=False", "t_max=60", "test_interval=20", "test_nepisode=1", "log_interval=20",
         "runner_log_interval=20", "learner_log_interval=20", "batch_size=4", "buffer_size=16", "epsilon_anneal_time=40"]


@pytest.mark.integration
def test_a_sweep_in_epymarl_runs_to_completion_and_reports(epymarl_host, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PYMARL_NONMONO_MONGO_URL", raising=False)
    argv = ["bench", str(epymarl_host), "--alg", "nonmono_qmix", "--alg", "qmix standardise_rewards=False",
            "--env", "matrix_game", "--seeds", "1", "--name", "epy", "--no-progress",
            *[arg for item in SHORT for arg in ("--set", item)]]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, out + err
    assert "= 2 runs; 0 finished, 2 to run" in out and "done: 2 completed, 0 failed now" in out
    states = [json.loads(p.read_text()) for p in (epymarl_host / "results" / "sweeps" / "epy" / "runs").glob("*.json")]
    assert sorted(s["alg"] for s in states) == ["nonmono_qmix", "qmix"] and {s["status"] for s in states} == {"COMPLETED"}
    for state in states:  # EPyMARL's folder order results/sacred/<name>/<map_name>/<id>, as its main.py logs it
        run = json.loads((Path(state["results_dir"]) / "run.json").read_text())
        assert run["status"] == "COMPLETED" and Path(state["results_dir"]).parent.name == "matrix_game"

    code, out, err = run_cli(capsys, "report", str(epymarl_host), "--sweep", "epy", "--out", str(tmp_path / "rep"),
                             "--reps", "100")
    assert code == 0, out + err
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## matrix_game\n" in md
    for alg in ("nonmono_qmix", "qmix"):
        assert f"| {alg} |" in md

    out_json = tmp_path / "epy.json"
    code, out, err = run_cli(capsys, "export", str(epymarl_host), "--format", "marl-eval", "--sweep", "epy",
                             "--out", str(out_json))
    assert code == 0, out + err
    data = json.loads(out_json.read_text())
    assert sorted(data["matrix_game"]["matrix_game"]) == ["nonmono_qmix", "qmix"]
