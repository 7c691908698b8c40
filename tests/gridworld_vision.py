"""Reading GridWorld frames back: which cell holds a given object? Judges V's reconstructions."""

from __future__ import annotations

import numpy as np

from data.gridworld import AGENT


def cell_of(frames: np.ndarray, colour: np.ndarray = AGENT, size: int = 4) -> np.ndarray:
    """Index (row * size + col) of the cell that looks most like `colour`, per frame.

    frames: (N, 64, 64, 3) uint8 or floats in [0, 1]. A pixel's vote falls off linearly
    with its colour distance to `colour`, so blurry reconstructions still count.
    """
    f = frames.astype(np.float32) / (255 if frames.dtype == np.uint8 else 1)
    vote = np.clip(1 - np.abs(f - colour / 255).sum(-1) / 0.6, 0, None)
    c = 64 // size
    per_cell = vote.reshape(len(f), size, c, size, c).sum((2, 4))
    return per_cell.reshape(len(f), -1).argmax(1)
