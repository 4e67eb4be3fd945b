"""Sweep specification: file and command-line forms, and every error before anything runs."""

from pathlib import Path

import pytest

from pymarl_nonmono.bench.spec import (
    SweepError, build_sweep, check_against_host, format_value, parse_entry, parse_seeds, resolve_sweep_path,
    shipped_sweeps,
)
from pymarl_nonmono.hosts.spec import EPYMARL, HOSTS, PYMARL2

SWEEP_YAML = """
name: matrix-smoke
algs:
  - nonmono_qmix
  - config: qmix
    label: qmix_episode
    set: {runner: episode, batch_size_run: 1}
envs:
  - one_step_matrix_game
  - config: sc2
    set:
      env_args: {map_name: 3s5z_vs_3s6z}
      t_max: 2050000
seeds: "1-3"
set: {t_max: 300, use_cuda: false}
mongo_db: bench
workers: 2
"""


def write(tmp_path, text, name="sweep.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_file_form(tmp_path):
    sweep = build_sweep(write(tmp_path, SWEEP_YAML))
    assert sweep.name == "matrix-smoke" and sweep.named and sweep.workers == 2 and sweep.mongo_db == "bench"
    assert [a.label for a in sweep.algs] == ["nonmono_qmix", "qmix_episode"]
    assert [e.label for e in sweep.envs] == ["one_step_matrix_game", "3s5z_vs_3s6z"]
    assert sweep.seeds == (1, 2, 3)
    runs = sweep.runs()
    assert len(runs) == 12 and [r.seed for r in runs[:4]] == [1, 1, 1, 1]  # seed-major
    run = next(r for r in runs if r.alg.label == "qmix_episode" and r.env.label == "3s5z_vs_3s6z" and r.seed == 2)
    assert run.key == "qmix_episode__3s5z_vs_3s6z__seed2"
    assert run.command("bench") == [
        "src/main.py", "--config=qmix", "--env-config=sc2", "with",
        "use_cuda=False", "env_args.map_name=3s5z_vs_3s6z", "t_max=2050000", "runner=episode", "batch_size_run=1",
        "seed=2", "sweep_id=matrix-smoke", "sweep_alg=qmix_episode", "sweep_env=3s5z_vs_3s6z", "mongo_db=bench",
    ]
    assert run.command(None, mongo_off=True)[-1] == "mongo_url=off"


def test_command_line_replaces_lists_and_adds_settings(tmp_path):
    sweep = build_sweep(write(tmp_path, SWEEP_YAML), algs=["vdn,qmix"], seeds="7", sets=["t_max=500", "lr=0.001"],
                        workers=1)
    assert [a.label for a in sweep.algs] == ["vdn", "qmix"] and sweep.seeds == (7,) and sweep.workers == 1
    assert len(sweep.envs) == 2
    assert dict(sweep.common) == {"t_max": "500", "use_cuda": "False", "lr": "0.001"}


def test_command_line_only_entry_forms():
    sweep = build_sweep(algs=["qmix:qmix_ep runner=episode batch_size_run=1", "vdn"],
                        envs=["sc2 env_args.map_name=3m", "sc2 env_args.map_name=corridor", "one_step_matrix_game"],
                        seeds="1,3-4")
    assert [(a.config, a.label, a.overrides) for a in sweep.algs] == [
        ("qmix", "qmix_ep", (("runner", "episode"), ("batch_size_run", "1"))), ("vdn", "vdn", ())]
    assert [e.label for e in sweep.envs] == ["3m", "corridor", "one_step_matrix_game"]
    assert sweep.seeds == (1, 3, 4)
    assert sweep.name.startswith("sweep-") and not sweep.named
    assert build_sweep(algs=["vdn", "qmix:qmix_ep runner=episode batch_size_run=1"], seeds="1,3-4",
                       envs=["sc2 env_args.map_name=3m", "sc2 env_args.map_name=corridor", "one_step_matrix_game"]
                       ).name != sweep.name


def test_derived_name_is_stable():
    a = build_sweep(algs=["qmix"], envs=["one_step_matrix_game"], seeds="1-2", sets=["t_max=3"])
    b = build_sweep(algs=["qmix"], envs=["one_step_matrix_game"], seeds="1,2", sets=["t_max=3"])
    assert a.name == b.name


@pytest.mark.parametrize("kwargs,needle", [
    (dict(algs=["qmix"], envs=["m"]), "empty sweep: no seeds"),
    (dict(envs=["m"], seeds="1"), "empty sweep: no algorithms"),
    (dict(), "empty sweep: no algorithms (--alg or 'algs:'), no environments (--env or 'envs:'), no seeds"),
    (dict(algs=["qmix,qmix"], envs=["m"], seeds="1"), "appear twice"),
    (dict(algs=["qmix"], envs=["sc2 env_args.map_name=3m", "sc2 env_args.map_name=3m"], seeds="1"), "appear twice"),
    (dict(algs=["qmix"], envs=["m"], seeds="1", sets=["seed=4"]), "set by the sweep itself"),
    (dict(algs=["qmix runner"], envs=["m"], seeds="1"), "is not KEY=VALUE"),
    (dict(algs=["qmix"], envs=["m"], seeds="3-1"), "is empty"),
    (dict(algs=["qmix"], envs=["m"], seeds="a"), "not an integer"),
    (dict(algs=["q/mix"], envs=["m"], seeds="1"), "not a config name"),
    (dict(algs=["qmix:bad/label"], envs=["m"], seeds="1"), "label"),
    (dict(algs=["qmix"], envs=["m"], seeds="1", name="has space"), "sweep name"),
])
def test_bad_sweeps(kwargs, needle):
    with pytest.raises(SweepError) as info:
        build_sweep(**kwargs)
    assert needle in str(info.value)


@pytest.mark.parametrize("text,needle", [
    ("algs: [qmix]\nenvs: [m]\nseeds: [1]\nseed: 3\n", "unknown key(s) 'seed' (did you mean 'seeds'?)"),
    ("algs: qmix\nenvs: [m]\nseeds: [1]\n", "'algs' must be a list"),
    ("algs: [{label: x}]\nenvs: [m]\nseeds: [1]\n", "has no 'config'"),
    ("algs: [{config: qmix, sett: {}}]\nenvs: [m]\nseeds: [1]\n", "unknown key(s) ['sett']"),
    ("algs: [qmix]\nenvs: [m]\nseeds: [1]\nset: [1]\n", "'set' must be a mapping"),
    ("algs: [qmix]\nenvs: [m]\nseeds: [1]\nworkers: 0\n", "workers must be a positive integer"),
    ("algs: [qmix\n", "not valid YAML"),
    ("- a\n", "expected a mapping"),
])
def test_bad_files(tmp_path, text, needle):
    with pytest.raises(SweepError) as info:
        build_sweep(write(tmp_path, text))
    assert needle in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(SweepError, match="cannot read sweep file"):
        build_sweep(tmp_path / "nope.yaml")


def test_values_survive_sacreds_parser():
    from sacred.arg_parser import _convert_value

    for value in [True, False, None, 3, 0.0005, "3m", "1e3", "True", "[1]", [1, 2], {"a": 1}, "with space"]:
        assert _convert_value(format_value(value)) == value


def test_parse_helpers():
    assert parse_seeds([1, "2-3", 3], "x") == (1, 2, 3)
    assert parse_seeds(5, "x") == (5,)
    with pytest.raises(SweepError):
        parse_seeds(True, "x")
    assert [e.config for e in parse_entry("a,b,c", "alg", "--alg")] == ["a", "b", "c"]
    with pytest.raises(SweepError, match="cannot read"):
        parse_entry("qmix 'x=1", "alg", "--alg")


def test_names_and_keys_checked_against_the_host(fake_host):
    sweep = build_sweep(algs=["qmix", "nonmono_qmix"], envs=["one_step_matrix_game"], seeds="1", sets=["t_max=5"])
    check_against_host(sweep, fake_host, PYMARL2)  # nonmono_qmix is ours, qmix the host's
    with pytest.raises(SweepError) as info:
        check_against_host(build_sweep(algs=["qmx", "nonmono_qmx"], envs=["one_step_matrix_gam"], seeds="1"), fake_host, PYMARL2)
    message = str(info.value)
    assert "unknown algorithm config(s) 'qmx' (did you mean 'qmix'?), 'nonmono_qmx' (did you mean 'nonmono_qmix'?)" in message
    assert "unknown environment config(s) 'one_step_matrix_gam'" in message
    assert str(fake_host / "src" / "config" / "algs") in message
    with pytest.raises(SweepError, match="'t_maxx' \\(--set/set\\), did you mean 't_max'"):
        check_against_host(build_sweep(algs=["qmix"], envs=["sc2"], seeds="1", sets=["t_maxx=5"]), fake_host, PYMARL2)
    with pytest.raises(SweepError, match="'td_lamda' \\(qmix\\)"):
        check_against_host(build_sweep(algs=["qmix td_lamda=0.5"], envs=["sc2"], seeds="1"), fake_host, PYMARL2)
    check_against_host(build_sweep(algs=["nonmono_qmix td_lambda=0.5"], envs=["sc2 env_args.map_name=8m"], seeds="1"),
                       fake_host, PYMARL2)
    # A key some config has, but not the configs of this run: Sacred would refuse it at start.
    with pytest.raises(SweepError, match="Sacred would refuse key\\(s\\) .*'rnd_beta_start' for qmix on sc2; "
                                         "set such keys on the algorithms that have them"):
        check_against_host(build_sweep(algs=["qmix", "nonmono_qmix"], envs=["sc2"], seeds="1",
                                       sets=["rnd_beta_start=0.2"]), fake_host, PYMARL2)


def test_shipped_studies_resolve_by_name_and_build():
    shipped = shipped_sweeps()
    assert "matrix_qtran" in shipped
    for name, path in shipped.items():
        sweep = build_sweep(name)
        assert sweep.name == name and sweep.algs and sweep.envs and len(sweep.seeds) >= 1, path
        assert resolve_sweep_path(name) == path


def test_a_bare_name_that_is_neither_file_nor_study_lists_the_studies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SweepError, match="no sweep file 'matrix_qtrn' and no shipped study of that name; "
                                         "shipped studies: .*matrix_qtran"):
        build_sweep("matrix_qtrn")
    (tmp_path / "matrix_qtran").write_text("name: mine\nalgs: [qmix]\nenvs: [sc2]\nseeds: '1'\n")
    assert build_sweep("matrix_qtran").name == "mine"  # a file of that name wins


@pytest.mark.integration
def test_shipped_studies_name_configs_and_keys_the_host_knows(pymarl2_pristine, epymarl_pristine):
    # Each study against the host it is written for ('host:', PyMARL2 when absent).
    pristine = {PYMARL2.name: pymarl2_pristine, EPYMARL.name: epymarl_pristine}
    hosts = set()
    for name in shipped_sweeps():
        sweep = build_sweep(name)
        spec = HOSTS[sweep.host or PYMARL2.name]
        check_against_host(sweep, pristine[spec.name], spec)
        hosts.add(spec.name)
    assert hosts == {PYMARL2.name, EPYMARL.name}


def test_a_sweep_written_for_one_host_is_refused_on_the_other(tmp_path, fake_host):
    path = tmp_path / "lbf.yaml"
    path.write_text("name: lbf\nhost: epymarl\nalgs: [qmix]\nenvs: [gymma]\nseeds: '1'\n")
    with pytest.raises(SweepError, match="written for EPyMARL .*'host: epymarl'.* is PyMARL2"):
        check_against_host(build_sweep(path), fake_host, PYMARL2)
    path.write_text("name: lbf\nhost: epymrl\nalgs: [qmix]\nenvs: [gymma]\nseeds: '1'\n")
    with pytest.raises(SweepError, match="host must be one of pymarl2, epymarl, got 'epymrl'"):
        build_sweep(path)


def test_matrix_study_sets_what_the_shipped_matrix_config_says():
    # One source of truth for the matrix-game settings: the study compares every algorithm under
    # exactly the regime nonmono_qmix_matrix.yaml ships.
    import yaml

    config = Path(__file__).resolve().parents[2] / "config" / "algs"
    shipped = yaml.safe_load((config / "nonmono_qmix_matrix.yaml").read_text())
    base = yaml.safe_load((config / "nonmono_qmix.yaml").read_text())
    study = yaml.safe_load(shipped_sweeps()["matrix_qtran"].read_text())["set"]
    assert set(shipped) == set(base)
    changed = {k for k in shipped if shipped[k] != base[k]} - {"name"}
    # temperature_anneal_time: Sacred would refuse it on the stock rows; the study's softmax row
    # starts from nonmono_qmix_matrix instead.
    ours_only = {"temperature_anneal_time"}
    assert changed and {k: study.get(k) for k in changed - ours_only} == {k: shipped[k] for k in changed - ours_only}
    assert {k: v for k, v in study.items() if k in shipped} == {k: shipped[k] for k in study if k in shipped}


def test_only_keeps_the_named_entries_of_each_kind_under_the_sweeps_own_name(tmp_path):
    path = write(tmp_path, SWEEP_YAML)
    whole = build_sweep(path)
    piece = build_sweep(path, only=["3s5z_vs_3s6z"])
    assert piece.name == whole.name == "matrix-smoke"
    assert [e.label for e in piece.envs] == ["3s5z_vs_3s6z"] and [a.label for a in piece.algs] == ["nonmono_qmix", "qmix_episode"]
    both = build_sweep(path, only=["qmix_episode,one_step_matrix_game"])
    assert [(r.alg.label, r.env.label) for r in both.runs()][:1] == [("qmix_episode", "one_step_matrix_game")]
    assert {r.key for r in both.runs()} <= {r.key for r in whole.runs()}  # same run keys: resumable, reportable
    with pytest.raises(SweepError, match=r"--only 'qmix_epsiode' is not a label.*did you mean 'qmix_episode'"):
        build_sweep(path, only=["qmix_epsiode"])


def test_values_are_checked_before_anything_runs(fake_host):
    # Each run would refuse these at its start; a sweep of hundreds then failed run by run.
    cases = [
        (dict(algs=["nonmono_qmix_sarsa td_lambda=1.5"], envs=["one_step_matrix_game"]),
         "nonmono_qmix_sarsa on one_step_matrix_game: td_lambda=1.5 is outside the allowed range"),
        (dict(algs=["qmix"], envs=["matrix_game env_args.preset=qtrn"]),
         "qmix on matrix_game: env_args.preset='qtrn' is not one of .* \\(did you mean 'qtran'\\?\\)"),
        (dict(algs=["nonmono_qmix"], envs=["smaclite env_args.map_name=3s5z_vs_3s6"]),
         "env_args.map_name='3s5z_vs_3s6' \\(did you mean '3s5z_vs_3s6z'\\?\\)"),
    ]
    for kwargs, message in cases:
        with pytest.raises(SweepError, match="bad value\\(s\\): .*" + message):
            check_against_host(build_sweep(seeds="1", **kwargs), fake_host, PYMARL2)
    pytest.importorskip("smac.env.starcraft2.maps", reason="StarCraft's smac is not installed: "
                        "pip install git+https://github.com/oxwhirl/smac.git to check SMAC map names")
    with pytest.raises(SweepError, match="qmix on 3s5z_vs_3s6: env_args.map_name='3s5z_vs_3s6'.*did you mean '3s5z_vs_3s6z'"):
        check_against_host(build_sweep(algs=["qmix"], envs=["sc2 env_args.map_name=3s5z_vs_3s6"], seeds="1"),
                           fake_host, PYMARL2)
