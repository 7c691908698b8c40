"""Random policies: brownian statistics, bounds, stickiness, reproducibility."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from data.policies import BrownianPolicy, StickyRandomPolicy, WhiteNoisePolicy, make_policy, policy_name

CAR = gym.spaces.Box(np.array([-1, 0, 0], np.float32), np.array([1, 1, 1], np.float32))


def run(policy, steps: int, seed: int = 0) -> np.ndarray:
    policy.reset(np.random.default_rng(seed))
    return np.array([policy.act(None) for _ in range(steps)])


def test_brownian_increments_have_std_sqrt_dt() -> None:
    wide = gym.spaces.Box(-1e6, 1e6, (3,), np.float32)  # bounds never reached
    a = run(BrownianPolicy(wide, dt=1 / 50), 20000)
    inc = np.diff(a, axis=0)
    np.testing.assert_allclose(inc.std(axis=0), np.sqrt(1 / 50), rtol=0.03)
    np.testing.assert_allclose(inc.mean(axis=0), 0, atol=0.01)
    # increments are independent: no lag-1 correlation
    assert abs(np.corrcoef(inc[1:, 0], inc[:-1, 0])[0, 1]) < 0.05


def test_brownian_stays_in_bounds_and_is_smooth() -> None:
    a = run(BrownianPolicy(CAR), 5000)
    assert (a >= CAR.low).all() and (a <= CAR.high).all()
    assert np.abs(np.diff(a, axis=0)).max() < 1.0  # never jumps like white noise
    assert a[:, 0].min() < -0.9 and a[:, 0].max() > 0.9  # but still explores the range


def test_white_noise_covers_the_box_and_brownian_is_autocorrelated() -> None:
    w = run(WhiteNoisePolicy(CAR), 5000)
    b = run(BrownianPolicy(CAR), 5000)
    assert (w >= CAR.low).all() and (w <= CAR.high).all()
    assert abs(np.corrcoef(w[1:, 0], w[:-1, 0])[0, 1]) < 0.05
    assert np.corrcoef(b[1:, 0], b[:-1, 0])[0, 1] > 0.9


def test_sticky_repeats_with_its_probability() -> None:
    a = run(StickyRandomPolicy(gym.spaces.Discrete(3), repeat=0.8), 20000)
    assert set(a.tolist()) == {0, 1, 2}
    # a change happens when a redraw (p=0.2) picks another action (p=2/3)
    assert np.mean(a[1:] != a[:-1]) == pytest.approx(0.2 * 2 / 3, abs=0.01)


def test_same_rng_seed_same_actions() -> None:
    np.testing.assert_array_equal(run(BrownianPolicy(CAR), 100, 5), run(BrownianPolicy(CAR), 100, 5))
    assert not np.array_equal(run(BrownianPolicy(CAR), 100, 5), run(BrownianPolicy(CAR), 100, 6))


def test_make_policy_picks_by_space_and_rejects_misfits() -> None:
    assert isinstance(make_policy("auto", CAR), BrownianPolicy)
    assert isinstance(make_policy("auto", gym.spaces.Discrete(4)), StickyRandomPolicy)
    with pytest.raises(ValueError, match="brownian"):
        make_policy("brownian", gym.spaces.Discrete(4))


def test_runs_draws_each_episode_its_own_run_length_up_to_a_held_button() -> None:
    policy = make_policy("runs", gym.spaces.Discrete(3))
    changes = np.array([np.mean(np.diff(run(policy, 2000, seed)) != 0) for seed in range(200)])
    # log-uniform mean runs over 1..1000 steps: some episodes flicker like white noise
    # (changes 2/3 of steps), some hold one action for hundreds of steps
    assert changes.max() > 0.5 and (changes < 0.002).sum() >= 10
    assert 0.005 < np.median(changes) < 0.05  # the median episode redraws every ~30 steps (sqrt(1000))
    assert policy_name(policy) == "StickyRandomPolicy runs 1-1000"
    assert policy_name(make_policy("sticky", gym.spaces.Discrete(3))) == "StickyRandomPolicy"
