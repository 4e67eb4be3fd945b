"""bench records which pymarl-nonmono code its runs import (in sweep.json and in each run's state),
and warns when that code can change under a running sweep (an editable install with uncommitted
changes)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from pymarl_nonmono import cli
from pymarl_nonmono.bench import launch

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git on PATH")


def _git(tree, *args):
    subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                   check=True, capture_output=True)


@pytest.fixture
def tree(tmp_path):
    """A git working tree shaped like ours, everything committed."""
    root = tmp_path / "src"
    (root / "pymarl_nonmono").mkdir(parents=True)
    (root / "pymarl_nonmono" / "learner.py").write_text("A = 1\n")
    (root / "config").mkdir()
    (root / "config" / "alg.yaml").write_text("lr: 0.001\n")
    (root / "docs").mkdir()
    (root / "docs" / "notes.md").write_text("notes\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-qm", "start")
    return root


def test_a_clean_tree_is_recorded_with_its_commit_and_no_warning(tree):
    state = launch.code_state(tree / "pymarl_nonmono")
    assert state["working_tree"] == str(tree.resolve())
    assert len(state["commit"]) == 40 and state["uncommitted"] == []
    assert launch.warn_if_mutable(state) is None


@pytest.mark.parametrize("change", ["edit", "new module", "config"])
def test_uncommitted_code_or_config_is_named_in_a_warning(tree, change):
    if change == "edit":
        (tree / "pymarl_nonmono" / "learner.py").write_text("A = 2\n")
        expected = "pymarl_nonmono/learner.py"
    elif change == "new module":
        (tree / "pymarl_nonmono" / "rnd.py").write_text("B = 1\n")
        expected = "pymarl_nonmono/rnd.py"
    else:
        (tree / "config" / "alg.yaml").write_text("lr: 0.1\n")
        expected = "config/alg.yaml"
    state = launch.code_state(tree / "pymarl_nonmono")
    assert state["uncommitted"] == [expected]
    warning = launch.warn_if_mutable(state)
    assert warning is not None and expected in warning and str(tree.resolve()) in warning


def test_changes_outside_the_code_do_not_warn(tree):
    (tree / "docs" / "notes.md").write_text("more notes\n")
    (tree / "scratch.txt").write_text("x\n")
    assert launch.warn_if_mutable(launch.code_state(tree / "pymarl_nonmono")) is None


def test_an_installed_copy_outside_git_has_no_working_tree(tmp_path):
    (tmp_path / "site" / "pymarl_nonmono").mkdir(parents=True)
    state = launch.code_state(tmp_path / "site" / "pymarl_nonmono")
    assert state["working_tree"] is None
    assert launch.warn_if_mutable(state) is None


def test_an_installed_copy_built_from_our_tree_names_the_commit_it_was_built_from(tmp_path):
    installed = tmp_path / "site" / "pymarl_nonmono"
    installed.mkdir(parents=True)
    built = {"commit": "f" * 40, "uncommitted": []}
    (installed / launch.SOURCE_RECORD).write_text(json.dumps(built))
    state = launch.code_state(installed)
    assert state["working_tree"] is None and state["built_from"] == built
    (installed / launch.SOURCE_RECORD).write_text("{not json")
    assert "built_from" not in launch.code_state(installed)


def test_an_installed_copy_inside_another_git_tree_is_not_that_tree(tree):
    # e.g. a venv inside a project: the project's commit says nothing about our code.
    installed = tree / "venv" / "site-packages" / "pymarl_nonmono"
    installed.mkdir(parents=True)
    (tree / "pymarl_nonmono" / "learner.py").write_text("A = 4\n")
    state = launch.code_state(installed)
    assert state["working_tree"] is None
    assert launch.warn_if_mutable(state) is None


def test_bench_warns_and_records_the_code_in_sweep_json(cli_host, tree, monkeypatch, capsys, caplog):
    (tree / "pymarl_nonmono" / "learner.py").write_text("A = 3\n")
    original = launch.code_state
    monkeypatch.setattr(launch, "code_state", lambda package_dir=None: original(tree / "pymarl_nonmono"))
    code = cli.main(["bench", str(cli_host), "--alg", "qmix", "--env", "one_step_matrix_game", "--seeds", "1",
                     "--name", "code1", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "uncommitted changes (pymarl_nonmono/learner.py)" in caplog.text
    recorded = json.loads((cli_host / "results" / "sweeps" / "code1" / "sweep.json").read_text())["code"]
    assert recorded["working_tree"] == str(tree.resolve()) and recorded["uncommitted"] == ["pymarl_nonmono/learner.py"]
    (state,) = (json.loads(p.read_text()) for p in (cli_host / "results" / "sweeps" / "code1" / "runs").glob("*.json"))
    assert state["status"] == "COMPLETED" and state["code"] == recorded
