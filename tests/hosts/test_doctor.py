"""``doctor``'s messages, and the start-up checks that share them (no PyMARL2 needed)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pymarl_nonmono import cli
from pymarl_nonmono.envs import football
from pymarl_nonmono.errors import ConfigError
from pymarl_nonmono.hosts.pymarl2 import doctor as doc
from pymarl_nonmono.hosts.pymarl2 import install as inst
from pymarl_nonmono.hosts.pymarl2.plugin import activate
from pymarl_nonmono.hosts.pymarl2 import preflight as pf
from pymarl_nonmono.hosts.pymarl_family import preflight as family_pf


def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def no_mongo(monkeypatch):
    monkeypatch.delenv(doc.MONGO_URL_ENV, raising=False)


def hand_edited_checkout(tmp_path, git: bool):
    """A folder shaped like a PyMARL2 checkout whose main.py the patches do not fit."""
    root = tmp_path / "pymarl2"
    for rel in inst.REQUIRED_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("edited by hand\n")
    if git:
        (root / ".git").mkdir()
    return root


def without_gfootball(monkeypatch):
    for name in ["gfootball", "gfootball.env", "gfootball.env.config", "gfootball.env.football_env",
                 "gfootball.env.wrappers", "gfootball.env.football_action_set"]:
        monkeypatch.setitem(sys.modules, name, None)


def test_missing_path_is_said_not_to_exist_and_install_is_suggested(tmp_path, capsys):
    missing = tmp_path / "nope"
    code, out, _ = run_cli(capsys, "doctor", str(missing))
    host = next(line for line in out.splitlines() if " host: " in line)
    assert code == 1
    assert host == f"MISSING  host: {missing} does not exist -- fix: pymarl-nonmono install {missing} (clones PyMARL2 into it)"
    assert "not a directory" not in out


@pytest.mark.parametrize("git", [True, False])
def test_git_checkout_is_suggested_only_in_a_git_checkout(tmp_path, capsys, git):
    root = hand_edited_checkout(tmp_path, git)
    _, out, _ = run_cli(capsys, "doctor", str(root))
    patches = next(line for line in out.splitlines() if " patches: " in line)
    assert patches.startswith("MISSING") and f"pymarl-nonmono install {root}" in patches
    assert ("git -C" in patches and "checkout -- src" in patches) is git
    assert ("pristine copy of hijkzzz/pymarl2 commit 8ccac7c" in patches) is not git


@pytest.mark.parametrize("git", [True, False])
def test_install_refusal_suggests_git_only_in_a_git_checkout(tmp_path, capsys, git):
    root = hand_edited_checkout(tmp_path, git)
    code, _, err = run_cli(capsys, "install", str(root))
    assert code == 2 and "nothing was changed" in err
    assert ("git -C" in err and "checkout -- src" in err) is git
    assert ("pristine copy of hijkzzz/pymarl2 commit 8ccac7c" in err) is not git


def test_gfootball_missing_has_one_fix_the_one_the_env_gives(monkeypatch):
    without_gfootball(monkeypatch)
    check = doc.gfootball_check()
    assert check.status == doc.MISSING
    assert check.line().count("gfootball==2.10.2") == 1 and football.INSTALL_HINT in check.line()


def test_a_closed_pipe_ends_doctor_quietly(tmp_path):
    # `doctor DIR | head -3`: the reader is gone before doctor writes.
    proc = subprocess.Popen([sys.executable, "-m", "pymarl_nonmono.cli", "doctor", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert err == "" and proc.returncode == 141


# --------------------------------------------------------------------------- `with` keys

CONFIG = {"td_lambda": 0.6, "t_max": 100, "env_args": {"map_name": "m", "preset": "qtran"}, "name": "x"}


@pytest.mark.parametrize("updates", [
    [], ["t_max=2000"], ["env_args.map_name=3m", "seed=4"], ["env_args={'map_name': '3m'}"],
    ["named_config", "--force", "-F=dir"],  # Sacred's business, not ours
])
def test_known_with_keys_pass(updates):
    family_pf.check_with_updates(CONFIG, updates)


@pytest.mark.parametrize("updates, message", [
    (["td_lamda=0.5"], "unknown config key(s): 'td_lamda' (did you mean 'td_lambda'?)"),
    (["t_max=10", "env_args.map_nme=3m"], "unknown config key(s): 'env_args.map_nme' (did you mean 'env_args.map_name'?)"),
    (["env_args={'presett': 'x'}"], "'env_args.presett' (did you mean 'env_args.preset'?)"),
])
def test_unknown_with_keys_are_named_with_a_suggestion(updates, message):
    with pytest.raises(ConfigError) as err:
        family_pf.check_with_updates(CONFIG, updates)
    assert message in str(err.value)


def test_update_paths_reads_keys_as_sacred_does():
    assert family_pf.update_paths(["a=1", "b.c = x", "d={'e': {'f': 1}, 'g': 2}", "h={}", "named"]) == ["a", "b.c", "d.e.f", "d.g", "h"]


def test_the_plugin_refuses_an_unknown_with_key_in_one_line():
    # Patch 0003's main.py calls this before Sacred sees the command line.
    with pytest.raises(SystemExit) as exc:
        activate.check_config(CONFIG, ["td_lamda=0.5"])
    message = str(exc.value.code)
    assert message.startswith("pymarl-nonmono: unknown config key(s): 'td_lamda' (did you mean 'td_lambda'?)")
    assert "\n" not in message


def test_pymarl2s_own_gfootball_env_without_gfootball_stops_at_start_up(monkeypatch):
    without_gfootball(monkeypatch)
    with pytest.raises(pf.PreflightError) as err:
        pf.check_environment({"env": "gfootball", "env_args": {"env_name": "academy_3_vs_1_with_keeper"}})
    assert "gfootball==2.10.2" in str(err.value)
