"""Google Research Football env: validation (runs anywhere), protocol and stats (needs
gfootball), and a slow end-to-end run of our configs through a real PyMARL2 checkout."""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pymarl_nonmono.envs import football
from pymarl_nonmono.envs.football import (
    ACADEMY_SCENARIOS, ACTIVE_SLICE, N_ACTIONS, OBS_SIZE, TEAM_INDEX, FootballSettings, football_settings,
    make_football_env, validate_football_args,
)

HAS_GFOOTBALL = importlib.util.find_spec("gfootball") is not None
needs_gfootball = pytest.mark.skipif(not HAS_GFOOTBALL, reason="gfootball not installed: see docs/football.md")
SHOT, RIGHT = 12, 5  # gfootball default action set indices


# --- validation: no gfootball needed ---------------------------------------------------

def test_module_imports_without_gfootball():
    code = "import sys, pymarl_nonmono.envs.football; assert 'gfootball' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_scenario_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        make_football_env(map_name="academy_3_vs_2", num_agents=3)
    msg = str(err.value)
    assert "academy_3_vs_2" in msg
    assert "academy_3_vs_1_with_keeper (1-4 agents)" in msg
    assert "academy_counterattack_hard (1-11 agents)" in msg


@pytest.mark.parametrize("scenario,bad", [
    ("academy_3_vs_1_with_keeper", 5),
    ("academy_3_vs_1_with_keeper", 0),
    ("academy_pass_and_shoot_with_keeper", 4),
    ("academy_counterattack_easy", 12),
])
def test_agent_count_the_scenario_does_not_have(scenario, bad):
    with pytest.raises(ValueError) as err:
        make_football_env(map_name=scenario, num_agents=bad)
    spec = ACADEMY_SCENARIOS[scenario]
    assert f"num_agents={bad}" in str(err.value)
    assert f"must be 1-{spec.left_players}" in str(err.value)


def test_valid_arguments_pass_validation_without_gfootball():
    assert validate_football_args("academy_3_vs_1_with_keeper", 3, 150).left_players == 4
    assert validate_football_args("academy_counterattack_hard", 4, 150).left_players == 11
    assert validate_football_args("academy_counterattack_easy", 11, 399).game_duration == 400


def test_settings_from_our_yaml_need_no_gfootball():
    import yaml

    root = Path(__file__).resolve().parents[2] / "config" / "envs"
    for path in sorted(root.glob("grf_*.yaml")):
        data = yaml.safe_load(path.read_text())
        assert data["env"] == "grf"
        settings = football_settings({**data["env_args"], "seed": 3})  # main.py adds the seed
        assert settings.scenario == path.stem[len("grf_"):]
        assert settings.rewards == ("scoring", "checkpoints") and settings.state_representation == "global"
    assert football_settings({"scenario": "academy_corner", "num_agents": 10}) == FootballSettings(
        scenario="academy_corner", num_agents=10)


@pytest.mark.parametrize("env_args,fragment", [
    ({"map_name": "academy_3_vs_1_with_keeper"}, "num_agents is required: 1-4"),
    ({"map_name": "academy_3_vs_1_with_keeper", "num_agents": 3, "time_limit": 400}, "time_limit=400"),
    ({"map_name": "academy_3_vs_1_with_keeper", "num_agents": 3.0}, "num_agents=3.0"),
    ({"map_name": "academy_3_vs_1_with_keeper", "num_agents": 3, "time_limt": 100}, "did you mean 'time_limit'"),
    ({"map_name": "academy_3_vs_1_with_keeper", "scenario": "academy_corner", "num_agents": 3}, "disagree"),
    ({"map_name": "academy_3_vs_1_with_keeper", "num_agents": 3, "rewards": "checkpoints"}, "rewards="),
    ({"map_name": "academy_3_vs_1_with_keeper", "num_agents": 3, "rewards": "scoring,goals"}, "'goals'"),
    ({"map_name": "academy_3_vs_1_with_keeper", "num_agents": 3, "state_representation": "full"},
     "state_representation='full'"),
    ({"map_name": "academy_3_vs_1_with_keeper", "num_agents": 3, "reward_aggregation": "max"},
     "reward_aggregation='max'"),
    ({"map_name": "academy_3_vs_1_with_keeper", "num_agents": 3, "seed": -1}, "seed=-1"),
])
def test_bad_env_args_are_value_errors_naming_the_key(env_args, fragment):
    with pytest.raises(ValueError) as err:
        make_football_env(**env_args)
    assert fragment in str(err.value)


def test_missing_gfootball_is_an_import_error_saying_how_to_install(monkeypatch):
    for name in ["gfootball", "gfootball.env", "gfootball.env.config", "gfootball.env.football_env",
                 "gfootball.env.wrappers", "gfootball.env.football_action_set"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError) as err:
        make_football_env(map_name="academy_3_vs_1_with_keeper", num_agents=3)
    msg = str(err.value)
    for needed in ["libsdl2-dev", "libboost-all-dev", '"setuptools<81"', "six",
                   "pip install --no-build-isolation gfootball==2.10.2", "gym==0.25.2"]:
        assert needed in msg, needed
    problems = football.football_problems()
    assert len(problems) == 1 and "gfootball==2.10.2" in problems[0]


# --- with gfootball ---------------------------------------------------------------------

@pytest.fixture
def env3():
    env = make_football_env(map_name="academy_3_vs_1_with_keeper", num_agents=3, seed=7)
    yield env
    env.close()


def play(env, actions, max_steps=None):
    """One episode with a fixed action sequence (repeated); returns observations, rewards, info."""
    obs, _ = env.reset()
    seen, rewards = [obs], []
    for t in range(max_steps or env.episode_limit):
        reward, terminated, info = env.step(actions[t % len(actions)])
        seen.append(env.get_obs())
        rewards.append(reward)
        if terminated:
            return np.stack(seen), rewards, info
    raise AssertionError("episode did not end within its time limit")


@needs_gfootball
def test_scenario_table_matches_installed_gfootball():
    from gfootball.env import config, scenario_builder

    installed = {s for s in scenario_builder.all_scenarios() if s.startswith("academy_")}
    assert installed == set(ACADEMY_SCENARIOS)
    for name, spec in ACADEMY_SCENARIOS.items():
        cfg = config.Config({"level": name}).ScenarioConfig()
        assert (len(cfg.left_team), len(cfg.right_team), cfg.game_duration) == (
            spec.left_players, spec.right_players, spec.game_duration), name


@needs_gfootball
def test_football_problems_is_empty_when_usable():
    assert football.football_problems() == []


@needs_gfootball
def test_protocol_shapes(env3):
    info = env3.get_env_info()
    assert info == {"state_shape": 104 + 11 * 3, "obs_shape": OBS_SIZE, "n_actions": N_ACTIONS,
                    "n_agents": 3, "episode_limit": 150}
    obs, state = env3.reset()
    assert obs.shape == (3, OBS_SIZE) and obs.dtype == np.float32
    assert state.shape == (info["state_shape"],) and state.dtype == np.float32
    assert np.array_equal(env3.get_obs_agent(2), obs[2])
    assert env3.get_obs_size() == OBS_SIZE and env3.get_total_actions() == N_ACTIONS
    assert env3.get_avail_actions() == [[1] * N_ACTIONS] * 3
    assert env3.get_avail_agent_actions(1) == [1] * N_ACTIONS
    reward, terminated, step_info = env3.step(np.zeros(3, dtype=np.int64))
    assert isinstance(reward, float) and terminated is False and step_info == {}
    torch = pytest.importorskip("torch")
    env3.step(torch.zeros(3, dtype=torch.long))  # PyMARL's episode runner passes a tensor
    with pytest.raises(ValueError, match="expected 3 actions"):
        env3.step([0, 0])
    with pytest.raises(ValueError, match="must be in"):
        env3.step([0, 0, 19])
    assert env3.get_stats() == {}
    env3.render()
    env3.save_replay()


@needs_gfootball
def test_global_state_is_team_features_once_plus_controlled_player_one_hots(env3):
    rng = np.random.default_rng(0)
    env3.reset()
    for _ in range(30):
        obs = env3.get_obs()
        state = env3.get_state()
        team, identities = state[:104], state[104:].reshape(3, 11)
        for i in range(3):  # everything but the active-player one-hot is the same for all agents
            assert np.array_equal(obs[i, TEAM_INDEX], team)
        assert np.array_equal(identities, obs[:, ACTIVE_SLICE])
        assert identities.sum(axis=1).tolist() == [1, 1, 1]
        assert identities.argmax(axis=1).tolist() == env3.controlled_players()
        if env3.step(rng.integers(0, N_ACTIONS, 3))[1]:
            env3.reset()


@needs_gfootball
def test_state_size_differs_from_concat_obs():
    env = make_football_env(map_name="academy_counterattack_hard", num_agents=4, seed=1,
                            state_representation="concat_obs")
    try:
        obs, state = env.reset()
        assert env.get_state_size() == 4 * OBS_SIZE == state.shape[0]
        assert np.array_equal(state, obs.reshape(-1))
    finally:
        env.close()
    env = make_football_env(map_name="academy_counterattack_hard", num_agents=4, seed=1)
    try:
        assert env.get_state_size() == 104 + 4 * 11 == env.reset()[1].shape[0]
    finally:
        env.close()


@needs_gfootball
def test_win_stat_on_a_scoring_episode():
    env = make_football_env(map_name="academy_empty_goal_close", num_agents=1, seed=0, rewards="scoring")
    try:
        _, rewards, info = play(env, [[RIGHT], [SHOT]], max_steps=150)
        assert info == {"win": 1, "goal_diff": 1, "score_reward": 1, "episode_limit": False}
        assert rewards[-1] == 1.0 and sum(rewards) == 1.0
    finally:
        env.close()


@needs_gfootball
def test_time_limit_ends_the_episode_as_a_truncation():
    env = make_football_env(map_name="academy_3_vs_1_with_keeper", num_agents=3, seed=0, time_limit=3)
    try:
        seen, _, info = play(env, [[0, 0, 0]])
        assert len(seen) == 4
        assert info == {"win": 0, "goal_diff": 0, "score_reward": 0, "episode_limit": True}
        with pytest.raises(RuntimeError, match="reset"):
            env.step([0, 0, 0])
    finally:
        env.close()


@needs_gfootball
def test_stats_are_consistent_over_random_episodes(env3):
    rng = np.random.default_rng(3)
    for _ in range(15):
        env3.reset()
        while True:
            _, terminated, info = env3.step(rng.integers(0, N_ACTIONS, 3))
            if terminated:
                break
        assert set(info) == {"win", "goal_diff", "score_reward", "episode_limit"}
        # An academy episode ends at its first goal: both are -1, 0 or +1.
        assert info["score_reward"] == info["goal_diff"] in (-1, 0, 1)
        assert info["win"] == int(info["goal_diff"] == 1)


@needs_gfootball
def test_same_seed_same_actions_same_observations():
    rng = np.random.default_rng(11)
    actions = rng.integers(0, N_ACTIONS, (150, 3)).tolist()
    a = make_football_env(map_name="academy_3_vs_1_with_keeper", num_agents=3, seed=5)
    b = make_football_env(map_name="academy_3_vs_1_with_keeper", num_agents=3, seed=5)
    c = make_football_env(map_name="academy_3_vs_1_with_keeper", num_agents=3, seed=6)
    try:
        episodes = {name: [play(env, actions) for _ in range(3)] for name, env in [("a", a), ("b", b), ("c", c)]}
        for (obs_a, rew_a, info_a), (obs_b, rew_b, info_b) in zip(episodes["a"], episodes["b"]):
            assert np.array_equal(obs_a, obs_b) and rew_a == rew_b and info_a == info_b

        def same(x, y):
            return x.shape == y.shape and np.array_equal(x, y)

        # Each episode gets its own engine seed: the same actions do not replay the same game.
        first = episodes["a"][0][0]
        assert not all(same(first, later[0]) for later in episodes["a"][1:])
        assert not all(same(x[0], y[0]) for x, y in zip(episodes["a"], episodes["c"]))
    finally:
        for env in (a, b, c):
            env.close()


def _first_episode_seed(conn):
    env = make_football_env(map_name="academy_empty_goal_close", num_agents=1, seed=3)
    env.reset()
    conn.send(env.episode_seed)
    env.close()


@needs_gfootball
def test_parallel_workers_with_one_seed_get_different_episode_seeds():
    ctx = multiprocessing.get_context("fork")
    seeds = []
    for _ in range(2):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_first_episode_seed, args=(child,))
        proc.start()
        seeds.append(parent.recv())
        proc.join(timeout=60)
    assert seeds[0] != seeds[1]


@needs_gfootball
def test_checkpoint_reward_equals_gfootballs_wrapper():
    gym = pytest.importorskip("gym")
    if tuple(int(p) for p in gym.__version__.split(".")[:2]) >= (0, 26):
        pytest.skip("gfootball's own wrappers need gym<0.26 (docs/football.md)")
    import gfootball.env as gfe

    rng = np.random.default_rng(2)
    env = make_football_env(map_name="academy_3_vs_1_with_keeper", num_agents=3, seed=4)
    fractional = 0
    try:
        for _ in range(6):
            obs, _ = env.reset()
            ref = gfe.create_environment(
                env_name="academy_3_vs_1_with_keeper", representation="simple115v2",
                rewards="scoring,checkpoints", number_of_left_players_agent_controls=3,
                other_config_options={"game_engine_random_seed": env.episode_seed,
                                      "reverse_team_processing": bool(env.episode_seed % 2)})
            try:
                assert np.array_equal(ref.reset(), obs)
                while True:
                    actions = rng.integers(0, N_ACTIONS, 3)
                    reward, terminated, info = env.step(actions)
                    ref_obs, ref_rewards, ref_done, _ = ref.step(actions.tolist())
                    assert np.array_equal(ref_obs, env.get_obs())
                    assert reward == pytest.approx(float(np.sum(ref_rewards)), abs=1e-5)
                    fractional += reward != round(reward)
                    if terminated:
                        assert ref_done or info["episode_limit"]
                        break
            finally:
                ref.close()
        assert fractional > 0, "no checkpoint reward happened: the comparison tested nothing"
    finally:
        env.close()


# --- end to end through PyMARL2 (slow) -------------------------------------------------

SHORT = [
    "use_cuda=False", "t_max=300", "test_interval=150", "test_nepisode=8", "log_interval=150",
    "runner_log_interval=150", "learner_log_interval=150", "batch_size=8", "buffer_size=32",
    "target_update_interval=20",
]


@pytest.fixture(scope="module")
def grf_host(pymarl2_pristine, tmp_path_factory):
    from pymarl_nonmono import cli

    root = tmp_path_factory.mktemp("grf_host") / "pymarl2"
    shutil.copytree(pymarl2_pristine, root, symlinks=True, ignore=shutil.ignore_patterns("results", "__pycache__"))
    assert cli.main(["install", str(root)]) == 0
    return root


@pytest.mark.slow
@pytest.mark.integration
@needs_gfootball
@pytest.mark.parametrize("alg,extra", [
    ("nonmono_qmix", []),
    ("nonmono_qmix_sarsa", []),
    ("nonmono_qmix_rnd", []),
    ("nonmono_qmix", ["runner=episode", "batch_size_run=1", "test_nepisode=2", "batch_size=2",
                      "env_args.state_representation=concat_obs", "name=nonmono_qmix_concat"]),
])
def test_our_configs_train_on_grf_through_pymarl2(grf_host, alg, extra):
    scenario = "academy_3_vs_1_with_keeper"
    overridden = {e.split("=", 1)[0] for e in extra}
    settings = [s for s in SHORT if s.split("=", 1)[0] not in overridden] + extra
    proc = subprocess.run(
        [sys.executable, "src/main.py", f"--config={alg}", f"--env-config=grf_{scenario}", "with", *settings],
        cwd=grf_host, capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    name = next((e.split("=", 1)[1] for e in extra if e.startswith("name=")), alg)
    runs = [p for p in (grf_host / "results" / "sacred" / scenario / name).iterdir() if p.name.isdigit()]
    run_dir = max(runs, key=lambda p: int(p.name))
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    info = json.loads((run_dir / "info.json").read_text())
    for key in ["win_mean", "goal_diff_mean", "score_reward_mean", "test_win_mean", "test_goal_diff_mean",
                "test_score_reward_mean", "test_return_mean", "loss_td"]:
        assert key in info, sorted(info)
    assert all(0.0 <= w <= 1.0 for w in info["test_win_mean"])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["env"] == "grf" and config["env_args"]["map_name"] == scenario
