"""Where a world model's dream gets its randomness.

`TorchNoise` draws from torch's global generator. `SeededNoise` gives every batch row its
own stream that depends only on that row's seed and on how many draws came before, so a
batch of dreams and the same dreams run one at a time see identical numbers: that is what
lets CMA-ES evaluate the whole population as one batch without changing any result.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch

_MASK = 0xFFFFFFFF
_MULT = 0x45D9F3B  # a 32-bit integer-hash multiplier; small enough that products fit int64


class Noise(Protocol):
    def uniform(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Uniform numbers in (0, 1), float32."""

    def normal(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Standard normal numbers, float32."""


class TorchNoise:
    def uniform(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.rand(shape, device=device).clamp_(1e-7, 1 - 1e-7)

    def normal(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        return torch.randn(shape, device=device)


def _mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash on int64 tensors (values stay below 2^58, so nothing overflows)."""
    x = (((x >> 16) ^ x) * _MULT) & _MASK
    x = (((x >> 16) ^ x) * _MULT) & _MASK
    return (x >> 16) ^ x


class SeededNoise:
    """Counter-based noise: row b's k-th draw is a hash of (seeds[b], k, element index)."""

    def __init__(self, seeds: torch.Tensor) -> None:
        self.keys = _mix(seeds.long().reshape(-1) & _MASK)
        self.calls = 0

    def uniform(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        if shape[0] != len(self.keys):
            raise ValueError(f"SeededNoise has {len(self.keys)} rows, asked for {shape[0]}")
        self.calls += 1
        n = math.prod(shape[1:])
        keys = self.keys.to(device)
        key = _mix(keys ^ _mix(torch.tensor(self.calls, device=device)))
        h = _mix((key.unsqueeze(1) + torch.arange(n, device=device)) & _MASK)
        return ((h.double() + 0.5) / 2.0**32).float().clamp_(1e-7, 1 - 1e-7).reshape(shape)

    def take(self, rows: torch.Tensor) -> SeededNoise:
        """The streams of `rows` alone, each going on exactly where it was."""
        part = SeededNoise(torch.zeros(0))
        part.keys, part.calls = self.keys[rows.to(self.keys.device)], self.calls
        return part

    def normal(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """Box-Muller on two uniform draws."""
        u1, u2 = self.uniform(shape, device), self.uniform(shape, device)
        return torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * math.pi * u2)


def categorical(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Sample an index along the last axis by inverting the CDF at u (one uniform per draw).
    The CDF stays unnormalised and u is scaled by its total instead: torch's CPU softmax is
    5-10x slower over a last axis as short as the MDN's 5 mixture weights per latent dimension,
    which a dream draws at every step."""
    w = (logits - logits.amax(-1, keepdim=True)).exp().cumsum(-1)
    return (w < u.unsqueeze(-1) * w[..., -1:]).sum(-1).clamp_(max=logits.shape[-1] - 1)
