"""Fitness of many (params, seed) pairs: in parallel real-env workers, or as one dream batch.

Both evaluators take rows of parameters and one seed per row and return one return per
row, so the search does not care where episodes happen. Seeds say everything random about
an episode: the env's reset seed, or the dream's start episode and sampling noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agent.episodes import Agent, Episode
from data.envs import make_env
from data.latents import Latents
from models.controller import ControllerConfig, LinearController
from models.vae import VAE
from models.world_model import WorldModel
from utils.parallel import WorkerPool
from utils.upstream import load_dynamics, load_vae

TRAIN_SEEDS = 2**30  # training and selection seeds lie below this; test_controller's above


def episode_seed(*key: int) -> int:
    """A seed in [0, 2^30) from a tuple of non-negative ints (run seed, purpose, generation, ...)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1)[0]) % TRAIN_SEEDS


@dataclass(frozen=True)
class AgentSpec:
    """What a worker needs to rebuild the agent on its own: all plain, picklable values."""

    logdir: str
    dynamics: str
    env_id: str
    controller: dict
    device: str = "cpu"


def load_world(logdir: Path, dynamics: str, device: torch.device) -> tuple[VAE, WorldModel, dict[str, str]]:
    """V and M from the logdir (M checked against V) and their checkpoint ids."""
    vae, vae_id = load_vae(logdir, device)
    m, m_id = load_dynamics(logdir, dynamics, vae, vae_id, device)
    return vae, m, {"vae": vae_id, "dynamics_id": m_id}


def load_agent(spec: AgentSpec) -> Agent:
    device = torch.device(spec.device)
    vae, m, _ = load_world(Path(spec.logdir), spec.dynamics, device)
    return Agent(vae, m, LinearController(ControllerConfig(**spec.controller)), device)


def _init_worker(spec: AgentSpec, max_steps: int | None) -> tuple:
    torch.set_num_threads(1)  # one core per worker: workers are the parallelism
    return load_agent(spec), make_env(spec.env_id), max_steps


def _run_episode(state: tuple, task: tuple[int, np.ndarray, int]) -> Episode:
    agent, env, max_steps = state
    _, params, seed = task
    return agent.real_episode(env, torch.from_numpy(params), seed, max_steps)


class RealEvaluator:
    """Episodes in `workers` spawned processes, each holding V, M, C and one env (0: inline)."""

    def __init__(self, spec: AgentSpec, workers: int, timeout: float | None, max_steps: int | None = None) -> None:
        self.pool = WorkerPool(workers, _init_worker, _run_episode, (spec, max_steps), timeout=timeout, retries=1)

    def __call__(self, params: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, list[Episode]]:
        tasks = [(i, np.asarray(p, np.float32), s) for i, (p, s) in enumerate(zip(params, seeds, strict=True))]
        episodes: list[Episode | None] = [None] * len(tasks)
        for task, ep in self.pool.imap_unordered(tasks):
            episodes[task[0]] = ep
        done = [e for e in episodes if e is not None]
        return np.array([e.ret for e in done]), done

    def close(self) -> None:
        self.pool.close()


class DreamEvaluator:
    """All rows as one batch inside M; a row's start is the first frame of training episode
    (seed mod number of episodes)."""

    def __init__(
        self, agent: Agent, latents: Latents, episodes: list[int], temperature: float, max_steps: int,
        survival: bool,
    ) -> None:
        self.agent, self.temperature, self.max_steps, self.survival = agent, temperature, max_steps, survival
        self.starts = torch.from_numpy(np.stack([np.asarray(latents.stats[latents.offsets[e]]) for e in episodes]))

    def starts_for(self, seeds: torch.Tensor) -> torch.Tensor:
        return self.starts[seeds % len(self.starts)]

    def __call__(self, params: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, list[Episode]]:
        seeds_t = torch.tensor(seeds, dtype=torch.long)
        starts = self.starts_for(seeds_t)
        ret, steps, _ = self.agent.dream(torch.as_tensor(np.asarray(params), dtype=torch.float32), starts, seeds_t,
                                         self.temperature, self.max_steps, self.survival)
        return ret.numpy().astype(np.float64), [Episode(float(r), int(n)) for r, n in zip(ret, steps, strict=True)]

    def close(self) -> None:
        pass
