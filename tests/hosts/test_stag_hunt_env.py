"""PyMARL2's own stag_hunt env: with our one-pass get_obs and get_avail_actions it returns what its
own methods return, value for value (signs of zero included), on every step of random episodes
in which agents catch prey and freeze; settings the one-pass methods do not cover keep the env's
own; and a run's env gets them through the plugin."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from host_modules import imported_from_host
from pymarl_nonmono.hosts.pymarl2.stag_hunt import accelerate, not_covered

pytestmark = pytest.mark.integration


def env_args(root, **changes):
    args = yaml.safe_load((root / "src" / "config" / "envs" / "stag_hunt.yaml").read_text())["env_args"]
    args.update(changes)
    return args


def assert_same(fast, stock, what):
    assert len(fast) == len(stock), what
    for a, (x, y) in enumerate(zip(fast, stock)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, (what, a, x.dtype, y.dtype, x.shape, y.shape)
        np.testing.assert_array_equal(x, y, err_msg=f"{what}, agent {a}")
        np.testing.assert_array_equal(np.signbit(x), np.signbit(y), err_msg=f"{what}, agent {a}: sign of zero")


@pytest.mark.parametrize("changes", [
    {"miscapture_punishment": -1},  # the study's setting
    {"observe_walls": True},
    {"remove_frozen": False},
    {"capture_action": False, "capture_conditions": [1, 1]},
], ids=["study", "walls", "frozen-kept", "no-catch-action"])
def test_one_pass_methods_return_what_the_envs_own_return_at_every_step(pymarl2_host, changes):
    with imported_from_host(pymarl2_host, "envs.stag_hunt.stag_hunt") as module:
        np.random.seed(7)  # the env draws from numpy's global generator
        env = module.StagHunt(**env_args(pymarl2_host, **changes))
        assert accelerate(env)
        stock = module.StagHunt
        rng = np.random.default_rng(0)
        steps = frozen = 0
        for _ in range(6):
            env.reset()
            done = False
            while not done:
                assert_same(env.get_obs(), stock.get_obs(env), f"get_obs at step {steps}")
                avail = env.get_avail_actions()
                assert avail == stock.get_avail_actions(env), f"get_avail_actions at step {steps}"
                actions = []
                for row in avail:
                    choices = np.flatnonzero(row)
                    catch = env.action_labels["catch"]
                    wants_catch = env.capture_action and row[catch] and rng.random() < 0.7
                    actions.append(catch if wants_catch else int(rng.choice(choices)))
                _, done, _ = env.step(np.array(actions))
                frozen += int((env.agents_not_frozen == 0).any())
                steps += 1
        assert steps >= 600 and frozen > 0, (steps, frozen)  # captures happened: frozen agents were observed


@pytest.mark.parametrize("changes,reason", [({"toroidal": True}, "toroidal"), ({"observe_ids": True}, "observe_ids"),
                                            ({"observe_state": True}, "observe_state")])
def test_settings_the_one_pass_methods_do_not_cover_keep_the_envs_own(pymarl2_host, changes, reason):
    with imported_from_host(pymarl2_host, "envs.stag_hunt.stag_hunt") as module:
        env = module.StagHunt(**env_args(pymarl2_host, **changes))
        assert not_covered(env) == [reason] and not accelerate(env)
        assert env.get_obs.__func__ is module.StagHunt.get_obs


def test_a_runs_stag_hunt_env_gets_the_one_pass_methods_through_the_plugin(pymarl2_host):
    code = ("import sys, yaml\n"
            "from pymarl_nonmono.hosts.pymarl2.plugin import activate\n"
            "sys.argv = ['main.py']\nactivate()\nimport envs\n"
            "env = envs.REGISTRY['stag_hunt'](**yaml.safe_load(open('config/envs/stag_hunt.yaml'))['env_args'])\n"
            "print(env.get_obs.func.__module__, len(env.get_obs()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=pymarl2_host / "src", capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1].split() == ["pymarl_nonmono.hosts.pymarl2.stag_hunt", "8"]  # after pygame's banner
