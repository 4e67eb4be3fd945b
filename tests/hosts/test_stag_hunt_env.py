"""PyMARL2's own stag_hunt env: with our one-pass get_obs and get_avail_actions it returns what its
own methods return, value for value (signs of zero included), on every step of random episodes
in which agents catch prey and freeze; our step leaves the env in the state its own step leaves it
in, returns the same and draws the same random numbers; settings we do not cover keep the env's
own methods; and a run's env gets ours through the plugin."""

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


STATE = ("grid", "agents", "prey", "prey_alive", "agents_not_frozen", "steps", "sum_rewards")


@pytest.mark.parametrize("changes", [
    {"miscapture_punishment": -1},  # the study's setting
    {"miscapture_punishment": 0, "n_agents": 4, "world_shape": [6, 8]},
    {"remove_frozen": False, "mountain_slope": 0.3, "p_stags_rest": 0.4, "n_hare": 3, "p_hare_rest": 0.2,
     "reward_collision": -0.1, "reward_time": -0.1},
    {"capture_action": False, "capture_conditions": [1, 1], "n_hare": 2, "capture_terminal": True},
    {"capture_action": False, "capture_conditions": [1, 1], "prevent_cannibalism": False, "n_agents": 12},
    {"agent_move_block": [0], "capture_action_conditions": [1, 1], "mountain_slope": 0.5},  # agents onto prey
], ids=["study", "no-punishment", "slope-rest-hares-frozen-kept", "no-catch-action-terminal", "cannibalism",
        "agents-walk-onto-prey"])
def test_our_step_leaves_the_env_as_its_own_does_and_draws_the_same_random_numbers(pymarl2_host, changes):
    with imported_from_host(pymarl2_host, "envs.stag_hunt.stag_hunt") as module:
        args = env_args(pymarl2_host, **changes)
        np.random.seed(3)  # the env draws from numpy's global generator
        stock = module.StagHunt(**args)
        np.random.seed(3)
        ours = module.StagHunt(**args)
        assert accelerate(ours) and ours.step.func.__module__ == "pymarl_nonmono.hosts.pymarl2.stag_hunt"
        rng = np.random.default_rng(1)
        steps = captures = 0
        for _ in range(6):
            drawn = np.random.get_state()
            stock.reset()
            np.random.set_state(drawn)
            ours.reset()
            done = False
            while not done:
                avail = module.StagHunt.get_avail_actions(stock)
                catch = stock.action_labels["catch"] if stock.capture_action else None
                actions = np.array([catch if catch is not None and row[catch] and rng.random() < 0.7
                                    else rng.choice(np.flatnonzero(row)) for row in avail])
                drawn = np.random.get_state()
                expected = stock.step(actions)
                after_stock = np.random.get_state()
                np.random.set_state(drawn)
                got = ours.step(actions)
                after_ours = np.random.get_state()
                assert got == expected and type(got[0]) is type(expected[0]), f"step {steps}: {got} != {expected}"
                assert after_ours[1].tolist() == after_stock[1].tolist() and after_ours[2:] == after_stock[2:], \
                    f"step {steps}: the random numbers drawn differ"
                for name in STATE:
                    x, y = np.asarray(getattr(ours, name)), np.asarray(getattr(stock, name))
                    assert x.dtype == y.dtype, (name, x.dtype, y.dtype)
                    np.testing.assert_array_equal(x, y, err_msg=f"{name} after step {steps}")
                steps, done = steps + 1, expected[1]
            captures += int((stock.prey_alive == 0).sum())
        assert steps >= 50 and captures >= 4, (steps, captures)  # prey were caught: agents froze


def test_our_step_refuses_actions_of_the_wrong_shape(pymarl2_host):
    with imported_from_host(pymarl2_host, "envs.stag_hunt.stag_hunt") as module:
        env = module.StagHunt(**env_args(pymarl2_host))
        assert accelerate(env)
        with pytest.raises(ValueError, match=r"one action per agent, shape \(8,\)"):
            env.step(np.zeros((8, 1), dtype=int))


@pytest.mark.parametrize("changes,reason", [({"toroidal": True}, "toroidal"), ({"observe_ids": True}, "observe_ids"),
                                            ({"observe_state": True}, "observe_state"),
                                            ({"print_caught_prey": True}, "print_caught_prey")])
def test_settings_we_do_not_cover_keep_the_envs_own_methods(pymarl2_host, changes, reason):
    with imported_from_host(pymarl2_host, "envs.stag_hunt.stag_hunt") as module:
        env = module.StagHunt(**env_args(pymarl2_host, **changes))
        assert not_covered(env) == [reason] and not accelerate(env)
        assert env.get_obs.__func__ is module.StagHunt.get_obs and env.step.__func__ is module.StagHunt.step


def test_a_runs_stag_hunt_env_gets_our_methods_through_the_plugin(pymarl2_host):
    code = ("import sys, yaml\n"
            "from pymarl_nonmono.hosts.pymarl2.plugin import activate\n"
            "sys.argv = ['main.py']\nactivate()\nimport envs\n"
            "env = envs.REGISTRY['stag_hunt'](**yaml.safe_load(open('config/envs/stag_hunt.yaml'))['env_args'])\n"
            "print(env.get_obs.func.__module__, env.step.func.__module__, len(env.get_obs()))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=pymarl2_host / "src", capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    ours = "pymarl_nonmono.hosts.pymarl2.stag_hunt"
    assert out.stdout.splitlines()[-1].split() == [ours, ours, "8"]  # the last line: after pygame's banner
