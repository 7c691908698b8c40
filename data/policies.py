"""Random exploration policies for stage 1.

All policies share `reset(rng)` / `act(obs)`, the same interface a trained controller
exposes, so the generation loop does not care which one it runs.
"""

from __future__ import annotations

from typing import Any, Protocol

import gymnasium as gym
import numpy as np

POLICIES = ("auto", "brownian", "sticky", "runs", "white")
RUNS_MAX = 1000.0  # steps between redraws, the longest mean of policy "runs": a whole Doom episode and more


class Policy(Protocol):
    def reset(self, rng: np.random.Generator) -> None: ...
    def act(self, obs: np.ndarray) -> Any: ...


class BrownianPolicy:
    """a_{t+1} = clip(a_t + sqrt(dt) N(0, I)): smooth actions that visit more of the state
    space than white noise, which mostly jitters in place (Ha & Schmidhuber's CarRacing data)."""

    def __init__(self, space: gym.spaces.Box, dt: float = 1 / 50) -> None:
        self.low = space.low.astype(np.float32)
        self.high = space.high.astype(np.float32)
        self.scale = np.float32(np.sqrt(dt))
        self.a: np.ndarray | None = None

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.a = None

    def act(self, obs: np.ndarray) -> np.ndarray:
        if self.a is None:
            self.a = self.rng.uniform(self.low, self.high).astype(np.float32)
        else:
            step = self.scale * self.rng.standard_normal(self.a.shape, dtype=np.float32)
            self.a = np.clip(self.a + step, self.low, self.high)
        return self.a.copy()


class StickyRandomPolicy:
    """Repeat the previous discrete action with probability `repeat`, else draw a new one:
    the discrete counterpart of brownian motion (runs of actions, not flicker).

    runs=(lo, hi): each episode draws its own mean number of steps between redraws,
    log-uniformly in [lo, hi]; from white noise (1) to one button held all episode. A C
    search starts at zero weights, whose C holds one action: M must have seen where that
    leads, or its dream rates a held button far above the game (Doom: 458 steps against 174)."""

    def __init__(self, space: gym.spaces.Discrete, repeat: float = 0.8,
                 runs: tuple[float, float] | None = None) -> None:
        self.n = int(space.n)
        self.start = int(space.start)
        self.repeat = repeat
        self.runs = runs
        self.a: int | None = None

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.a = None
        if self.runs is not None:
            lo, hi = np.log(self.runs[0]), np.log(self.runs[1])
            self.repeat = 1.0 - float(np.exp(rng.uniform(lo, hi))) ** -1

    def act(self, obs: np.ndarray) -> int:
        if self.a is None or self.rng.random() >= self.repeat:
            self.a = self.start + int(self.rng.integers(self.n))
        return self.a


class WhiteNoisePolicy:
    """Independent uniform actions each step (action_space.sample() with our own RNG)."""

    def __init__(self, space: gym.Space) -> None:
        self.space = space

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def act(self, obs: np.ndarray) -> Any:
        if isinstance(self.space, gym.spaces.Discrete):
            return int(self.space.start + self.rng.integers(self.space.n))
        return self.rng.uniform(self.space.low, self.space.high).astype(np.float32)


def policy_name(policy: Policy) -> str:
    """How a dataset's meta names its random policy: top-ups must use the same one."""
    runs = getattr(policy, "runs", None)
    return type(policy).__name__ + (f" runs {runs[0]:g}-{runs[1]:g}" if runs else "")


def make_policy(name: str, space: gym.Space) -> Policy:
    """'auto' picks brownian for continuous actions and sticky for discrete ones; 'runs' is
    sticky with run lengths from 1 to RUNS_MAX steps, drawn per episode."""
    discrete = isinstance(space, gym.spaces.Discrete)
    if name == "auto":
        name = "sticky" if discrete else "brownian"
    if name == "white":
        return WhiteNoisePolicy(space)
    if name == "sticky" and discrete:
        return StickyRandomPolicy(space)
    if name == "runs" and discrete:
        return StickyRandomPolicy(space, runs=(1.0, RUNS_MAX))
    if name == "brownian" and isinstance(space, gym.spaces.Box):
        return BrownianPolicy(space)
    raise ValueError(f"policy '{name}' does not fit action space {space}; choose from {POLICIES}")
