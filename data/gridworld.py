"""Built-in GridWorld: a tiny, seeded, fast pixel environment for the quickstart and tests.

The agent must reach the goal cell and avoid the hazard cell. The observation is the
64x64 RGB frame itself, painted with numpy slicing, so no renderer or resize is needed
and thousands of steps per second fit on one core.

Coordinates are (x, y) in cells, image convention: x grows right, y grows down.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

FRAME = 64
BACKGROUND = np.array([16, 16, 24], np.uint8)
GRID_LINE = np.array([44, 44, 60], np.uint8)
GOAL = np.array([0, 150, 255], np.uint8)
HAZARD = np.array([220, 30, 30], np.uint8)
AGENT = np.array([255, 230, 0], np.uint8)
MOVES = ((0, -1), (1, 0), (0, 1), (-1, 0))  # (dx, dy) of actions 0 up, 1 right, 2 down, 3 left
EDGE = 1e-6  # keeps a continuous position strictly inside the grid so floor() stays a valid cell


class GridWorldEnv(gym.Env[np.ndarray, np.ndarray | int]):
    """Reach the blue goal, avoid the red hazard; -step_cost per step, internal time limit.

    layout "random" draws agent, goal and hazard cells anew at every reset; "fixed" keeps
    the goal in the bottom-right corner and the hazard diagonally next to it, and draws only
    the agent's start. The fixed map is what a world model learns from 1,500 random
    episodes; random layouts ask M to generalise over 3,360 arrangements (RESULTS.md).

    Public state (read it, or set it after reset() to build a scenario):
    agent_pos: np.ndarray (x, y); int64 cell (discrete) or exact float position (continuous).
    goal_pos, hazard_pos: tuple[int, int] cells.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        continuous: bool = False,
        size: int = 8,
        max_steps: int = 40,
        step_cost: float = 0.01,
        goal_reward: float = 1.0,
        hazard_reward: float = -1.0,
        render_mode: str | None = None,
        layout: str = "random",
    ) -> None:
        if size < 2 or FRAME % size:
            raise ValueError(
                f"size must divide {FRAME} (cells are {FRAME} // size pixels) and be >= 2 "
                f"(room for agent, goal and hazard); got {size}"
            )
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        if layout not in ("random", "fixed"):
            raise ValueError(f"layout must be 'random' or 'fixed', got {layout!r}")
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.continuous = continuous
        self.size = size
        self.max_steps = max_steps
        self.step_cost = step_cost
        self.goal_reward = goal_reward
        self.hazard_reward = hazard_reward
        self.render_mode = render_mode
        self.layout = layout
        self.cell = FRAME // size
        self.observation_space = spaces.Box(0, 255, (FRAME, FRAME, 3), np.uint8)
        self.action_space: spaces.Space = (
            spaces.Box(-1.0, 1.0, (2,), np.float32) if continuous else spaces.Discrete(4)
        )
        self.agent_pos = np.zeros(2, np.float64 if continuous else np.int64)
        self.goal_pos = (0, 0)
        self.hazard_pos = (0, 0)
        self._steps = 0
        self._distances: np.ndarray | None = None  # oracle's BFS map, built lazily per layout
        self._agent_side = max(1, self.cell - self.cell // 4)
        self._background = np.empty((FRAME, FRAME, 3), np.uint8)
        self._background[:] = BACKGROUND
        self._background[:: self.cell, :] = GRID_LINE
        self._background[:, :: self.cell] = GRID_LINE

    @property
    def agent_cell(self) -> tuple[int, int]:
        """The cell the agent is in (positions are >= 0, so int() is floor())."""
        return int(self.agent_pos[0]), int(self.agent_pos[1])

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        n = self.size
        if self.layout == "fixed":
            goal, hazard = n * n - 1, (n - 2) * (n + 1)  # cells (n-1, n-1) and (n-2, n-2)
            start = int(self.np_random.choice([i for i in range(n * n) if i not in (goal, hazard)]))
            cells = (start, goal, hazard)
        else:
            cells = tuple(int(i) for i in self.np_random.choice(n * n, size=3, replace=False))
        agent, self.goal_pos, self.hazard_pos = ((i % n, i // n) for i in cells)
        if self.continuous:
            self.agent_pos = np.array(agent, np.float64) + 0.5
        else:
            self.agent_pos = np.array(agent, np.int64)
        self._steps = 0
        self._distances = None
        return self._draw(), {"success": False, "hazard": False}

    def step(
        self, action: np.ndarray | int
    ) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.continuous:
            move = np.clip(np.asarray(action, np.float64).reshape(2), -1.0, 1.0)
            self.agent_pos = np.clip(self.agent_pos + move, 0.0, self.size - EDGE)
        else:
            if not self.action_space.contains(action):
                raise ValueError(f"action must be an int in [0, 4), got {action!r}")
            self.agent_pos = np.clip(self.agent_pos + MOVES[int(action)], 0, self.size - 1)
        self._steps += 1
        cell = self.agent_cell
        success = cell == self.goal_pos
        hazard = cell == self.hazard_pos
        reward = -self.step_cost
        if success:
            reward += self.goal_reward
        if hazard:
            reward += self.hazard_reward
        terminated = success or hazard
        truncated = not terminated and self._steps >= self.max_steps
        info = {"success": success, "hazard": hazard}
        return self._draw(), float(reward), terminated, truncated, info

    def render(self) -> np.ndarray:
        """The current frame (a fresh array, identical to the latest observation)."""
        return self._draw()

    def _draw(self) -> np.ndarray:
        """Paint goal, hazard, then the agent on top, over the precomputed background."""
        frame = self._background.copy()
        c = self.cell
        for (x, y), colour in ((self.goal_pos, GOAL), (self.hazard_pos, HAZARD)):
            frame[y * c : (y + 1) * c, x * c : (x + 1) * c] = colour
        centre = self.agent_pos if self.continuous else self.agent_pos + 0.5  # cell -> its centre
        side = self._agent_side
        x0 = math.floor(centre[0] * c - side / 2)
        y0 = math.floor(centre[1] * c - side / 2)
        frame[max(y0, 0) : y0 + side, max(x0, 0) : x0 + side] = AGENT
        return frame

    def oracle_action(self) -> np.ndarray | int:
        """A shortest-path action to the goal around the hazard, from the true state.

        Benchmarks and tests use it as the 'good policy' a learned controller should approach.
        """
        if self._distances is None:
            # A ring of inf around the grid so an off-grid move is never the best one.
            self._distances = np.pad(self._goal_distances(), 1, constant_values=np.inf)
        x, y = self.agent_cell
        dist = self._distances
        best = min(range(4), key=lambda a: dist[x + MOVES[a][0] + 1, y + MOVES[a][1] + 1])
        if not self.continuous:
            return best
        # Head for the next cell's centre; a step of length <= 1 stays inside the current and
        # next cell (their union is convex), so it can never clip the hazard.
        target = np.array([x + MOVES[best][0] + 0.5, y + MOVES[best][1] + 0.5])
        delta = target - self.agent_pos
        norm = float(np.hypot(*delta))
        return (delta / max(norm, 1.0)).astype(np.float32)

    def _goal_distances(self) -> np.ndarray:
        """BFS steps from every cell (indexed [x, y]) to the goal, inf through the hazard."""
        distances = np.full((self.size, self.size), np.inf)
        distances[self.goal_pos] = 0
        queue = deque([self.goal_pos])
        while queue:
            x, y = queue.popleft()
            for dx, dy in MOVES:
                nx, ny = x + dx, y + dy
                if (
                    0 <= nx < self.size
                    and 0 <= ny < self.size
                    and (nx, ny) != self.hazard_pos
                    and distances[nx, ny] == np.inf
                ):
                    distances[nx, ny] = distances[x, y] + 1
                    queue.append((nx, ny))
        return distances


# 4x4 grids: small enough that V and M learn them in minutes on a CPU, while a uniform random
# policy still fails in 69% (random layouts) to 84% (fixed map) of episodes. The fixed map is
# the quickstart's task; random layouts and the 8x8 grid are the harder variants.
SMALL = {"size": 4, "max_steps": 16}
FIXED = {**SMALL, "layout": "fixed"}
REGISTERED = (
    ("GridWorld-v0", SMALL),
    ("GridWorldContinuous-v0", {**SMALL, "continuous": True}),
    ("GridWorldFixed-v0", FIXED),
    ("GridWorldFixedContinuous-v0", {**FIXED, "continuous": True}),
    ("GridWorld8x8-v0", {"size": 8, "max_steps": 40}),
)
for _env_id, _kwargs in REGISTERED:
    if _env_id not in gym.registry:
        gym.register(id=_env_id, entry_point="data.gridworld:GridWorldEnv", kwargs=_kwargs)
