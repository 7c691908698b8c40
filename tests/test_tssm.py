"""TSSM: relative attention against a hand loop, causality, the KV cache against the full
masked pass (beyond the context limit too), and states of different ages side by side."""

from __future__ import annotations

import math

import pytest
import torch

from models.tssm import TSSM, TSSMConfig, relative_attention

Z, A, C = 5, 3, 6


def tssm(**kw) -> TSSM:
    torch.manual_seed(0)
    return TSSM(TSSMConfig(z_size=Z, action_size=A, hidden_size=16, layers=2, heads=2, context=C, gaussians=3,
                           **kw)).eval()


def sequence(T: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, T, Z, generator=g), torch.rand(2, T, A, generator=g)


def shifted(a: torch.Tensor) -> torch.Tensor:
    """a_{t-1} per step, zeros first: the token layout."""
    return torch.cat([torch.zeros_like(a[:, :1]), a[:, :-1]], 1)


def stepped(m: TSSM, z: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """o_t for every t through observe, one token at a time through the cache."""
    state, outs = m.initial_state(len(z)), []
    for t in range(z.shape[1]):
        state = m.observe(state, z[:, t], a[:, t - 1] if t else None)
        outs.append(m.features(state)[:, Z:])
    return torch.stack(outs, 1)


def test_relative_attention_matches_a_hand_loop() -> None:
    """e_ij = q_i . (k_j + a^K_{i-j}) / sqrt(d), out_i = sum_j w_ij (v_j + a^V_{i-j}), j <= i
    within the context: Shaw et al.'s formula, scaled as a whole."""
    g = torch.Generator().manual_seed(0)
    T, d, ctx = 5, 4, 3
    q, k, v = (torch.randn(1, 1, T, d, generator=g) for _ in range(3))
    rel_k, rel_v = torch.randn(ctx, d, generator=g), torch.randn(ctx, d, generator=g)
    i = torch.arange(T)
    dist = i.view(-1, 1) - i.view(1, -1)
    dist, valid = dist.clamp(0, ctx - 1), (dist >= 0) & (dist < ctx)
    out = relative_attention(q, (k,), (v,), dist, valid, rel_k, rel_v)
    chunked = relative_attention(q, k.split([2, 1, 2], 2), v.split([2, 1, 2], 2), dist, valid, rel_k, rel_v)
    torch.testing.assert_close(chunked, out)  # the KV cache's layout: keys in pieces along Tk
    for qi in range(T):
        js = [j for j in range(T) if 0 <= qi - j < ctx]
        e = torch.stack([q[0, 0, qi] @ (k[0, 0, j] + rel_k[qi - j]) / math.sqrt(d) for j in js])
        w = e.softmax(0)
        want = sum(w[n] * (v[0, 0, j] + rel_v[qi - j]) for n, j in enumerate(js))
        torch.testing.assert_close(out[0, 0, qi], want)


def test_zero_relative_embeddings_give_plain_causal_attention() -> None:
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 8, generator=g) for _ in range(3))
    i = torch.arange(7)
    dist = i.view(-1, 1) - i.view(1, -1)
    zeros = torch.zeros(7, 8)
    out = relative_attention(q, (k,), (v,), dist.clamp(min=0), dist >= 0, zeros, zeros)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_a_later_token_never_changes_earlier_outputs() -> None:
    m = tssm()
    z, a = sequence(10)
    z2 = z.clone()
    z2[:, 6] += 3.0
    for run in (lambda z_: m(z_, shifted(a)), lambda z_: stepped(m, z_, a)):
        with torch.no_grad():
            before, after = run(z), run(z2)
        torch.testing.assert_close(before[:, :6], after[:, :6], rtol=0, atol=0)
        assert (before[:, 6] - after[:, 6]).abs().max() > 1e-3  # the changed token itself does count


def test_tokens_beyond_the_receptive_field_have_no_influence() -> None:
    """Each layer looks C - 1 tokens back, so with 2 layers token 0 reaches step 2 (C - 1)
    and no further, in the full pass and through the cache alike."""
    m = tssm()
    reach = 2 * (C - 1)
    z, a = sequence(3 * C)
    z2 = z.clone()
    z2[:, 0] += 3.0
    for run in (lambda z_: m(z_, shifted(a)), lambda z_: stepped(m, z_, a)):
        with torch.no_grad():
            before, after = run(z), run(z2)
        assert (before[:, reach] - after[:, reach]).abs().max() > 1e-4
        torch.testing.assert_close(before[:, reach + 1:], after[:, reach + 1:], rtol=0, atol=0)


def test_the_kv_cache_equals_the_full_masked_pass() -> None:
    """Step by step through the cache, for 2.5 x the context, gives the full pass's outputs,
    and imagine's reward and done are the heads of the same outputs."""
    m = tssm()
    z, a = sequence(C * 5 // 2)
    with torch.no_grad():
        full = m(z, shifted(a))
        torch.testing.assert_close(stepped(m, z, a), full, rtol=1e-5, atol=1e-5)
        state = m.initial_state(2)
        for t in range(z.shape[1] - 1):
            state = m.observe(state, z[:, t], a[:, t - 1] if t else None)
            _, _, r, p_done = m.imagine(state, a[:, t])
            p = m.predict(full[:, t], a[:, t])
            torch.testing.assert_close(r, p.reward, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(p_done, torch.sigmoid(p.done_logit), rtol=1e-5, atol=1e-5)


def test_imagination_appends_the_dreamed_latent() -> None:
    """After imagine, the state is what observing the dreamed z under the same action gives."""
    m = tssm()
    z, a = sequence(4)
    with torch.no_grad():
        state = m.observe(m.initial_state(2), z[:, 0], None)
        dreamed, z1, _, _ = m.imagine(state, a[:, 0])
        observed = m.observe(state, z1, a[:, 0])
    for key in dreamed:
        torch.testing.assert_close(dreamed[key], observed[key])


def test_states_of_different_ages_batch_together() -> None:
    """Rows of different ages (cache fill) in one batch step as they do alone."""
    m = tssm()
    z, a = sequence(C + 2)
    with torch.no_grad():
        young = m.observe(m.initial_state(2), z[:, 0], None)
        old = m.initial_state(2)
        for t in range(C + 1):
            old = m.observe(old, z[:, t], a[:, t - 1] if t else None)
        both = {k: torch.cat([young[k], old[k]]) for k in young}
        step = torch.cat([a[:, 0], a[:, C]])
        nxt = torch.cat([z[:, 1], z[:, C + 1]])
        together = m.features(m.observe(both, nxt, step))
        alone = torch.cat([m.features(m.observe(young, z[:, 1], a[:, 0])),
                           m.features(m.observe(old, z[:, C + 1], a[:, C]))])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_width_must_split_into_heads() -> None:
    with pytest.raises(ValueError, match="heads"):
        TSSM(TSSMConfig(hidden_size=10, heads=4))
