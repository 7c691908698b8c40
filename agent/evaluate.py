"""Fitness of many (params, seed) pairs: in parallel real-env workers, or as one dream batch.

Both evaluators take rows of parameters and one seed per row and return one return per
row, so the search does not care where episodes happen. Seeds say everything random about
an episode: the env's reset seed, or the dream's start episode and sampling noise.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

from agent.episodes import Agent, Episode
from agent.planner import Planner, PlannerConfig, PlanningAgent
from data.dataset import episode_split, open_dataset, read_meta
from data.envs import describe_space, make_env
from data.latents import Latents, cached_dataset, latent_cache
from models.actor_critic import ActorConfig, ActorController
from models.controller import Controller, ControllerConfig, LinearController
from models.vae import VAE
from models.world_model import WorldModel
from utils.checkpoint import CheckpointError
from utils.device import worker_device
from utils.logdir import controller_stage, require_upstream
from utils.parallel import open_pool
from utils.upstream import load_dynamics, load_vae

TRAIN_SEEDS = 2**30  # training and selection seeds lie below this; test_controller's above
ENDLESS = 0.95  # the share of a batch's survival dreams at the cap that means M's dream does not end


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
    real_z: str = "mean"  # Agent's real_z
    action_repeat: int = 1  # as in M's dataset


def logdir_env(logdir: Path) -> str:
    """The env id of the dataset M in `logdir` was trained on."""
    env_id = (read_meta(cached_dataset(logdir)) or {}).get("env")
    if not env_id:
        raise CheckpointError(f"the dataset of {logdir} does not say which env it holds: pass --env")
    return env_id


def logdir_action_repeat(logdir: Path) -> int:
    """Env steps per agent step in the dataset M learned from: every stage acts at that rate."""
    return int((read_meta(cached_dataset(logdir)) or {}).get("action_repeat", 1))


def check_env_fits(logdir: Path, env_id: str, space: gym.Space) -> None:
    """Refuse an env whose actions differ from those of the dataset M learned from: C would
    act through an M that never saw such actions."""
    dataset = cached_dataset(logdir)
    trained = (read_meta(dataset) or {}).get("action_space")
    if trained is not None and trained != describe_space(space):
        raise CheckpointError(f"{env_id} acts with {space}, but M in {logdir} learned from {dataset}, whose actions "
                              f"are {trained}: use that dataset's env, or another --logdir")


def load_world(logdir: Path, dynamics: str, device: torch.device) -> tuple[VAE, WorldModel, dict[str, str]]:
    """V and M from the logdir (M checked against V) and their checkpoint ids."""
    vae, vae_id = load_vae(logdir, device)
    m, m_id = load_dynamics(logdir, dynamics, vae, vae_id, device)
    return vae, m, {"vae": vae_id, "dynamics_id": m_id}


def make_controller(config: dict) -> Controller:
    """C from the config its checkpoint stores: the actor, or the linear controller."""
    if config.get("kind") == "actor":
        return ActorController(ActorConfig(**config))
    return LinearController(ControllerConfig(**config))


def load_trained(
    logdir: Path, dynamics: str, method: str, device: torch.device, planner: dict | None = None,
) -> tuple[Agent, torch.Tensor, dict[str, Any]]:
    """The trained agent of agent/<dynamics>/<method>/best.pt, its C parameters and the
    checkpoint; refuses a C trained on another V or M than the logdir's. Method "plan": the
    planner with settings `planner` on the logdir's V and M, which is all it needs."""
    if method == "plan":
        return load_planner(logdir, dynamics, planner or {}, device)
    stage = controller_stage(logdir, dynamics, method)
    ckpt = require_upstream(stage, f"trained C ({method} on {dynamics})",
                            f"python trainagent.py --method {method} --dynamics {dynamics} --logdir {logdir}")
    vae, m, ids = load_world(Path(logdir), dynamics, device)
    if ids["vae"] != ckpt["identity"]["vae"] or ids["dynamics_id"] != ckpt["identity"]["dynamics_id"]:
        raise CheckpointError(f"{stage.best} was trained on another V or M than the ones in {logdir}: "
                              "retrain C with trainagent.py --noreload")
    return Agent(vae, m, make_controller(ckpt["controller"]), device), ckpt["params"], {**ckpt, **ids}


def load_planner(
    logdir: Path, dynamics: str, settings: dict, device: torch.device,
) -> tuple[PlanningAgent, torch.Tensor, dict[str, Any]]:
    """The planner as load_trained returns a C: no parameters, and a checkpoint-like record
    (env, M, settings, and an id made of M's id and the settings)."""
    dataset = cached_dataset(logdir)
    space = (read_meta(dataset) or {}).get("action_space")
    if space is None:
        raise CheckpointError(f"{dataset} does not record its actions (no dataset.json from generation_script.py): "
                              "the planner needs them")
    vae, m, ids = load_world(Path(logdir), dynamics, device)
    cfg = PlannerConfig.for_actions(space, **settings)
    record = {"env": logdir_env(logdir), "dynamics": dynamics, "controller": cfg.to_dict(),
              "identity": {**ids, "temperature": cfg.temperature, "survival": cfg.survival},
              "id": hashlib.sha256(json.dumps([ids, cfg.to_dict()], sort_keys=True).encode()).hexdigest(), **ids}
    return PlanningAgent(vae, m, Planner(m, cfg), device), torch.zeros(0), record


def load_agent(spec: AgentSpec) -> Agent:
    device = torch.device(spec.device)
    vae, m, _ = load_world(Path(spec.logdir), spec.dynamics, device)
    if spec.controller.get("kind") == "planner":
        return PlanningAgent(vae, m, Planner(m, PlannerConfig.from_dict(spec.controller)), device, spec.real_z)
    return Agent(vae, m, make_controller(spec.controller), device, spec.real_z)


def _init_worker(spec: AgentSpec, max_steps: int | None) -> dict[str, Any]:
    torch.set_num_threads(1)  # one core per worker: workers are the parallelism
    spec = replace(spec, device=worker_device(spec.device))
    return {"agent": load_agent(spec), "envs": [], "env": (spec.env_id, spec.action_repeat), "max_steps": max_steps}


@dataclass(frozen=True)
class Chunk:
    """Episodes first .. first + len(seeds) - 1 of an evaluation, one params row each."""

    first: int
    params: np.ndarray
    seeds: list[int]

    def __repr__(self) -> str:  # what error messages show: not the parameter arrays
        return f"episodes {self.first}-{self.first + len(self.seeds) - 1} (seeds {self.seeds[0]}...)"


def _run_chunk(state: dict[str, Any], chunk: Chunk) -> list[Episode]:
    """A chunk of episodes in lockstep; the worker keeps its envs between chunks."""
    envs = state["envs"]
    while len(envs) < len(chunk.seeds):
        envs.append(make_env(*state["env"]))
    return state["agent"].real_episodes(envs[: len(chunk.seeds)], torch.from_numpy(chunk.params), chunk.seeds,
                                        state["max_steps"])


class RealEvaluator:
    """Episodes in `workers` spawned processes (0: inline) or Ray actors (`ray`: 'auto' or a
    cluster address), each holding V, M, C and up to `envs_per_worker` envs that play a chunk
    of episodes in lockstep, so V, M and C run batched. On CUDA, workers take the visible
    GPUs in turn. timeout: seconds one chunk may take before its worker counts as hung."""

    def __init__(
        self, spec: AgentSpec, workers: int, timeout: float | None, max_steps: int | None = None,
        envs_per_worker: int = 16, ray: str | None = None,
    ) -> None:
        self.workers, self.envs_per_worker = workers, envs_per_worker
        self.pool = open_pool(workers, _init_worker, _run_chunk, (spec, max_steps), timeout, 1, ray,
                              gpus=spec.device.startswith("cuda"))

    def __call__(self, params: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, list[Episode]]:
        n = len(seeds)
        size = max(1, min(self.envs_per_worker, -(-n // max(self.workers, 1))))
        params = np.asarray(params, np.float32)
        tasks = [Chunk(i, params[i : i + size], list(seeds[i : i + size])) for i in range(0, n, size)]
        episodes: list[Episode] = [None] * n  # type: ignore[list-item]
        for task, result in self.pool.imap_unordered(tasks):
            episodes[task.first : task.first + len(result)] = result
        return np.array([e.ret for e in episodes]), episodes

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
        self.warned = False

    def starts_for(self, seeds: torch.Tensor) -> torch.Tensor:
        return self.starts[seeds % len(self.starts)]

    def __call__(self, params: np.ndarray, seeds: list[int]) -> tuple[np.ndarray, list[Episode]]:
        seeds_t = torch.tensor(seeds, dtype=torch.long)
        starts = self.starts_for(seeds_t)
        ret, steps, _ = self.agent.dream(torch.as_tensor(np.asarray(params), dtype=torch.float32), starts, seeds_t,
                                         self.temperature, self.max_steps, self.survival)
        capped = float((steps >= self.max_steps).float().mean())
        if self.survival and not self.warned and len(steps) > 1 and capped >= ENDLESS:
            self.warned = True
            tqdm.write(f"{capped:.0%} of {len(steps)} dreams lasted to the {self.max_steps}-step cap: unless C is "
                       "that good in the game, M's done head hardly fires and survival cannot tell Cs apart; train M "
                       "longer (bench/dream_check.py --survival shows it)")
        return ret.numpy().astype(np.float64), [Episode(float(r), int(n)) for r, n in zip(ret, steps, strict=True)]

    def close(self) -> None:
        pass


def dream_evaluator(
    agent: Agent, logdir: Path, vae_id: str, temperature: float, max_steps: int, survival: bool, held_out: bool,
) -> DreamEvaluator:
    """Dreams that start from the first frames of the training episodes of M's dataset, or
    of its validation episodes (held_out, for evaluation; the training ones if there are none)."""
    dataset = cached_dataset(logdir)
    files = open_dataset(dataset)
    lat = latent_cache(logdir, dataset, files, agent.vae, vae_id, agent.device)
    train_eps, val_eps = episode_split(logdir, files, 0.1)
    episodes = (val_eps or train_eps) if held_out else train_eps
    return DreamEvaluator(agent, lat, episodes, temperature, max_steps, survival)
