"""Tiny envs that misbehave on purpose, registered under 'tests.envs_for_tests:<id>'."""

from __future__ import annotations

import os

import gymnasium as gym
import numpy as np


class CrashingEnv(gym.Env):
    """Renders pixels, then raises on step `crash_at` (a bug in a user's env)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, crash_at: int = 3, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.crash_at, self.t = crash_at, 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros((64, 64, 3), np.uint8), {}

    def step(self, action):
        self.t += 1
        if self.t >= self.crash_at:
            raise RuntimeError("simulated bug inside the environment")
        return np.zeros((64, 64, 3), np.uint8), 0.0, False, False, {}


class DyingEnv(CrashingEnv):
    """Kills its own process on step `crash_at` (a segfault in native env code)."""

    def step(self, action):
        self.t += 1
        if self.t >= self.crash_at:
            os._exit(13)
        return np.zeros((64, 64, 3), np.uint8), 0.0, False, False, {}


class NoPixelsEnv(gym.Env):
    """A vector-observation env that cannot render."""

    metadata = {"render_modes": []}

    def __init__(self, render_mode: str | None = None) -> None:
        self.observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)
        self.action_space = gym.spaces.Discrete(2)


for _id, _cls in [("Crashing-v0", CrashingEnv), ("Dying-v0", DyingEnv), ("NoPixels-v0", NoPixelsEnv)]:
    if _id not in gym.registry:
        gym.register(_id, entry_point=f"{__name__}:{_cls.__name__}")
