"""``pymarl-nonmono install/uninstall/doctor`` on EPyMARL (issue #14, install half).

The real patches on a copy of EPyMARL cbc38c0 (conftest's epymarl_pristine: a clone of the
bundle next to the project), host detection, and one stock EPyMARL run after install.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from install_helpers import run_cli, tree_digest

from pymarl_nonmono.hosts import install as host_install
from pymarl_nonmono.hosts.spec import EPYMARL, PYMARL2, identify

PATCHES = ["0001-current-stack.patch", "0002-lazy-smaclite.patch", "0003-plugin-hook.patch", "0004-scheme-probs.patch",
           "0005-quiet-start.patch"]




@pytest.fixture
def epymarl(epymarl_pristine, tmp_path):
    root = tmp_path / "epymarl"
    shutil.copytree(epymarl_pristine, root, symlinks=True, ignore=shutil.ignore_patterns(".git", "__pycache__", "results"))
    return root


def test_patches_fit_the_pinned_commit_and_do_what_they_say(epymarl):
    series = [p for p, _ in host_install.shipped_patches(EPYMARL)]
    assert [p.name for p in series] == PATCHES
    state = host_install.series_state(series, host_install.read_targets(host_install.touched_paths(series), epymarl))
    assert state.applied == 0  # the pristine tree has none of them, and all apply (else series_state raises)
    main = state.result["src/main.py"].decode()
    assert 'entry_points(group="epymarl.plugins")' in main and 'entry_points(group="epymarl.observers")' in main
    assert 'logger.info("Saving to FileStorageObserver in results/sacred.")' not in main
    assert "return tuple(parsed)" in state.result["src/components/episode_buffer.py"].decode()
    envs = state.result["src/envs/__init__.py"].decode()
    assert "\nfrom .smaclite_wrapper import SMACliteWrapper\n" not in envs
    assert '"probs": {"vshape": (env_info["n_actions"],)' in state.result["src/run.py"].decode()
    for rel, data in state.result.items():
        compile(data, rel, "exec")


def test_install_twice_then_uninstall_restores_byte_for_byte(epymarl, capsys):
    pristine = tree_digest(epymarl)
    code, out, err = run_cli(capsys, "install", str(epymarl))  # no --host: recognised as EPyMARL
    assert code == 0, err
    assert all(f"applied {name}" in out for name in PATCHES)
    assert host_install.read_manifest(epymarl)["host"] == "uoe-agents/epymarl commit cbc38c0"
    installed = tree_digest(epymarl)
    assert installed != pristine
    code, out, _ = run_cli(capsys, "install", "--host", "epymarl", str(epymarl))
    assert code == 0 and "already installed" in out
    assert tree_digest(epymarl) == installed
    code, out, err = run_cli(capsys, "uninstall", str(epymarl))
    assert code == 0, err
    assert tree_digest(epymarl) == pristine


def test_a_modified_tree_is_refused_untouched(epymarl, capsys):
    run_py = epymarl / "src" / "run.py"
    run_py.write_bytes(run_py.read_bytes().replace(b'"terminated": {"vshape": (1,), "dtype": th.uint8},',
                                                  b'"terminated": {"vshape": (1,), "dtype": th.long},'))
    before = tree_digest(epymarl)
    code, _, err = run_cli(capsys, "install", str(epymarl))
    assert code == 2 and err.count("\n") == 1
    assert "0004-scheme-probs.patch" in err and "src/run.py" in err and "nothing was changed" in err
    assert "uoe-agents/epymarl commit cbc38c0" in err
    assert tree_digest(epymarl) == before


def test_detection_tells_the_hosts_apart(epymarl, pymarl2_pristine):
    assert identify(epymarl) is EPYMARL
    assert identify(pymarl2_pristine) is PYMARL2


def test_a_folder_of_neither_host_is_one_line_naming_both(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("print('mine')\n")
    before = tree_digest(tmp_path)
    for command in ("install", "uninstall"):
        code, out, err = run_cli(capsys, command, str(tmp_path))
        assert code == 2 and out == "" and err.count("\n") == 1, err
        assert "PyMARL2" in err and "EPyMARL" in err and "--host pymarl2|epymarl" in err
    code, out, _ = run_cli(capsys, "doctor", str(tmp_path))
    host = next(line for line in out.splitlines() if " host: " in line)
    assert code == 1 and host.startswith("MISSING") and "PyMARL2" in host and "EPyMARL" in host
    assert tree_digest(tmp_path) == before


def test_the_wrong_host_is_refused(epymarl, capsys):
    code, _, err = run_cli(capsys, "install", "--host", "pymarl2", str(epymarl))
    assert code == 2 and "not a PyMARL2 checkout" in err and "src/learners/nq_learner.py" in err


def test_doctor_reports_the_epymarl_patches(epymarl, capsys, monkeypatch):
    monkeypatch.delenv("PYMARL_NONMONO_MONGO_URL", raising=False)
    _, out, _ = run_cli(capsys, "doctor", str(epymarl))
    assert "MISSING  patches: not applied 0001-current-stack, 0002-lazy-smaclite, 0003-plugin-hook, 0004-scheme-probs, 0005-quiet-start" in out
    host_install.install(epymarl, EPYMARL)
    code, out, _ = run_cli(capsys, "doctor", str(epymarl))
    assert f"OK       host: EPyMARL checkout at {epymarl.resolve()}" in out
    assert "OK       patches: applied 0001-current-stack, 0002-lazy-smaclite, 0003-plugin-hook, 0004-scheme-probs, 0005-quiet-start" in out
    assert "plugin: entry point nonmono = pymarl_nonmono.hosts.epymarl.plugin:activate in group epymarl.plugins" in out
    assert "EPyMARL with pymarl-nonmono is" in out


def _import_envs_without_smaclite(root: Path) -> subprocess.CompletedProcess:
    code = "import sys\nsys.modules['smaclite'] = None\nimport envs\nprint(sorted(envs.REGISTRY))\n"
    return subprocess.run([sys.executable, "-c", code], cwd=root / "src", capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))


def test_envs_import_without_smaclite_only_after_install(epymarl):
    before = _import_envs_without_smaclite(epymarl)
    assert before.returncode != 0 and "smaclite" in before.stderr  # what 0002 is for
    host_install.install(epymarl, EPYMARL)
    after = _import_envs_without_smaclite(epymarl)
    assert after.returncode == 0, after.stderr
    assert "'gymma'" in after.stdout and "'smaclite'" in after.stdout


def test_install_clones_epymarl_into_an_empty_folder(epymarl_pristine, tmp_path, capsys):
    dest = tmp_path / "new" / "epymarl"
    code, out, err = run_cli(capsys, "install", "--host", "epymarl", "--source", str(epymarl_pristine), str(dest))
    assert code == 0, err
    assert f"cloned into {dest}: HEAD detached at cbc38c0" in out
    assert all(f"applied {name}" in out for name in PATCHES)


@pytest.mark.integration
def test_stock_qmix_on_lbf_completes_after_install(epymarl):
    if importlib.util.find_spec("lbforaging") is None:
        pytest.skip("lbforaging is not installed: pip install lbforaging")
    host_install.install(epymarl, EPYMARL)
    argv = [sys.executable, "src/main.py", "--config=qmix", "--env-config=gymma", "with",
            'env_args.key=lbforaging:Foraging-8x8-2p-3f-v3', "env_args.time_limit=50", "t_max=500", "use_cuda=False",
            "test_nepisode=1"]
    proc = subprocess.run(argv, cwd=epymarl, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((epymarl / "results" / "sacred").glob("*/*/*/run.json"))
    assert len(runs) == 1, runs
    assert json.loads(runs[0].read_text())["status"] == "COMPLETED"
    # 0003 logs the run's real folder (tools find a run's files through that line).
    assert f"Saving to FileStorageObserver in {runs[0].parent.parent}." in proc.stdout + proc.stderr
