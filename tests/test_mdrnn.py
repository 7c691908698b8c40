"""MDN-RNN (M of World Models): the mixture likelihood, stepping vs sequences, sampling."""

from __future__ import annotations

import math

import numpy as np
import torch

from data.latents import Latents
from data.sequences import SequenceBatches
from models.mdrnn import MDRNN, MDRNNConfig
from models.mixture import MixtureHead, gmm_nll

TRUE = {"pi": torch.tensor([0.3, 0.7]), "mu": torch.tensor([-1.0, 2.0]), "sigma": torch.tensor([0.3, 0.5])}


def sample_true(n: int, z: int, gen: torch.Generator) -> torch.Tensor:
    k = torch.multinomial(TRUE["pi"], n * z, replacement=True, generator=gen).view(n, z)
    return TRUE["mu"][k] + TRUE["sigma"][k] * torch.randn(n, z, generator=gen)


def true_nll(x: torch.Tensor) -> torch.Tensor:
    shape = (*x.shape, 2)
    return gmm_nll(x, TRUE["mu"].expand(shape), TRUE["sigma"].log().expand(shape), TRUE["pi"].log().expand(shape))


def test_mixture_nll_falls_to_the_true_mixture_nll() -> None:
    """Next latents drawn from a known 2-component mixture, independent of the past: the
    model's NLL must approach that mixture's own NLL (its entropy), from far above."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    B, T, Z = 64, 8, 4
    m = MDRNN(MDRNNConfig(z_size=Z, action_size=2, hidden_size=32, gaussians=2))
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    ones = torch.ones(B, T)

    def batch() -> tuple[torch.Tensor, torch.Tensor]:
        return sample_true(B * (T + 1), Z, gen).view(B, T + 1, Z), torch.rand(B, T, 2, generator=gen)

    losses = []
    for _ in range(600):
        z, a = batch()
        loss, metrics = m.loss(z, a, ones * 0, ones * 0, ones, ones)
        losses.append(float(metrics["gmm"]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    z, a = sample_true(4096 * 2, Z, gen).view(4096, 2, Z), torch.rand(4096, 1, 2, generator=gen)
    with torch.no_grad():
        model = float(m.loss(z, a, torch.zeros(4096, 1), torch.zeros(4096, 1), torch.ones(4096, 1),
                             torch.ones(4096, 1))[1]["gmm"])
    reference = float(true_nll(z[:, 1]).mean())
    assert losses[0] > reference + 1.0
    assert abs(model - reference) < 0.03, (model, reference)


def test_step_by_step_equals_the_sequence_model() -> None:
    torch.manual_seed(0)
    m = MDRNN(MDRNNConfig(z_size=5, action_size=3, hidden_size=16, gaussians=3)).eval()
    z, a = torch.randn(2, 7, 5), torch.rand(2, 7, 3)
    with torch.no_grad():
        *_, r, d = m(z, a)
        h_seq, _ = m.rnn(torch.cat([z, a], -1))
        state = m.observe(m.initial_state(2), z[:, 0], None)
        for t in range(7):
            dream, _, r_t, d_t = m.imagine(state, a[:, t])
            torch.testing.assert_close(dream["h"], h_seq[:, t])
            torch.testing.assert_close(r_t, r[:, t])
            torch.testing.assert_close(d_t, torch.sigmoid(d[:, t]))
            if t + 1 < 7:
                state = m.observe(state, z[:, t + 1], a[:, t])
                torch.testing.assert_close(m.features(state), torch.cat([z[:, t + 1], h_seq[:, t]], -1))


def test_temperature_scales_the_spread_of_dreams() -> None:
    torch.manual_seed(0)
    m = MDRNN(MDRNNConfig(z_size=8, action_size=2, hidden_size=16)).eval()
    state = m.observe(m.initial_state(1), torch.zeros(1, 8), None)
    state = {k: v.expand(4000, -1) for k, v in state.items()}
    a = torch.zeros(4000, 2)
    with torch.no_grad():
        spread = {tau: m.imagine(state, a, tau)[1].std(0).mean().item() for tau in (0.05, 1.0, 2.0)}
    assert spread[0.05] < 0.5 * spread[1.0] < spread[2.0]


def fake_latents(lengths: list[int]) -> Latents:
    """Episode e's step t has stats [e, t]: every gathered value tells where it came from."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    stats = np.concatenate([np.stack([np.full(T, e), np.arange(T)], 1) for e, T in enumerate(lengths)])
    terminals = np.zeros(len(stats), bool)
    terminals[offsets[1:] - 1] = True
    return Latents(stats.astype(np.float32), np.zeros((len(stats), 1), np.float32), np.zeros(len(stats), np.float32),
                   terminals, np.zeros(len(stats), bool), offsets, [str(e) for e in range(len(lengths))])


def test_windows_never_cross_episodes_and_cover_them() -> None:
    lat = fake_latents([5, 23, 8])
    seqs = SequenceBatches(lat, [0, 1, 2], seq_len=6, batch_size=4, seed=0)
    for epoch in range(3):
        seen = set()
        for b in seqs.epoch(epoch):
            ep, t = b["stats"][..., 0], b["stats"][..., 1]
            assert (ep == ep[:, :1]).all()  # one episode per window, padding included
            inside = b["mask"].astype(bool)
            steps = t[:, :-1]
            assert (np.diff(steps, axis=1)[inside[:, 1:]] == 1).all()  # consecutive while inside
            T = np.array([5, 23, 8])[ep[:, 0].astype(int)]
            start = t[:, 0]
            expected = np.arange(6)[None] < (T - start)[:, None]  # mask ends with the episode
            np.testing.assert_array_equal(inside, expected)
            np.testing.assert_array_equal(b["next_mask"].astype(bool), np.arange(1, 7)[None] < (T - start)[:, None])
            assert (b["terminals"][inside] == (steps == T[:, None] - 1)[inside]).all()
            seen |= {(int(e), int(s)) for e, s in zip(ep[:, :-1][inside], steps[inside], strict=True)}
        assert seen == {(e, s) for e, T in enumerate([5, 23, 8]) for s in range(T)}  # every step, every epoch
    assert math.isclose(len(list(seqs.epoch(0, shuffle=False))), seqs.n_batches(0, shuffle=False))


def test_reward_and_done_heads_linear_by_default_or_their_own_mlp() -> None:
    """head_units 0 keeps Ha's single linear layer (so older checkpoints load); N > 0 moves
    reward and done to their own MLP, which leaves the mixture untouched."""
    ha = MixtureHead(16, 4, 3)
    assert set(ha.state_dict()) == {"weight", "bias"} and ha.out_features == 3 * 4 * 3 + 2
    mlp = MixtureHead(16, 4, 3, head_units=8)
    assert mlp.out_features == 3 * 4 * 3
    x = torch.randn(5, 16)
    before = mlp(x)
    with torch.no_grad():
        mlp.scalars[-1].bias += 1.0
    after = mlp(x)
    torch.testing.assert_close(after.mu, before.mu)
    torch.testing.assert_close(after.reward, before.reward + 1.0)
    torch.testing.assert_close(after.done_logit, before.done_logit + 1.0)


def test_done_pos_weight_lifts_p_done_over_the_dream_threshold_for_rare_ends() -> None:
    """Ends that happen on 10% of steps: the unweighted loss learns p = 0.1, so the dream
    (p > 0.5) never ends there; weighting them 10x (Ha's Doom M) learns 10p / (10p + 1 - p)
    = 0.53, over the threshold. Weight 1 is the plain masked BCE."""
    from models.mixture import done_bce

    done = (torch.arange(1000) % 10 == 0).float()
    mask = torch.ones_like(done)
    n = mask.sum()
    probe = torch.randn(1000)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(probe, done)
    assert torch.allclose(done_bce(probe, done, mask, n, 1.0), plain)
    for w, expected in ((1.0, 0.1), (10.0, 1 / 1.9)):
        logit = torch.zeros((), requires_grad=True)
        opt = torch.optim.Adam([logit], lr=0.05)
        for _ in range(600):
            loss = done_bce(logit.expand(1000), done, mask, n, w)
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert abs(torch.sigmoid(logit).item() - expected) < 0.01
    masked = mask.clone()
    masked[done > 0] = 0  # masked steps count for nothing, however weighted
    assert done_bce(probe, done, masked, n, 10.0) == done_bce(probe, done, masked, n, 1.0)


def test_count_passed_in_makes_the_ranks_mean_loss_the_global_batch_loss() -> None:
    """What traindynamics.py gets by passing utils.distributed.count_per_rank as `count`: two
    ranks' shards of a batch whose valid steps fall unevenly, each divided by the ranks' mean
    count, average to the loss of the whole batch on one process; each rank's own count
    (the default, local_count) would not."""
    torch.manual_seed(0)
    m = MDRNN(MDRNNConfig(z_size=3, action_size=2, hidden_size=8, gaussians=2))
    B, T = 4, 5
    z, a, reward = torch.randn(B, T + 1, 3), torch.randn(B, T, 2), torch.randn(B, T)
    done = torch.zeros(B, T)
    mask = torch.ones(B, T)
    mask[0, 1:] = 0  # rank 0's rows (0 and 2) hold far fewer valid steps than rank 1's
    next_mask = mask.clone()
    next_mask[2, 3:] = 0
    whole = m.loss(z, a, reward, done, mask, next_mask)[1]
    shards = [slice(r, None, 2) for r in range(2)]  # World(r, 2).split's rows
    masks = {r: (mask[s], next_mask[s]) for r, s in enumerate(shards)}
    ranks_mean = {id(masks[r][k]): (masks[0][k].sum() + masks[1][k].sum()) / 2 for r in range(2) for k in range(2)}
    count = lambda x: ranks_mean[id(x)]  # noqa: E731  (M passes the masks through, uncopied)
    for kind in ("loss", "gmm", "reward"):
        per_rank = [m.loss(z[s], a[s], reward[s], done[s], *masks[r], count=count)[1][kind] for r, s in
                    enumerate(shards)]
        assert torch.allclose(sum(per_rank) / 2, whole[kind], rtol=1e-5)
    local = [m.loss(z[s], a[s], reward[s], done[s], *masks[r])[1]["reward"] for r, s in enumerate(shards)]
    assert not torch.allclose(sum(local) / 2, whole["reward"], rtol=1e-2)


def test_dropout_masks_hold_for_a_whole_training_sequence() -> None:
    """Training drops the same z and h units at every step of a sequence. z: changing z_0 at
    every step changes a row's predictions at all steps or at none. h: with the reward read
    off h's unit 0 alone, a row's rewards are 0 at all steps or at none. (Masks drawn per
    step would give rows with some steps of each.)"""
    m = MDRNN(MDRNNConfig(z_size=4, action_size=2, hidden_size=16, dropout=0.5)).train()
    z, a = torch.randn(64, 10, 4), torch.rand(64, 10, 2)
    moved = z.clone()
    moved[..., 0] += 3.0
    with torch.no_grad():
        torch.manual_seed(1)
        before = m(z, a).done_logit
        torch.manual_seed(1)
        after = m(moved, a).done_logit
        changed = (before - after).abs() > 1e-6  # (B, T)
        reward_row = m.mdn.weight[-2]
        reward_row.zero_()
        reward_row[0] = 1.0
        m.mdn.bias[-2] = 0.0
        zero = m(z, a).reward.abs() < 1e-9
    for hit, what in ((changed, "z"), (~zero, "h")):
        assert bool((hit.all(1) | ~hit.any(1)).all()), what
        assert 10 < int(hit.all(1).sum()) < 54, (what, int(hit.all(1).sum()))  # about half the rows keep the unit
    m.eval()
    with torch.no_grad():  # evaluation never drops: the same prediction every call
        torch.testing.assert_close(m(z, a).reward, m(z, a).reward)


def test_each_dream_keeps_its_own_dropout_masks_and_the_real_filter_drops_nothing() -> None:
    """randomize draws one pair of masks per dream from its own noise and every imagined
    step keeps them; another seed dreams another M, while without dropout every seed sees
    one M. observe (the real env's filter) ignores the masks."""
    from models.noise import SeededNoise
    from utils.dreams import MODE_TAU

    torch.manual_seed(0)

    def dream(m: MDRNN, seed: int) -> torch.Tensor:
        noise = SeededNoise(torch.tensor([seed]))
        state = m.randomize(m.observe(m.initial_state(1), torch.ones(1, 4), None), noise)
        drawn, zs = {k: v for k, v in state.items() if k.startswith("keep_")}, []
        for _ in range(6):
            state, z, _, _ = m.imagine(state, torch.ones(1, 2), MODE_TAU, noise)
            zs.append(z)
        assert set(drawn) == ({"keep_z", "keep_h"} if m.cfg.dropout else set())
        assert all(torch.equal(state[k], v) for k, v in drawn.items())
        return torch.cat(zs)

    plain = MDRNN(MDRNNConfig(z_size=4, action_size=2, hidden_size=16)).eval()
    dropped = MDRNN(MDRNNConfig(z_size=4, action_size=2, hidden_size=16, dropout=0.3)).eval()
    dropped.load_state_dict(plain.state_dict())
    with torch.no_grad():
        assert (dream(dropped, 3) - dream(dropped, 4)).abs().max() > 0.05  # MODE_TAU's own noise: < 1e-4
        torch.testing.assert_close(dream(plain, 3), dream(plain, 4), atol=1e-3, rtol=0)
        z, a = torch.randn(1, 4), torch.ones(1, 2)
        masked = dropped.randomize(dropped.observe(dropped.initial_state(1), z, None), SeededNoise(torch.tensor([3])))
        assert bool((masked["keep_z"] == 0).any())  # a z unit is dropped: observe must not drop it
        torch.testing.assert_close(dropped.observe(masked, z, a)["h"],
                                   plain.observe(plain.observe(plain.initial_state(1), z, None), z, a)["h"])
