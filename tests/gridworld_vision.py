"""Reading GridWorld frames back: where is the agent? Used to judge V's reconstructions."""

from __future__ import annotations

import numpy as np

from data.gridworld import AGENT

CELL = 8  # GridWorld-v0: 8x8 grid of 8-pixel cells


def agent_cell(frames: np.ndarray) -> np.ndarray:
    """Index (row * 8 + col) of the cell that looks most like the agent, per frame.

    frames: (N, 64, 64, 3) uint8 or floats in [0, 1]. A pixel's vote falls off linearly
    with its colour distance to the agent's yellow, so blurry reconstructions still count.
    """
    f = frames.astype(np.float32) / (255 if frames.dtype == np.uint8 else 1)
    vote = np.clip(1 - np.abs(f - AGENT / 255).sum(-1) / 0.6, 0, None)
    per_cell = vote.reshape(len(f), 8, CELL, 8, CELL).sum((2, 4))
    return per_cell.reshape(len(f), -1).argmax(1)
