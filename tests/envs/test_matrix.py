import numpy as np
import pytest

from pymarl_nonmono.envs.matrix import PRESETS, make_matrix_game, resolve_payoff


@pytest.mark.parametrize("preset", PRESETS.names())
def test_every_preset_plays_its_payoff(preset):
    env = make_matrix_game(preset=preset, penalty_k=100 if preset == "penalty" else None)
    info = env.get_env_info()
    assert info["n_agents"] == 2 and info["n_actions"] == 3 and info["episode_limit"] == 1
    obs, state = env.reset()
    assert len(obs) == 2 and len(state) == env.get_state_size()
    reward, terminated, stats = env.step([0, 2])
    assert reward == env.payoff[0, 2] and terminated
    assert stats["optimal"] == float(reward == env.payoff.max())


def test_hand_values():
    assert resolve_payoff("qtran")[0, 0] == 8 and resolve_payoff("climbing")[0, 1] == -30
    assert resolve_payoff("penalty", penalty_k=7)[0, 0] == -7


def test_any_number_of_agents_and_unequal_actions():
    payoff = np.arange(2 * 3 * 4, dtype=float).reshape(2, 3, 4).tolist()
    env = make_matrix_game(payoff=payoff)
    assert env.get_env_info()["n_agents"] == 3 and env.get_total_actions() == 4
    assert env.get_avail_agent_actions(0) == [1, 1, 0, 0]
    assert env.step([1, 2, 3])[0] == payoff[1][2][3]
    env.reset()
    with pytest.raises(ValueError, match="agent 0 took action 2, which is not available"):
        env.step([2, 0, 0])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(payoff=[[1, 2], [3]]), r"env_args.payoff is ragged"),
        (dict(payoff=[[1, "x"]]), r"env_args.payoff\[0\]\[1\]='x' must be a number"),
        (dict(payoff=[]), r"env_args.payoff=\[\] must be a number or a non-empty list"),
        (dict(preset="qtrn"), r"env_args.preset='qtrn' is not one of .*did you mean 'qtran'"),
        (dict(preset="penalty"), r"needs env_args.penalty_k"),
        (dict(preset="penalty", penalty_k=-1), r"env_args.penalty_k=-1 is outside"),
        (dict(preset="qtran", payoff=[[1]]), r"exactly one of env_args.preset"),
        (dict(payoff=[[1, 2], [3, 4]], n_agents=3), r"env_args.n_agents=3 but the payoff has 2"),
        (dict(payoff=[[1, 2], [3, 4]], n_actions=3), r"env_args.n_actions=3 but the payoff's largest"),
        (dict(preset="qtran", colour="red"), r"unknown env_args key\(s\): 'colour'"),
        (dict(preset="qtran", state_last_action=True), r"env_args.state_last_action=True: .* leave it False"),
    ],
)
def test_bad_payoffs_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_matrix_game(**kwargs)


def test_state_last_action_false_is_accepted_as_stock_configs_set_it():
    # PyMARL2's vmix.yaml sets env_args.state_last_action: False; the game was refused as unknown.
    assert make_matrix_game(preset="qtran", state_last_action=False).get_state_size() == 1


def test_the_papers_table1_games():
    # arXiv 2511.09792, Table 1: Game A and Game B.
    np.testing.assert_array_equal(resolve_payoff("paper_a"), [[12, -12, -12], [-12, 0, 0], [-12, 0, 0]])
    np.testing.assert_array_equal(resolve_payoff("paper_b"), [[12, 0, 10], [0, 0, 10], [10, 10, 10]])


def test_paper_a_is_an_alias_of_pymarl2_hard():
    np.testing.assert_array_equal(resolve_payoff("paper_a"), resolve_payoff("pymarl2_hard"))
    assert {"paper_a", "pymarl2_hard"} <= set(PRESETS.names())
