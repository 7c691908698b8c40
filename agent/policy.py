"""A trained C as a data-collection policy: Ha & Schmidhuber's iterative training (section 5).

generation_script.py --policy controller rolls C out frame by frame through V and M, with
exploration noise, so the next M learns the states the controller actually reaches, which
random rollouts rarely show (the far side of a CarRacing track, a GridWorld goal).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agent.episodes import to_env
from agent.evaluate import load_trained
from data.envs import PixelEnv, make_env
from models.noise import SeededNoise
from utils.device import worker_device


@dataclass(frozen=True)
class ControllerSpec:
    """Which trained C to roll out, and how much to explore: plain values a worker rebuilds it from."""

    logdir: str
    dynamics: str = "mdrnn"
    method: str = "cmaes"
    noise: float = 0.1
    device: str = "cpu"
    planner: dict | None = None  # method "plan": the planner's settings
    action_repeat: int = 1  # as in M's dataset


class ControllerPolicy:
    """reset(rng) / act(obs) like the random policies. Exploration: with probability `noise`
    a uniformly random discrete action; for boxes Gaussian noise of std `noise` x half the
    box's width, clipped. All randomness comes from the episode's rng, so an episode depends
    only on (seed, index), on any worker or backend."""

    def __init__(self, spec: ControllerSpec, space: gym.Space) -> None:
        self.agent, self.params, _ = load_trained(Path(spec.logdir), spec.dynamics, spec.method,
                                                   torch.device(spec.device), spec.planner)
        self.params = self.params.to(spec.device)
        self.space, self.noise = space, spec.noise

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.state = self.agent.m.initial_state(1)
        self.a_prev: torch.Tensor | None = None
        self.c_noise = SeededNoise(torch.tensor([int(rng.integers(2**31 - 1))]))  # for a sampling C

    def act(self, obs: np.ndarray) -> Any:
        self.state, a = self.agent.step(self.state, self.a_prev, obs[None], self.params, self.c_noise)
        a = self._explore(a)
        self.a_prev = self.agent.c.m_input(a)  # M sees the action taken, noise included
        return to_env(a[0])

    def _explore(self, a: torch.Tensor) -> torch.Tensor:
        if isinstance(self.space, gym.spaces.Discrete):
            if self.rng.random() < self.noise:
                return torch.full_like(a, int(self.rng.integers(self.space.n)))
            return a
        low, high = self.space.low.astype(np.float32), self.space.high.astype(np.float32)
        step = self.noise * (high - low) / 2 * self.rng.standard_normal(low.shape, dtype=np.float32)
        return torch.from_numpy(np.clip(a[0].cpu().numpy() + step, low, high))[None].to(a)


def init_controller_generator(env_id: str, spec: ControllerSpec) -> tuple[PixelEnv, ControllerPolicy]:
    """Worker state for generation_script.py --policy controller: one env, V, M and C."""
    torch.set_num_threads(1)  # one core per worker: workers are the parallelism
    env = make_env(env_id, spec.action_repeat)
    spec = replace(spec, device=worker_device(spec.device))
    return env, ControllerPolicy(spec, env.action_space)
