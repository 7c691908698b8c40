"""The env registry: frame format, action bounds, env-specific choices, clear errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import data.envs as envs
from data.envs import EnvError, make_env


def assert_frame(obs: np.ndarray) -> None:
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8


def find_wrapper(env: gym.Env, kind: type) -> gym.Wrapper | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, kind):
            return env
        env = env.env
    return None


def test_carracing_skips_zoom_and_crops_dashboard() -> None:
    env = make_env("CarRacing-v3")
    obs, info = env.reset(seed=1)
    assert_frame(obs)
    assert env.unwrapped.t >= 1.0  # the zoom animation (t < 1 s) is over
    # the reward of the skipped frames is reported, so returns match the raw env's
    raw_env = gym.make("CarRacing-v3")
    raw_env.reset(seed=1)
    skipped = sum(raw_env.step(np.zeros(3, np.float32))[1] for _ in range(envs.CARRACING_ZOOM_FRAMES))
    assert info["reset_return"] == pytest.approx(skipped)
    # the dashboard (black bar with gauges) is gone: the bottom rows look like the track
    raw = env.unwrapped.state
    assert raw[84:].mean() < 60 and obs[-4:].mean() > 60
    obs, *_ = env.step(np.array([5.0, -3.0, 9.0]))  # out of bounds: clipped, no error
    assert_frame(obs)
    np.testing.assert_array_equal(env.bound_action([5.0, -3.0, 9.0]), [1.0, 0.0, 1.0])
    env.close()


def test_takecover_frames_and_time_limit() -> None:
    env = make_env("VizdoomTakeCover-v1")
    obs, _ = env.reset(seed=0)
    assert_frame(obs)
    assert env.action_space == gym.spaces.Discrete(3)
    assert find_wrapper(env, gym.wrappers.TimeLimit)._max_episode_steps == 2100
    obs, r, *_ = env.step(0)
    assert r == 1.0  # +1 per step survived
    with pytest.raises(ValueError, match="outside"):
        env.step(3)
    env.close()


def test_gridworld_through_the_registry() -> None:
    env = make_env("GridWorld-v0")
    obs, _ = env.reset(seed=0)
    assert_frame(obs)
    assert env.action_space == gym.spaces.Discrete(4)
    cont = make_env("GridWorldContinuous-v0")
    assert isinstance(cont.action_space, gym.spaces.Box) and cont.action_space.shape == (2,)


def test_any_gymnasium_env_through_render() -> None:
    env = make_env("CartPole-v1")
    obs, _ = env.reset(seed=0)
    assert_frame(obs)
    obs2, *_ = env.step(1)
    assert_frame(obs2)
    assert obs.std() > 0  # a real picture, not a blank frame
    env.close()


def test_unknown_env_lists_known_ids() -> None:
    known = "CarRacing-v3, VizdoomTakeCover-v1, GridWorld-v0"
    with pytest.raises(EnvError, match=f"unknown env 'NoSuchEnv-v9': known ids are {known}"):
        make_env("NoSuchEnv-v9")


def test_env_without_pixels_is_refused() -> None:
    with pytest.raises(EnvError, match="cannot render pixels"):
        make_env("tests.envs_for_tests:NoPixels-v0")


def test_missing_vizdoom_says_how_to_install(monkeypatch) -> None:
    real = envs.importlib.util.find_spec
    monkeypatch.setattr(envs.importlib.util, "find_spec", lambda n, *a: None if n == "vizdoom" else real(n, *a))
    with pytest.raises(EnvError, match="pip install vizdoom"):
        make_env("VizdoomTakeCover-v1")


def test_missing_module_is_a_clear_error() -> None:
    with pytest.raises(EnvError, match="cannot import 'no_such_pkg'"):
        make_env("no_such_pkg:Env-v0")


def test_action_repeat_steps_the_env_n_times_and_sums_the_rewards() -> None:
    """CartPole pays +1 per step: one repeated step is N plain ones, frame included, and an
    episode's end mid-repeat ends the repeated step there."""
    plain, thrice = make_env("CartPole-v1"), make_env("CartPole-v1", 3)
    plain.reset(seed=0)
    thrice.reset(seed=0)
    for _ in range(200):
        a = 1  # pushing one way, the pole falls at the 8th step: in the third repeated step
        total = 0.0
        for _ in range(3):
            obs, r, done, trunc, _ = plain.step(a)
            total += r
            if done or trunc:
                break
        obs3, r3, done3, trunc3, _ = thrice.step(a)
        assert np.array_equal(obs, obs3) and r3 == total and (done3, trunc3) == (done, trunc)
        if done:
            break
    assert done and total == 2  # the pole fell inside a repeat
    assert envs.time_limit(thrice) == 167 and envs.time_limit(plain) == 500
    plain.close()
    thrice.close()
    with pytest.raises(EnvError, match="action repeat must be >= 1"):
        make_env("CartPole-v1", 0)
