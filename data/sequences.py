"""Fixed-length windows of latent sequences for M, never crossing an episode boundary.

Each epoch cuts every episode into windows of seq_len steps at a random phase, clipped to
the episode, so every step is seen every epoch and window boundaries move between epochs;
episodes shorter than a window are padded and masked. Batches are gathered with one
fancy-indexing call per array: no per-step loop.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from data.latents import Latents

Batch = dict[str, np.ndarray]


class SequenceBatches:
    def __init__(self, lat: Latents, episodes: list[int], seq_len: int, batch_size: int, seed: int) -> None:
        self.lat, self.episodes = lat, episodes
        self.L, self.batch_size, self.seed = seq_len, batch_size, seed
        self.starts = lat.offsets[episodes]
        self.lengths = lat.offsets[np.asarray(episodes) + 1] - self.starts

    def windows(self, epoch: int, shuffle: bool) -> np.ndarray:
        """(n, 2) array of (episode position, start step); depends only on (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        out = []
        for i, T in enumerate(self.lengths):
            phase = int(rng.integers(self.L)) if shuffle else 0
            last = max(int(T) - self.L, 0)
            starts = np.unique(np.clip(np.arange(-phase, T, self.L), 0, last))
            out.append(np.stack([np.full(len(starts), i), starts], 1))
        w = np.concatenate(out)
        return w[rng.permutation(len(w))] if shuffle else w

    def n_batches(self, epoch: int = 0, shuffle: bool = True) -> int:
        return -(-len(self.windows(epoch, shuffle)) // self.batch_size)

    def gather(self, w: np.ndarray) -> Batch:
        """Arrays for windows w: stats over L+1 steps (inputs and next-step targets), the
        rest over L steps, with `mask` (step inside the episode) and `next_mask`."""
        steps = w[:, 1:2] + np.arange(self.L + 1)  # (B, L+1) steps within the episode
        T = self.lengths[w[:, 0]][:, None]
        idx = self.starts[w[:, 0]][:, None] + np.minimum(steps, T - 1)
        inside = steps < T
        return {
            "stats": self.lat.stats[idx],
            "actions": self.lat.actions[idx[:, :-1]],
            "rewards": self.lat.rewards[idx[:, :-1]],
            "terminals": self.lat.terminals[idx[:, :-1]].astype(np.float32),
            "mask": inside[:, :-1].astype(np.float32),
            "next_mask": inside[:, 1:].astype(np.float32),
        }

    def epoch(self, epoch: int, start: int = 0, shuffle: bool = True) -> Iterator[Batch]:
        w = self.windows(epoch, shuffle)
        for b in range(start, -(-len(w) // self.batch_size)):
            yield self.gather(w[b * self.batch_size : (b + 1) * self.batch_size])
