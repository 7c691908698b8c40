"""GridWorld behaviour: rewards, termination, time limit, rendering, seeding, oracle."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from data.gridworld import AGENT, GridWorldEnv

UP, RIGHT, DOWN, LEFT = range(4)


def make_scenario(
    agent: tuple[float, float], goal: tuple[int, int], hazard: tuple[int, int], **kwargs
) -> GridWorldEnv:
    """An env reset and then moved to a hand-made layout, so outcomes are known in advance."""
    env = GridWorldEnv(**kwargs)
    env.reset(seed=0)
    dtype = np.float64 if env.continuous else np.int64
    env.agent_pos = np.array(agent, dtype)
    env.goal_pos, env.hazard_pos = goal, hazard
    return env


def run_episode(
    env: GridWorldEnv, policy: str, seed: int, jitter: bool = False
) -> tuple[float, bool]:
    """Play one episode; jitter moves a continuous agent off its cell centre first."""
    env.reset(seed=seed)
    if jitter:
        env.agent_pos = np.floor(env.agent_pos) + env.np_random.uniform(0.0, 0.99, 2)
    total, done = 0.0, False
    while not done:
        action = env.oracle_action() if policy == "oracle" else env.action_space.sample()
        _, reward, terminated, truncated, info = env.step(action)
        total += reward
        done = terminated or truncated
    return total, info["success"]


@pytest.mark.parametrize("continuous", [False, True])
def test_frame_is_uint8_64x64_and_changes_when_agent_moves(continuous: bool) -> None:
    env = make_scenario((2.5, 2.5) if continuous else (2, 2), (7, 7), (0, 7), continuous=continuous)
    before = env.render()
    assert before.shape == (64, 64, 3) and before.dtype == np.uint8
    assert env.observation_space.contains(before)
    obs, *_ = env.step(np.array([0.25, 0.0], np.float32) if continuous else RIGHT)
    assert not np.array_equal(obs, before)
    np.testing.assert_array_equal(obs, env.render())
    assert obs is not env.render()


def test_continuous_frame_shows_sub_cell_position() -> None:
    env = make_scenario((3.5, 3.5), (7, 7), (0, 7), continuous=True)
    centred = env.render()
    env.agent_pos = np.array([3.8, 3.5])
    assert env.agent_cell == (3, 3)
    assert not np.array_equal(env.render(), centred)


def test_goal_terminates_with_goal_reward_and_agent_drawn_on_top() -> None:
    env = make_scenario((2, 3), (3, 3), (0, 0))
    obs, reward, terminated, truncated, info = env.step(RIGHT)
    assert reward == pytest.approx(1.0 - 0.01)
    assert terminated and not truncated
    assert info == {"success": True, "hazard": False}
    np.testing.assert_array_equal(obs[3 * 8 + 4, 3 * 8 + 4], AGENT)


def test_hazard_terminates_with_negative_reward() -> None:
    env = make_scenario((5, 5), (0, 0), (5, 4))
    _, reward, terminated, truncated, info = env.step(UP)
    assert reward == pytest.approx(-1.0 - 0.01)
    assert terminated and not truncated
    assert info == {"success": False, "hazard": True}


def test_continuous_goal_uses_the_cell_of_the_float_position() -> None:
    env = make_scenario((2.5, 3.5), (3, 3), (0, 0), continuous=True)
    _, reward, terminated, _, info = env.step(np.array([0.4, 0.0], np.float32))
    assert not terminated and reward == pytest.approx(-0.01)
    _, reward, terminated, _, info = env.step(np.array([0.4, 0.0], np.float32))
    assert terminated and info["success"] and reward == pytest.approx(0.99)


@pytest.mark.parametrize("continuous", [False, True])
def test_time_limit_truncates_exactly_at_max_steps(continuous: bool) -> None:
    start = (0.5, 0.5) if continuous else (0, 0)
    env = make_scenario(start, (7, 7), (7, 0), continuous=continuous, max_steps=5)
    stay = np.array([-1.0, -1.0], np.float32) if continuous else LEFT  # pushes into the corner
    for _ in range(4):
        _, reward, terminated, truncated, _ = env.step(stay)
        assert not terminated and not truncated and reward == pytest.approx(-0.01)
    _, _, terminated, truncated, info = env.step(stay)
    assert truncated and not terminated
    assert info == {"success": False, "hazard": False}


def test_reaching_the_goal_on_the_last_step_terminates_without_truncation() -> None:
    env = make_scenario((0, 0), (2, 0), (7, 7), max_steps=2)
    env.step(RIGHT)
    _, reward, terminated, truncated, info = env.step(RIGHT)
    assert terminated and not truncated and info["success"]
    assert reward == pytest.approx(0.99)


def test_time_limit_resets_with_the_episode() -> None:
    env = GridWorldEnv(max_steps=3)
    for seed in range(2):
        env.reset(seed=seed)
        env.goal_pos, env.hazard_pos, env.agent_pos = (7, 7), (7, 6), np.array([0, 0])
        outcomes = [env.step(UP)[3] for _ in range(3)]
        assert outcomes == [False, False, True]


def test_discrete_border_moves_keep_agent_in_place() -> None:
    outward = {(0, 0): (UP, LEFT), (7, 0): (UP, RIGHT), (7, 7): (DOWN, RIGHT), (0, 7): (DOWN, LEFT)}
    for corner, actions in outward.items():
        env = make_scenario(corner, (3, 3), (4, 4))
        for action in actions:
            env.step(action)
            assert env.agent_cell == corner


def test_continuous_border_moves_keep_agent_inside() -> None:
    env = make_scenario((0.5, 7.5), (3, 3), (4, 4), continuous=True)
    for _ in range(3):
        env.step(np.array([-1.0, 1.0], np.float32))
    x, y = env.agent_pos
    assert 0.0 <= x < 8 and 0.0 <= y < 8
    assert env.agent_cell == (0, 7)


def test_continuous_actions_are_clipped() -> None:
    env = make_scenario((3.5, 3.5), (7, 7), (0, 7), continuous=True)
    env.step(np.array([5.0, -5.0], np.float32))
    np.testing.assert_allclose(env.agent_pos, [4.5, 2.5])


@pytest.mark.parametrize("action", [4, -1, 1.5, np.array([1]), "up"])
def test_invalid_discrete_action_raises(action: object) -> None:
    env = GridWorldEnv()
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(action)


def test_size_must_divide_the_frame() -> None:
    with pytest.raises(ValueError, match="divide"):
        GridWorldEnv(size=7)
    assert GridWorldEnv(size=16).cell == 4


@pytest.mark.parametrize("continuous", [False, True])
def test_same_seed_gives_same_layout_and_frames(continuous: bool) -> None:
    frames = []
    for _ in range(2):
        env = GridWorldEnv(continuous=continuous)
        obs, _ = env.reset(seed=123)
        env.action_space.seed(7)
        episode = [obs] + [env.step(env.action_space.sample())[0] for _ in range(5)]
        frames.append(np.stack(episode))
    np.testing.assert_array_equal(frames[0], frames[1])
    env = GridWorldEnv(continuous=continuous)
    layouts = {tuple(env.reset(seed=s)[0].ravel()[::7]) for s in range(5)}
    assert len(layouts) > 1


def test_continuous_agent_starts_at_its_cell_centre() -> None:
    env = GridWorldEnv(continuous=True)
    for seed in range(20):
        env.reset(seed=seed)
        np.testing.assert_allclose(env.agent_pos - np.floor(env.agent_pos), [0.5, 0.5])


def test_agent_goal_and_hazard_are_on_distinct_cells() -> None:
    env = GridWorldEnv(size=4)
    env.reset(seed=0)
    for _ in range(500):
        env.reset()
        assert len({env.agent_cell, env.goal_pos, env.hazard_pos}) == 3


@pytest.mark.parametrize("continuous", [False, True])
def test_fixed_layout_keeps_the_map_and_draws_every_other_start(continuous: bool) -> None:
    env = GridWorldEnv(size=4, continuous=continuous, layout="fixed")
    starts = set()
    for seed in range(300):
        env.reset(seed=seed)
        assert (env.goal_pos, env.hazard_pos) == ((3, 3), (2, 2))
        starts.add(env.agent_cell)
    assert starts == {(x, y) for x in range(4) for y in range(4)} - {(3, 3), (2, 2)}


def test_unknown_layout_is_refused() -> None:
    with pytest.raises(ValueError, match="layout"):
        GridWorldEnv(layout="maze")


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("layout", ["random", "fixed"])
def test_oracle_beats_random_by_a_wide_margin(continuous: bool, layout: str) -> None:
    env = GridWorldEnv(size=4 if layout == "fixed" else 8, continuous=continuous, layout=layout)
    env.action_space.seed(0)
    oracle = [run_episode(env, "oracle", seed, jitter=continuous) for seed in range(200)]
    random = [run_episode(env, "random", seed) for seed in range(200)]
    oracle_success = np.mean([s for _, s in oracle])
    random_success = np.mean([s for _, s in random])
    assert oracle_success == 1.0
    assert random_success < 0.5
    assert np.mean([r for r, _ in oracle]) - np.mean([r for r, _ in random]) > 0.8


def test_oracle_routes_around_the_hazard() -> None:
    env = make_scenario((0, 0), (2, 0), (1, 0))  # hazard sits on the straight line
    assert env.oracle_action() == DOWN


@pytest.mark.parametrize(
    ("env_id", "continuous"), [("GridWorld-v0", False), ("GridWorldContinuous-v0", True),
                               ("GridWorldFixed-v0", False), ("GridWorldFixedContinuous-v0", True)]
)
def test_gymnasium_make_runs_both_ids_with_internal_time_limit(
    env_id: str, continuous: bool
) -> None:
    env = gym.make(env_id, max_steps=3)
    assert env.spec.max_episode_steps is None
    assert env.unwrapped.continuous is continuous
    assert isinstance(env.action_space, gym.spaces.Box if continuous else gym.spaces.Discrete)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (64, 64, 3)
    env.unwrapped.goal_pos, env.unwrapped.hazard_pos = (7, 7), (7, 6)
    env.unwrapped.agent_pos = np.array([0.5, 0.5] if continuous else [0, 0])
    stay = np.zeros(2, np.float32) if continuous else UP
    assert [env.step(stay)[3] for _ in range(3)] == [False, False, True]


@pytest.mark.parametrize("env_id", ["GridWorld-v0", "GridWorldContinuous-v0", "GridWorldFixed-v0"])
def test_env_checker_passes_without_warnings(env_id: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id, render_mode="rgb_array").unwrapped)
