"""Tiny envs that misbehave on purpose, registered under 'tests.envs_for_tests:<id>'."""

from __future__ import annotations

import os
import time

import gymnasium as gym
import numpy as np

from data.gridworld import GridWorldEnv


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


class MisbehavingGrid(GridWorldEnv):
    """The 4x4 GridWorld whose process dies (exit 13) or hangs on its second step, so that
    V and M trained on GridWorld fit it. FLAKY_MARKER (env var) names a file: while it does
    not exist the env dies once and creates it, so a retried episode succeeds."""

    mode = "die"

    def __init__(self, render_mode: str | None = None) -> None:
        super().__init__(size=4, max_steps=16, render_mode=render_mode)
        self.t = 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.t = 0
        return super().reset(seed=seed, options=options)

    def step(self, action):
        self.t += 1
        if self.t == 2:
            marker = os.environ.get("FLAKY_MARKER")
            if self.mode == "hang":
                time.sleep(3600)
            elif marker is None or not os.path.exists(marker):
                if marker is not None:
                    open(marker, "w").close()
                os._exit(13)
        return super().step(action)


class HangingGrid(MisbehavingGrid):
    mode = "hang"


for _id, _cls in [("Crashing-v0", CrashingEnv), ("Dying-v0", DyingEnv), ("NoPixels-v0", NoPixelsEnv),
                  ("DyingGrid-v0", MisbehavingGrid), ("HangingGrid-v0", HangingGrid)]:
    if _id not in gym.registry:
        gym.register(_id, entry_point=f"{__name__}:{_cls.__name__}")
