"""SMAClite env: one contract suite run against a stand-in with SMAClite's interface (always)
and against the real SMAClite (when installed), validation, the start-up checks, and a run of
our config through a real PyMARL2 checkout."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest
from smaclite_standin import START_DISTANCE, make_standin

from pymarl_nonmono.envs import smaclite
from pymarl_nonmono.envs.smaclite import (
    ENV_ARGS, SMAC_EPISODE_LIMITS, SMACliteEnv, make_smaclite_env, smac_episode_limits, smaclite_backend,
    smaclite_problems, smaclite_settings,
)

HAS_SMACLITE = importlib.util.find_spec("smaclite") is not None
SMACLITE_SKIP = ("SMAClite is not installed; to run these tests against it: pip install --no-deps "
                 "git+https://github.com/uoe-agents/smaclite && pip install gymnasium pygame scikit-learn rtree")
needs_smaclite = pytest.mark.skipif(not HAS_SMACLITE, reason=SMACLITE_SKIP)
STOP = 1
# SMAC's sizes (n_agents, n_actions, obs_shape, state_shape); SMAClite reproduces them.
SMAC_SIZES = {"3s_vs_5z": (3, 11, 48, 68), "corridor": (6, 30, 156, 282), "3s5z_vs_3s6z": (8, 15, 136, 230)}


@pytest.fixture(params=["standin", pytest.param("smaclite", marks=needs_smaclite)])
def backend(request):
    return {"standin": make_standin, "smaclite": smaclite_backend}[request.param]


def build(backend, episode_limit=None, **env_args):
    settings = smaclite_settings({"map_name": "3s_vs_5z", "seed": 3, **env_args})
    if episode_limit is not None:
        settings = dataclasses.replace(settings, episode_limit=episode_limit)
    return SMACliteEnv(settings, backend=backend)


def random_actions(env, rng):
    return [int(rng.choice(np.flatnonzero(row))) for row in env.get_avail_actions()]


def play(env, policy, max_steps=None):
    """One episode; returns per-step observations, states, rewards, avail actions, the last info."""
    obs, state = env.reset()
    trace = {"obs": [np.stack(obs)], "state": [state], "reward": [], "avail": []}
    for _ in range(max_steps or env.episode_limit):
        avail = np.array(env.get_avail_actions())
        actions = policy(env)
        assert all(avail[i, a] == 1 for i, a in enumerate(actions))
        reward, terminated, info = env.step(actions)
        trace["avail"].append(avail)
        trace["reward"].append(reward)
        trace["obs"].append(np.stack(env.get_obs()))
        trace["state"].append(env.get_state())
        if terminated:
            return trace, info
    raise AssertionError("episode did not end within its episode limit")


# --- the contract, for both backends ------------------------------------------------------

@pytest.mark.parametrize("map_name", sorted(SMAC_SIZES))
def test_env_info_describes_what_the_env_returns(backend, map_name):
    env = build(backend, map_name=map_name)
    info = env.get_env_info()
    assert info["episode_limit"] == SMAC_EPISODE_LIMITS[map_name]
    if backend is smaclite_backend:
        assert (info["n_agents"], info["n_actions"], info["obs_shape"], info["state_shape"]) == SMAC_SIZES[map_name]
    obs, state = env.reset()
    assert len(obs) == info["n_agents"] and all(o.shape == (info["obs_shape"],) for o in obs)
    assert state.shape == (info["state_shape"],)
    assert np.array(env.get_avail_actions()).shape == (info["n_agents"], info["n_actions"])
    assert env.get_obs_agent(info["n_agents"] - 1).shape == (info["obs_shape"],)
    assert len(env.get_avail_agent_actions(0)) == info["n_actions"]
    env.close()


def test_random_play_ends_with_smacs_stats_and_reward_scale(backend):
    env = build(backend)
    rng = np.random.default_rng(0)
    trace, info = play(env, lambda e: random_actions(e, rng))
    rewards = np.array(trace["reward"])
    assert np.all(rewards >= 0) and np.all(np.isfinite(rewards))
    assert rewards.sum() <= 20 + 1e-6 or info["battle_won"]
    # The dead can only no-op; the living can always stop.
    for avail in trace["avail"]:
        dead = avail[:, STOP] == 0
        assert np.all(avail[dead, 0] == 1) and np.all(avail[dead, 1:] == 0)
    assert set(info) >= {"battle_won", "dead_allies", "dead_enemies"}
    assert isinstance(info["battle_won"], bool)
    assert info["battle_won"] == (info["dead_enemies"] == env.n_enemies)
    assert "episode_limit" not in info  # a battle ended, not the clock
    stats = env.get_stats()
    assert stats["battles_game"] == 1 and stats["battles_won"] == int(info["battle_won"])


def test_unavailable_action_is_an_error_naming_agent_and_action(backend):
    env = build(backend)
    env.reset()
    actions = [STOP] * env.n_agents
    actions[1] = 0  # no-op is for the dead only
    with pytest.raises(ValueError, match=r"agent 1 chose action 0, which is not available to it \(available: \[1, "):
        env.step(actions)
    with pytest.raises(ValueError, match=f"agent 0 chose action {env.n_actions}"):
        env.step([env.n_actions] + [STOP] * (env.n_agents - 1))
    reward, terminated, _ = env.step([STOP] * env.n_agents)  # the env is still usable
    assert reward >= 0 and not terminated


@pytest.mark.parametrize("continuing_episode", [True, False])
def test_episode_limit_ends_the_episode_as_smac_does(backend, continuing_episode):
    env = build(backend, episode_limit=3, continuing_episode=continuing_episode)
    env.reset()
    ends = [env.step([STOP] * env.n_agents)[1:] for _ in range(3)]
    assert [terminated for terminated, _ in ends] == [False, False, True]
    info = ends[-1][1]
    assert info["battle_won"] is False
    # PyMARL's runners store terminated=False for a step whose info says episode_limit.
    assert info.get("episode_limit", False) is continuing_episode
    assert env.get_stats()["timeouts"] == 1
    with pytest.raises(RuntimeError, match="reset"):
        env.step([STOP] * env.n_agents)
    env.reset()
    assert not env.step([STOP] * env.n_agents)[1]  # the clock restarts at reset


def test_same_seed_same_trajectory(backend):
    traces = []
    for _ in range(2):
        env = build(backend, seed=11)
        rng = np.random.default_rng(5)
        episodes = [play(env, lambda e: random_actions(e, rng)) for _ in range(2)]
        traces.append(episodes)
        env.close()
    for (a, info_a), (b, info_b) in zip(*traces):
        assert info_a == info_b
        for key in a:
            assert len(a[key]) == len(b[key])
            assert all(np.array_equal(x, y) for x, y in zip(a[key], b[key])), key


def test_use_cpp_rvo2_is_passed_through(backend):
    if backend is smaclite_backend:
        if importlib.util.find_spec("rvo2") is not None:
            pytest.skip("rvo2 is installed: nothing to refuse")
        with pytest.raises(ImportError, match="SMAClite-Python-RVO2"):
            build(backend, use_cpp_rvo2=True)
        return
    assert build(backend, use_cpp_rvo2=True)._env.use_cpp_rvo2 is True
    assert build(backend)._env.use_cpp_rvo2 is False


# --- stand-in only: outcomes the real game does not give on demand ------------------------

def test_won_battle_reports_battle_won_and_smacs_full_return():
    env = build(make_standin, seed=0)

    def charge(e):
        out = []
        for row in e.get_avail_actions():
            targets = np.flatnonzero(row[6:])
            out.append(int(6 + targets[0]) if len(targets) else (4 if row[4] else int(np.flatnonzero(row)[0])))
        return out

    trace, info = play(env, charge)
    assert info["battle_won"] is True and info["dead_enemies"] == env.n_enemies
    # SMAC's scale: all enemy health, every kill and the win bonus add up to exactly 20.
    assert sum(trace["reward"]) == pytest.approx(20.0)
    assert env.get_stats()["win_rate"] == 1.0


def test_different_seeds_give_different_trajectories_on_the_standin():
    def returns(seed):
        env = build(make_standin, seed=seed)
        rng = np.random.default_rng(0)
        env.reset()
        for _ in range(START_DISTANCE):
            env.step([4] * env.n_agents)
        return [env.step(random_actions(env, rng))[0] for _ in range(3)]

    assert returns(1) != returns(2)


# --- validation: no SMAClite needed --------------------------------------------------------

def test_module_imports_without_smaclite():
    code = "import sys, pymarl_nonmono.envs.smaclite; assert 'smaclite' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("env_args,fragments", [
    ({"map_name": "3s_vs_5z", "use_cpp_rvo": True},
     ["'use_cpp_rvo' (did you mean 'use_cpp_rvo2'?)", "allowed: continuing_episode, map_name, seed, use_cpp_rvo2"]),
    ({"map_name": "3s_vs_5z", "difficulty": "7"}, ["'difficulty'", "allowed: continuing_episode, map_name"]),
    ({"map_name": "3m"}, ["map_name='3m'", "3s_vs_5z", "corridor", "3s5z_vs_3s6z", "MMM2"]),
    ({}, ["map_name is required", "3s5z_vs_3s6z"]),
    ({"map_name": "corridor", "use_cpp_rvo2": "yes"}, ["use_cpp_rvo2='yes'"]),
    ({"map_name": "corridor", "continuing_episode": 1}, ["continuing_episode=1"]),
    ({"map_name": "corridor", "seed": -2}, ["seed=-2"]),
])
def test_bad_env_args_stop_with_one_line_naming_the_allowed(env_args, fragments):
    with pytest.raises(ValueError) as err:
        make_smaclite_env(**env_args)
    msg = str(err.value)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


def test_our_yaml_is_valid_and_sets_only_known_keys():
    import yaml

    from pymarl_nonmono.hosts.pymarl2.plugin import config_root

    data = yaml.safe_load((config_root() / "envs" / "smaclite.yaml").read_text())
    assert data["env"] == "smaclite" and set(data["env_args"]) <= ENV_ARGS
    settings = smaclite_settings({**data["env_args"], "seed": 1})  # main.py adds the seed
    assert settings.map_name == "3s5z_vs_3s6z" and settings.episode_limit == 170
    assert settings.continuing_episode is False and settings.use_cpp_rvo2 is False


def test_our_episode_limits_are_smacs():
    assert {m: SMAC_EPISODE_LIMITS[m] for m in SMAC_SIZES} == {"3s_vs_5z": 250, "corridor": 400, "3s5z_vs_3s6z": 170}
    limits, source = smac_episode_limits()
    if source != "smac.env.starcraft2.maps.smac_maps":
        pytest.skip("StarCraft's SMAC is not installed: pip install git+https://github.com/oxwhirl/smac.git")
    assert limits == SMAC_EPISODE_LIMITS


def test_without_smac_our_copy_of_its_table_is_used(monkeypatch):
    monkeypatch.setitem(sys.modules, "smac.env.starcraft2.maps.smac_maps", None)
    limits, source = smac_episode_limits()
    assert limits == SMAC_EPISODE_LIMITS and "copy" in source
    assert smaclite_settings({"map_name": "corridor"}).episode_limit == 400


def test_missing_smaclite_is_an_import_error_saying_how_to_install(monkeypatch):
    for name in ["smaclite", "smaclite.env", "smaclite.env.maps", "smaclite.env.maps.map"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as err:
        make_smaclite_env(map_name="3s_vs_5z")
    for needed in ["pip install --no-deps git+https://github.com/uoe-agents/smaclite",
                   "pip install gymnasium pygame scikit-learn rtree"]:
        assert needed in str(err.value)
    problems = smaclite_problems()
    assert len(problems) == 1 and "git+https://github.com/uoe-agents/smaclite" in problems[0]


@needs_smaclite
def test_map_table_matches_installed_smaclite():
    from smaclite.env.maps.map import MapPreset

    assert {p.value.name for p in MapPreset} == set(SMAC_EPISODE_LIMITS)
    assert smaclite_problems() == []


# --- start-up checks: doctor and the StarCraft message ------------------------------------

def test_doctor_says_whether_smaclite_runs(monkeypatch):
    from pymarl_nonmono.hosts.pymarl2 import doctor

    check = doctor.smaclite_check()
    assert check.name == "smaclite" and check.status == (doctor.OK if HAS_SMACLITE else doctor.MISSING)
    monkeypatch.setattr(smaclite, "smaclite_problems", lambda: ["SMAClite is not usable here. To install it: X"])
    check = doctor.smaclite_check()
    assert check.status == doctor.MISSING and "To install it: X" in check.line()


def test_starcraft_message_names_the_smaclite_command_for_the_same_map(monkeypatch, tmp_path):
    from pymarl_nonmono.hosts.pymarl2.preflight import PreflightError, check_environment

    monkeypatch.setenv("SC2PATH", str(tmp_path / "nowhere"))
    with pytest.raises(PreflightError) as err:
        check_environment({"env": "sc2", "env_args": {"map_name": "3s5z_vs_3s6z"}})
    msg = str(err.value)
    assert "s2client-proto" in msg
    assert "--env-config=smaclite with env_args.map_name=3s5z_vs_3s6z" in msg


def test_smaclite_run_with_a_bad_key_or_missing_smaclite_stops_at_start(monkeypatch):
    from pymarl_nonmono.hosts.pymarl2.preflight import PreflightError, check_environment

    with pytest.raises(ValueError, match="unknown smaclite env_args key"):
        check_environment({"env": "smaclite", "env_args": {"map_name": "corridor", "seed": 1, "step_mul": 8}})
    monkeypatch.setattr(smaclite, "smaclite_problems", lambda: ["SMAClite is not usable here"])
    with pytest.raises(PreflightError, match="cannot run env=smaclite: SMAClite is not usable here"):
        check_environment({"env": "smaclite", "env_args": {"map_name": "corridor", "seed": 1}})


# --- a real PyMARL2 run --------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.slow
@needs_smaclite
def test_nonmono_qmix_rnd_trains_on_3s_vs_5z_and_logs_battle_won(pymarl2_host):
    root = pymarl2_host
    proc = subprocess.run(
        [sys.executable, "src/main.py", "--config=nonmono_qmix_rnd", "--env-config=smaclite", "with",
         "env_args.map_name=3s_vs_5z", "use_cuda=False", "t_max=300", "runner=episode", "batch_size_run=1",
         "batch_size=4", "buffer_size=32", "test_interval=200", "test_nepisode=2", "log_interval=200",
         "runner_log_interval=200", "learner_log_interval=200", "name=smaclite_host_test"],
        cwd=root, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p for p in (root / "results" / "sacred" / "3s_vs_5z" / "smaclite_host_test").iterdir() if p.name.isdigit()]
    run_dir = max(runs, key=lambda p: int(p.name))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    info = json.loads((run_dir / "info.json").read_text())
    assert {"test_battle_won_mean", "battle_won_mean", "test_dead_enemies_mean"} <= set(info), sorted(info)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"] == "smaclite" and config["env_args"]["map_name"] == "3s_vs_5z"
