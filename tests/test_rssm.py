"""RSSM on its own: the KL terms against hand computations, balancing and free nats, and
the world-model interface."""

from __future__ import annotations

import math

import pytest
import torch

from models.noise import SeededNoise
from models.rssm import RSSM, RSSMConfig, balanced_kl, categorical_kl, gaussian_kl
from utils.dreams import MODE_TAU


def test_gaussian_kl_matches_the_closed_form_by_hand() -> None:
    # KL(N(1, 0.5^2) || N(0, 1)) = log(1 / 0.5) + (0.25 + 1) / 2 - 1/2; a second dimension with q = p adds 0
    q = torch.tensor([[1.0, 3.0], [0.5, 2.0]])
    p = torch.tensor([[0.0, 3.0], [1.0, 2.0]])
    assert gaussian_kl(q, p).item() == pytest.approx(math.log(2) + 1.25 / 2 - 0.5, abs=1e-6)


def test_categorical_kl_matches_the_sum_by_hand() -> None:
    # KL([.5, .5] || [.25, .75]) = .5 log(.5 / .25) + .5 log(.5 / .75); a second group with q = p adds 0
    q = torch.tensor([[0.5, 0.5], [0.2, 0.8]]).log()
    p = torch.tensor([[0.25, 0.75], [0.2, 0.8]]).log() + 3.0  # logits: a shift changes nothing
    assert categorical_kl(q, p).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75), abs=1e-6)


def _grads(balance: float, free_nats: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    post = torch.tensor([[[1.0], [0.5]], [[-2.0], [0.8]]], requires_grad=True)  # 2 steps of 1-D Gaussians
    prior = torch.tensor([[[0.0], [1.0]], [[0.5], [1.5]]], requires_grad=True)
    loss, kl = balanced_kl(post, prior, gaussian_kl, balance, free_nats, torch.ones(2))
    g_post, g_prior = torch.autograd.grad(loss, (post, prior))
    return loss, kl, g_post, g_prior


def test_kl_balancing_splits_the_gradient_between_prior_and_posterior() -> None:
    """With alpha = 0.8 the prior gets 0.8 of the plain KL's gradient and the posterior 0.2;
    the value is the plain KL (the mean of the hand-computed per-step KLs)."""
    by_hand = [math.log(1 / 0.5) + (0.25 + 1) / 2 - 0.5, math.log(1.5 / 0.8) + (0.64 + 6.25) / (2 * 2.25) - 0.5]
    loss, kl, g_post, g_prior = _grads(0.8, 0.0)
    _, _, plain_post, plain_prior = _grads(0.5, 0.0)  # alpha 0.5: half the plain gradient to each side
    assert kl.item() == pytest.approx(sum(by_hand) / 2, abs=1e-6)
    assert loss.item() == pytest.approx(kl.item(), abs=1e-6)
    assert torch.allclose(g_prior, 0.8 * 2 * plain_prior) and torch.allclose(g_post, 0.2 * 2 * plain_post)
    assert g_prior.abs().sum() > 0 and g_post.abs().sum() > 0


def test_free_nats_floor_the_loss_and_stop_its_gradient() -> None:
    kl = _grads(0.8, 0.0)[1].item()
    loss, _, g_post, g_prior = _grads(0.8, kl + 1.0)  # every KL term is below the free nats
    assert loss.item() == pytest.approx(kl + 1.0)
    assert g_post.abs().sum() == 0 and g_prior.abs().sum() == 0
    loss, *_ = _grads(0.8, kl - 0.5)  # above the floor the KL itself counts
    assert loss.item() == pytest.approx(kl, abs=1e-6)


@pytest.mark.parametrize("classes", [0, 4])
def test_interface_shapes_temperature_and_seeded_noise(classes: int) -> None:
    torch.manual_seed(0)
    m = RSSM(RSSMConfig(z_size=5, action_size=2, deter=8, stoch=3, classes=classes, hidden_size=8)).eval()
    state = m.observe(m.initial_state(4), torch.randn(4, 5), None)
    assert m.features(state).shape == (4, m.feature_size) == (4, 8 + 3 * max(classes, 1))
    a = torch.randn(4, 2)
    noise = lambda: SeededNoise(torch.arange(4))  # noqa: E731
    _, z1, r1, d1 = m.imagine(state, a, 1.0, noise())
    _, z2, _, _ = m.imagine(state, a, 1.0, noise())
    assert torch.equal(z1, z2) and z1.shape == (4, 5) and r1.shape == d1.shape == (4,)
    assert ((d1 >= 0) & (d1 <= 1)).all()
    # at a tiny temperature the dream is the prior's mode, whatever the noise
    modes = [m.imagine(state, a, MODE_TAU, SeededNoise(torch.arange(4) + k))[1] for k in range(3)]
    assert all(torch.allclose(modes[0], x, atol=1e-3) for x in modes)
    assert not torch.allclose(z1, modes[0], atol=1e-3)
