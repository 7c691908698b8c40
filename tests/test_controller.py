"""C on its own: bounded actions, the documented mappings, and the seeded dream noise."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from models.controller import ControllerConfig, LinearController
from models.noise import SeededNoise, categorical


def test_continuous_actions_stay_inside_an_asymmetric_box() -> None:
    space = gym.spaces.Box(np.array([-1, 0, 0.2], np.float32), np.array([1, 1, 0.5], np.float32))
    c = LinearController(ControllerConfig.for_space(10, space))
    params = 100 * torch.randn(256, c.cfg.n_params)  # huge weights saturate tanh at both ends
    a = c.act(100 * torch.randn(256, 10), params)
    assert a.shape == (256, 3)
    low, high = torch.tensor(space.low), torch.tensor(space.high)
    assert ((a >= low) & (a <= high)).all()
    assert (a[:, 2] < 0.21).any() and (a[:, 2] > 0.49).any()  # the whole range is reachable
    assert all(space.contains(row.numpy().astype(np.float32)) for row in a)


def test_zero_parameters_give_the_middle_of_the_box() -> None:
    space = gym.spaces.Box(np.array([-1, 0], np.float32), np.array([1, 1], np.float32))
    c = LinearController(ControllerConfig.for_space(4, space))
    assert torch.allclose(c.act(torch.randn(3, 4), torch.zeros(c.cfg.n_params)), torch.tensor([0.0, 0.5]))


def test_discrete_actions_are_the_argmax_and_one_hot_for_m() -> None:
    c = LinearController(ControllerConfig.for_space(2, gym.spaces.Discrete(3)))
    W = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    params = torch.cat([W.flatten(), torch.zeros(3)])
    a = c.act(torch.tensor([[2.0, 1.0], [0.0, 3.0], [-2.0, 0.0]]), params)
    assert a.tolist() == [0, 1, 2]
    assert c.m_input(a).tolist() == torch.eye(3).tolist()
    big = c.act(1e3 * torch.randn(500, 2), 1e3 * torch.randn(500, c.cfg.n_params))
    assert big.min() >= 0 and big.max() <= 2


def test_unbounded_or_image_action_spaces_are_refused() -> None:
    with pytest.raises(ValueError, match="bounded 1-D Box"):
        ControllerConfig.for_space(4, gym.spaces.Box(-np.inf, np.inf, (2,), np.float32))
    with pytest.raises(ValueError, match="bounded 1-D Box"):
        ControllerConfig.for_space(4, gym.spaces.MultiBinary(3))


def test_seeded_noise_of_a_row_does_not_depend_on_the_batch() -> None:
    seeds = torch.tensor([3, 99, 12345])
    batch = SeededNoise(seeds)
    draws = [batch.uniform((3, 7), torch.device("cpu")), batch.normal((3, 2, 5), torch.device("cpu"))]
    for i, s in enumerate(seeds):
        single = SeededNoise(s[None])
        assert torch.equal(single.uniform((1, 7), torch.device("cpu"))[0], draws[0][i])
        assert torch.equal(single.normal((1, 2, 5), torch.device("cpu"))[0], draws[1][i])
    assert not torch.equal(draws[0][0], draws[0][1])  # another seed, other numbers


def test_seeded_noise_has_the_right_distribution_and_no_repeats() -> None:
    noise = SeededNoise(torch.arange(200))
    u = noise.uniform((200, 500), torch.device("cpu"))
    n = noise.normal((200, 500), torch.device("cpu"))
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.002
    assert abs(n.mean()) < 0.02 and abs(n.std() - 1) < 0.02
    assert abs(np.corrcoef(u[:, :-1].flatten(), u[:, 1:].flatten())[0, 1]) < 0.02  # neighbours independent
    assert len(torch.unique(u)) > 0.99 * u.numel()


def test_inverse_cdf_sampling_matches_the_probabilities() -> None:
    logits = torch.log(torch.tensor([0.1, 0.6, 0.3])).expand(40000, 3)
    k = categorical(logits, torch.rand(40000))
    freq = torch.bincount(k, minlength=3).float() / 40000
    assert torch.allclose(freq, torch.tensor([0.1, 0.6, 0.3]), atol=0.01)
