"""M as a transformer state-space model (TSSM): causal self-attention over past steps.

Token layout: token t is (z_t, a_{t-1}), the latent seen at step t and the action that led
to it (zeros at an episode's start). The transformer's output o_t then sums up everything
known before C chooses a_t, so features(state) = [z_t, o_t] exist before the action, as
[z_t, h_t] do for the MDN-RNN. The heads read [o_t, a_t] and give the mixture over z_{t+1}
(shared with the MDN-RNN), r_t and done_t: one transformer pass per step, in training and
in the dream alike.

Positions are relative (Shaw et al. 2018): each layer learns a key and a value embedding
per distance i - j in [0, context), shared by its heads, and the key term enters the
logits before the 1 / sqrt(d_head) scaling, like the content term. A token sees at most
`context` tokens (itself included): a band mask in the full pass, a sliding key/value
cache in the step-by-step pass. Both see exactly the same tokens at the same distances,
so they agree beyond the context limit too. As in Transformer-XL, stacking L layers lets
o_t depend on tokens up to L * (context - 1) steps back.

The cache is part of the state: per layer, keys and values of a fixed shape (batch, heads,
context, d_head), already split into heads so attention reads them without a copy, and a
per-row count of tokens, so states of different ages concatenate and rows never interact.
Each step builds the new cache with one copy per tensor: the state stays functional, so
the actor-critic can backpropagate through it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from models import mixture
from models.mixture import Count, MixtureHead, Prediction, local_count
from models.noise import Noise, TorchNoise
from models.world_model import State


@dataclass(frozen=True)
class TSSMConfig:
    z_size: int = 32
    action_size: int = 3
    hidden_size: int = 256  # the transformer's width (d_model)
    layers: int = 2
    heads: int = 4
    context: int = 32  # most tokens one token attends to, itself included
    dropout: float = 0.1  # on each residual branch: small datasets overfit without it
    gaussians: int = 5
    head_units: int = 0  # reward and done: 0 linear (Ha), N an MLP of N units (models/mixture.py)
    reward_weight: float = 1.0
    done_weight: float = 1.0
    done_pos_weight: float = 1.0  # weight of done = 1 steps in the done loss (Ha's Doom: 10)

    def to_dict(self) -> dict:
        return asdict(self)


def relative_attention(
    q: torch.Tensor, ks: tuple[torch.Tensor, ...], vs: tuple[torch.Tensor, ...], dist: torch.Tensor,
    valid: torch.Tensor, rel_k: torch.Tensor, rel_v: torch.Tensor,
) -> torch.Tensor:
    """Shaw et al.'s attention: q (B, H, Tq, d); keys and values (B, H, Tk, d) given as
    chunks along Tk (the cache, then the new token), never concatenated, so the dream
    copies no cache here; dist (Tq, Tk) the distance i - j clamped into [0, context);
    valid broadcasts to (B, H, Tq, Tk); rel_k, rel_v (context, d).
    e_ij = q_i . (k_j + rel_k[i-j]) / sqrt(d); out_i = sum_j softmax(e)_ij (v_j + rel_v[i-j])."""
    ak, av = rel_k[dist], rel_v[dist]  # (Tq, Tk, d)
    content = torch.cat([q @ k.transpose(-1, -2) for k in ks], -1)
    logits = (content + torch.einsum("bhqd,qkd->bhqk", q, ak)) / math.sqrt(q.shape[-1])
    w = logits.masked_fill(~valid, float("-inf")).softmax(-1)
    out, j = torch.einsum("bhqk,qkd->bhqd", w, av), 0
    for v in vs:
        out = out + w[..., j : j + v.shape[-2]] @ v
        j += v.shape[-2]
    return out


class Block(nn.Module):
    """A pre-norm transformer layer with relative self-attention."""

    def __init__(self, cfg: TSSMConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.heads, self.d_head = cfg.heads, d // cfg.heads
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.rel_k = nn.Parameter(torch.randn(cfg.context, self.d_head) * 0.02)
        self.rel_v = nn.Parameter(torch.randn(cfg.context, self.d_head) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(cfg.dropout)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, H, T, d_head)."""
        return x.unflatten(-1, (self.heads, self.d_head)).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None, dist: torch.Tensor, valid: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d) are the new tokens; kv the cached keys and values before them, split
        into heads (B, H, Tc, d_head), or None. Returns the tokens' outputs and their own
        keys and values (B, H, T, d_head)."""
        q, k, v = (self.split(y) for y in self.qkv(self.norm1(x)).chunk(3, -1))
        ks, vs = ((kv[0], k), (kv[1], v)) if kv is not None else ((k,), (v,))
        out = relative_attention(q, ks, vs, dist, valid, self.rel_k, self.rel_v)
        x = x + self.drop(self.proj(out.transpose(1, 2).flatten(-2)))
        return x + self.drop(self.mlp(self.norm2(x))), k, v


class TSSM(nn.Module):
    def __init__(self, cfg: TSSMConfig) -> None:
        super().__init__()
        if cfg.hidden_size % cfg.heads:
            raise ValueError(f"the TSSM's width {cfg.hidden_size} must divide into {cfg.heads} heads")
        self.cfg = cfg
        self.z_size, self.action_size = cfg.z_size, cfg.action_size
        self.feature_size = cfg.z_size + cfg.hidden_size
        self.embed = nn.Linear(cfg.z_size + cfg.action_size, cfg.hidden_size)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.hidden_size)
        d = cfg.hidden_size
        self.head = nn.Sequential(nn.Linear(d + cfg.action_size, d), nn.GELU())
        self.mdn = MixtureHead(d, cfg.z_size, cfg.gaussians, cfg.head_units)

    def predict(self, o: torch.Tensor, a: torch.Tensor) -> Prediction:
        """z_{t+1}'s mixture, r_t and done_t from o_t and the action a_t."""
        return self.mdn(self.head(torch.cat([o, a], -1)))

    def forward(self, z: torch.Tensor, a_prev: torch.Tensor) -> torch.Tensor:
        """The full masked pass over tokens (z_t, a_{t-1}), each (B, T, .): o (B, T, d)."""
        T, C = z.shape[1], self.cfg.context
        i = torch.arange(T, device=z.device)
        dist = i.view(-1, 1) - i.view(1, -1)
        valid = (dist >= 0) & (dist < C)
        dist = dist.clamp(0, C - 1)
        x = self.embed(torch.cat([z, a_prev], -1))
        for block in self.blocks:
            x, _, _ = block(x, None, dist, valid)
        return self.norm(x)

    def loss(
        self, z: torch.Tensor, a: torch.Tensor, reward: torch.Tensor, done: torch.Tensor,
        mask: torch.Tensor, next_mask: torch.Tensor, count: Count = local_count,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """As for the MDN-RNN: z (B, T+1, Z); a, reward, done, mask, next_mask (B, T). A
        sequence's first token gets a zero previous action, as at an episode's start."""
        a_prev = torch.cat([torch.zeros_like(a[:, :1]), a[:, :-1]], 1)
        p = self.predict(self(z[:, :-1], a_prev), a)
        return mixture.prediction_loss(p, z[:, 1:], reward, done, mask, next_mask,
                                       self.cfg.reward_weight, self.cfg.done_weight, self.cfg.done_pos_weight, count)

    # --- the world-model interface -------------------------------------------------------
    def initial_state(self, batch: int) -> State:
        p = next(self.parameters())
        cfg = self.cfg
        cache = p.new_zeros(batch, cfg.heads, cfg.context, cfg.hidden_size // cfg.heads)
        layers = {f"{kv}{layer}": cache for layer in range(cfg.layers) for kv in "kv"}
        return {"z": p.new_zeros(batch, cfg.z_size), "o": p.new_zeros(batch, cfg.hidden_size),
                **layers, "n": torch.zeros(batch, dtype=torch.long, device=p.device)}

    def _append(self, state: State, z: torch.Tensor, a_prev: torch.Tensor) -> State:
        """Run one token (z_t, a_{t-1}) through the layers against the cache, which keeps the
        newest `context` tokens: slot c holds the token context - 1 - c steps back."""
        C = self.cfg.context
        n = (state["n"] + 1).clamp(max=C)
        slots = torch.arange(C, device=z.device)
        dist = (C - 1 - slots).view(1, C)
        valid = (slots.view(1, C) >= C - n.view(-1, 1)).view(-1, 1, 1, C)  # (B, 1, 1, C)
        x = self.embed(torch.cat([z, a_prev], -1)).unsqueeze(1)
        caches = {}
        for layer, block in enumerate(self.blocks):
            kv = (state[f"k{layer}"][:, :, 1:], state[f"v{layer}"][:, :, 1:])  # the oldest slot drops out
            x, k, v = block(x, kv, dist, valid)
            caches[f"k{layer}"], caches[f"v{layer}"] = torch.cat([kv[0], k], 2), torch.cat([kv[1], v], 2)
        return {"z": z, "o": self.norm(x[:, 0]), **caches, "n": n}

    def observe(self, state: State, z: torch.Tensor, a_prev: torch.Tensor | None) -> State:
        if a_prev is None:
            a_prev = z.new_zeros(len(z), self.action_size)
        return self._append(state, z, a_prev)

    def imagine(
        self, state: State, a: torch.Tensor, temperature: float = 1.0, noise: Noise | None = None
    ) -> tuple[State, torch.Tensor, torch.Tensor, torch.Tensor]:
        p = self.predict(state["o"], a)
        z = mixture.sample(p, temperature, noise or TorchNoise())
        return self._append(state, z, a), z, p.reward, torch.sigmoid(p.done_logit)

    def randomize(self, state: State, noise: Noise | None = None) -> State:
        """The state as it is: its dropout is for training only: one M for every dream."""
        return state

    def features(self, state: State) -> torch.Tensor:
        return torch.cat([state["z"], state["o"]], -1)
