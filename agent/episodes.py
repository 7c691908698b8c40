"""The two loops every controller runs in, written once against the world-model interface.

Real env: frame -> z (V's mean or a sample) -> observe (M) -> features -> C -> env action.
Dream:    a batch of rollouts starting from real episode starts, stepped by M.imagine alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from models.controller import Controller
from models.noise import Noise, SeededNoise
from models.vae import VAE, frames_to_tensor
from models.world_model import State, WorldModel
from utils.device import to_device

DONE_THRESHOLD = 0.5  # a dream episode ends when p(done) > 0.5 (Ha, Doom)
REAL_Z = ("mean", "sample")


@dataclass
class Episode:
    ret: float
    steps: int
    success: bool | None = None  # from info["success"] where the env reports it


class Agent:
    """V, M and C together: what acts, given C's parameter vector."""

    def __init__(
        self, vae: VAE, m: WorldModel, controller: Controller, device: torch.device, real_z: str = "mean",
    ) -> None:
        """real_z: what a real frame gives M and C, V's mean ("mean") or a draw from V's
        posterior ("sample"), which is what M was trained on and what its dream produces."""
        if real_z not in REAL_Z:
            raise ValueError(f"real_z must be one of {REAL_Z}, not {real_z!r}")
        self.vae, self.m, self.c, self.device, self.real_z = vae, m, controller, device, real_z

    @torch.no_grad()
    def real_episodes(
        self, envs: list[gym.Env], params: torch.Tensor, seeds: list[int], max_steps: int | None = None,
        on_frame: Callable[[int, np.ndarray], None] | None = None,
    ) -> list[Episode]:
        """Episodes in len(envs) real envs in lockstep, row b playing params[b] (or one shared
        (P,) vector): V, M and C run once per step for the envs still playing, as one batch."""
        state, a_prev = self.m.initial_state(len(envs)), None
        params = params.to(self.device)
        noise = SeededNoise(torch.tensor(seeds))  # a sampling C's choices depend on the episode seed only
        held = list(range(len(envs)))  # the envs whose rows state, a_prev, params and noise hold

        def policy(frames: np.ndarray, rows: list[int]) -> list[Any]:
            nonlocal state, a_prev, params, noise, held
            if rows != held:  # finished envs leave the batch: V, M and C skip them from now on
                keep = torch.tensor([held.index(b) for b in rows], device=self.device)
                state, params, noise = keep_rows(keep, state, params, noise)
                a_prev = None if a_prev is None else a_prev[keep]
                held = rows
            state, a = self.step(state, a_prev, frames, params, noise)
            a_prev = self.c.m_input(a)
            return [to_env(row) for row in a]

        return play(envs, policy, seeds, max_steps, on_frame)

    @torch.no_grad()
    def step(
        self, state: State, a_prev: torch.Tensor | None, frames: np.ndarray, params: torch.Tensor, noise: Noise,
    ) -> tuple[State, torch.Tensor]:
        """One real step for a batch of frames (B, 64, 64, 3): V's z (mean or sample, drawn
        from the episode's noise), M's filtered state after a_prev (as M takes it), and C's actions."""
        state = self.observe_frames(state, a_prev, frames, noise)
        return state, self.c.act(self.m.features(state), params, noise)

    def observe_frames(self, state: State, a_prev: torch.Tensor | None, frames: np.ndarray, noise: Noise) -> State:
        """M's filtered state after a_prev, given the frames that followed it."""
        # frames_to_tensor's permuted (channels-last) layout makes V's convolutions 1.8x slower
        # on one frame on CPU (3.0 against 1.65 ms per step, CarRacing size); about even at 16
        if not frames.flags.writeable:  # some envs' frames: torch would warn on wrapping them
            frames = frames.copy()
        stats = self.vae.encode(frames_to_tensor(to_device(torch.from_numpy(frames), self.device)).contiguous())
        z = self.vae.sample(stats, mean=self.real_z == "mean", noise=noise)
        return self.m.observe(state, z, a_prev)

    @torch.no_grad()
    def dream(
        self, params: torch.Tensor, starts: torch.Tensor, seeds: torch.Tensor, temperature: float,
        max_steps: int, survival: bool, record: bool = False, noise: Noise | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Dream rollouts, one per row: params (B, P), starts (B, S) V-statistics of real first
        frames, seeds (B,). Returns (return, steps, z per step if record). An episode ends when
        p(done) > 0.5 or at max_steps. Reward: M's reward head, or +1 per step survived when
        `survival` (Ha's TakeCover dream). Rows never interact, so a batch gives the same
        results as its rows run one by one. Without `record`, finished rows leave the batch
        once a quarter of it has ended: a population's dreams differ in length many times
        over, and M would otherwise keep stepping the dead ones until the longest ends."""
        noise = noise or SeededNoise(seeds)
        B = len(params)
        params, starts = params.to(self.device), starts.to(self.device)
        z = self.vae.sample(starts, mean=True)
        state = self.m.randomize(self.m.observe(self.m.initial_state(B), z, None), noise)
        rows = torch.arange(B, device=self.device)  # which episode each row of the batch is
        alive = torch.ones(B, dtype=torch.bool, device=self.device)
        ret = torch.zeros(B, device=self.device)
        steps = torch.zeros(B, dtype=torch.long, device=self.device)
        zs = [z] if record else []
        for _ in range(max_steps):
            a = self.c.act(self.m.features(state), params, noise)
            state, z, r, p_done = self.m.imagine(state, self.c.m_input(a), temperature, noise)
            ret.index_add_(0, rows, torch.where(alive, torch.ones_like(r) if survival else r, torch.zeros_like(r)))
            steps.index_add_(0, rows, alive.long())
            if record:
                zs.append(z)
            alive &= p_done <= DONE_THRESHOLD
            if not alive.any():
                break
            if not record and isinstance(noise, SeededNoise) and 4 * int(alive.sum()) <= 3 * len(alive):
                keep = alive.nonzero()[:, 0]
                state, params, noise = keep_rows(keep, state, params, noise)
                rows, alive = rows[keep], alive[keep]
        return ret.cpu(), steps.cpu(), zs


def keep_rows(keep: torch.Tensor, state: State, params: torch.Tensor, noise: SeededNoise,
              ) -> tuple[State, torch.Tensor, SeededNoise]:
    """The batch rows `keep` of M's state, C's parameters (one shared (P,) vector stays) and
    the noise streams, each row going on where it was: how finished episodes leave a batch."""
    params = params[keep] if params.dim() == 2 else params
    return {k: v[keep] for k, v in state.items()}, params, noise.take(keep)


def play(
    envs: list[gym.Env], policy: Callable[[np.ndarray, list[int]], list[Any]], seeds: list[int],
    max_steps: int | None = None, on_frame: Callable[[int, np.ndarray], None] | None = None,
) -> list[Episode]:
    """One episode per env in lockstep: policy(frames (B, 64, 64, 3), rows) -> B actions for
    the B envs still playing, `rows` naming them (a shrinking, ordered subset of 0..len(envs)-1).
    Finished envs are no longer stepped. on_frame(b, frame) sees every frame."""
    obs, episodes = [], []
    for env, seed in zip(envs, seeds, strict=True):
        o, info = env.reset(seed=seed)
        obs.append(o)
        episodes.append(Episode(float(info.get("reset_return", 0.0)), 0))
    active = [True] * len(envs)
    while rows := [b for b in range(len(envs)) if active[b]]:
        if on_frame is not None:
            for b in rows:
                on_frame(b, obs[b])
        for b, action in zip(rows, policy(np.stack([obs[b] for b in rows]), rows), strict=True):
            obs[b], r, terminated, truncated, info = envs[b].step(action)
            ep = episodes[b]
            ep.ret, ep.steps = ep.ret + r, ep.steps + 1
            if "success" in info:
                ep.success = bool(info["success"])
            if terminated or truncated or (max_steps is not None and ep.steps >= max_steps):
                active[b] = False
                if on_frame is not None:
                    on_frame(b, obs[b])
    return episodes


def random_episode(env: gym.Env, seed: int, max_steps: int | None = None) -> Episode:
    """The baseline: uniformly random actions, seeded like the env."""
    env.action_space.seed(seed)
    return play([env], lambda _, rows: [env.action_space.sample()], [seed], max_steps)[0]


def to_env(a: torch.Tensor) -> Any:
    """A batch row of C's output as the env wants it: an int or a float array."""
    return int(a) if a.dtype == torch.long else a.cpu().numpy()
