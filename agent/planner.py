"""PlaNet's planner (Hafner et al. 2019): a C with no parameters, model-predictive control by
the cross-entropy method (CEM) in M's latent space.

At every real step, from M's filtered state, J candidate action sequences of horizon H are
imagined by M in one batch (all candidates of all envs together), scored by M's predicted
rewards, discounted and weighted by the probability that M's dream has not ended yet, and
the sampling distribution is refit to the top K, I times. The first action of the final
distribution is executed; the rest of the plan, shifted by one step, starts the next search.

Continuous actions: a Gaussian per step and action dimension, candidates clipped to the box
before they are scored, the refit made on the clipped actions. Discrete actions: a
categorical per step, refit to the top K's action frequencies.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np
import torch

from agent.episodes import Agent
from models.controller import as_m_input
from models.noise import Noise, SeededNoise, categorical
from models.vae import VAE
from models.world_model import State, WorldModel

# PlaNet's settings (H 12, I 10, J 1000, K 100), and a budget that two CPU cores can afford
# per real step: about 31x fewer imagined steps
PLANET = {"horizon": 12, "iterations": 10, "candidates": 1000, "top_k": 100}
LIGHT = {"horizon": 12, "iterations": 5, "candidates": 64, "top_k": 8}
WARM_MIX = 0.5  # discrete warm start: half the shifted plan, half uniform, so no action is ruled out


@dataclass(frozen=True)
class PlannerConfig:
    outputs: int  # actions: n for Discrete(n), the box's dimension for a Box
    discrete: bool
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()
    horizon: int = PLANET["horizon"]
    iterations: int = PLANET["iterations"]
    candidates: int = PLANET["candidates"]
    top_k: int = PLANET["top_k"]
    gamma: float = 0.99
    temperature: float = 1.0  # tau of M while planning
    survival: bool = False  # score +1 per imagined step alive (Doom) instead of M's reward head
    kind: str = "planner"

    def __post_init__(self) -> None:
        if min(self.horizon, self.iterations, self.candidates, self.top_k) < 1 or self.top_k > self.candidates:
            raise ValueError("the planner needs horizon, iterations, candidates >= 1 and 1 <= top_k <= candidates")
        if not all(np.isfinite(self.low + self.high)):  # the Gaussian's width is half the box
            raise ValueError(f"the planner needs a bounded action box, not low {self.low}, high {self.high}")

    @classmethod
    def for_actions(cls, action_space: dict, **settings: object) -> PlannerConfig:
        """From a dataset's action-space description (data.envs.describe_space)."""
        if action_space["type"] == "discrete":
            return cls(int(action_space["n"]), True, **settings)
        low, high = (tuple(float(x) for x in action_space[k]) for k in ("low", "high"))
        return cls(len(low), False, low, high, **settings)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PlannerConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if k in ("low", "high") else v for k, v in d.items() if k in known})


class Planner:
    """What the real-env loop needs of a C (m_input) plus `plan`, which replaces C's act."""

    def __init__(self, m: WorldModel, cfg: PlannerConfig) -> None:
        self.m, self.cfg = m, cfg

    def m_input(self, actions: torch.Tensor) -> torch.Tensor:
        return as_m_input(actions, self.cfg.discrete, self.cfg.outputs)

    @torch.no_grad()
    def plan(self, state: State, warm: torch.Tensor | None, noise: Noise) -> tuple[torch.Tensor, torch.Tensor]:
        """CEM from M's filtered states of B envs. warm: the previous step's plan (B, H, X),
        or None at an episode's start. Returns the env actions ((B,) long or (B, A)) and the
        plan that warm-starts the next step. Env b's candidates draw only from a stream seeded
        by one draw of noise row b, so a batch of envs plans exactly as each env alone."""
        cfg = self.cfg
        B, J = len(next(iter(state.values()))), cfg.candidates
        device = next(iter(state.values())).device
        keys = (noise.uniform((B,), device) * 2**31).long().cpu()
        draws = SeededNoise(keys.repeat_interleave(J) * J + torch.arange(J).repeat(B))
        start = {k: v.repeat_interleave(J, 0) for k, v in state.items()}
        mean, std = self.initial(B, warm, device)
        for _ in range(cfg.iterations):
            actions = self.sample(mean, std, draws, B)
            score = self.score(start, actions.flatten(0, 1), draws).view(B, J)
            elite = actions[torch.arange(B, device=device)[:, None], score.topk(cfg.top_k, dim=1).indices]
            mean, std = self.refit(elite)
        first = mean[:, 0].argmax(-1) if cfg.discrete else mean[:, 0]
        return first, torch.cat([mean[:, 1:], self.initial(B, None, device)[0][:, :1]], 1)

    def initial(self, B: int, warm: torch.Tensor | None, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The search's first distribution: (probabilities, unused) for discrete actions,
        (mean, std) for a box, whose std is always the box's half width."""
        cfg = self.cfg
        if cfg.discrete:
            uniform = torch.full((B, cfg.horizon, cfg.outputs), 1 / cfg.outputs, device=device)
            return (uniform if warm is None else WARM_MIX * warm + (1 - WARM_MIX) * uniform), uniform
        low, high = torch.tensor(cfg.low, device=device), torch.tensor(cfg.high, device=device)
        std = ((high - low) / 2).expand(B, cfg.horizon, -1)
        return ((low + high) / 2).expand(B, cfg.horizon, -1) if warm is None else warm, std

    def sample(self, mean: torch.Tensor, std: torch.Tensor, draws: SeededNoise, B: int) -> torch.Tensor:
        """J candidates per env: (B, J, H) action indices, or (B, J, H, A) clipped to the box."""
        cfg = self.cfg
        shape = (B * cfg.candidates, cfg.horizon)
        if cfg.discrete:
            logits = mean.clamp_min(1e-12).log().repeat_interleave(cfg.candidates, 0)
            return categorical(logits, draws.uniform(shape, mean.device)).view(B, cfg.candidates, cfg.horizon)
        eps = draws.normal((*shape, cfg.outputs), mean.device).view(B, cfg.candidates, cfg.horizon, -1)
        a = mean[:, None] + std[:, None] * eps
        return torch.maximum(torch.minimum(a, a.new_tensor(cfg.high)), a.new_tensor(cfg.low))

    def refit(self, elite: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The distribution of the top K: action frequencies, or mean and std."""
        if self.cfg.discrete:
            probs = torch.nn.functional.one_hot(elite, self.cfg.outputs).float().mean(1)
            return probs, probs
        return elite.mean(1), elite.std(1, correction=0)

    def score(self, start: State, actions: torch.Tensor, noise: Noise) -> torch.Tensor:
        """Each row's discounted imagined return: sum_k gamma^k P(alive before k) r_k, where
        M's p(done_k) ends the dream after step k, so a predicted end cuts the return."""
        cfg, state = self.cfg, start
        total = torch.zeros(len(actions), device=actions.device)
        weight = torch.ones_like(total)
        for k in range(cfg.horizon):
            state, _, r, p_done = self.m.imagine(state, self.m_input(actions[:, k]), cfg.temperature, noise)
            total += weight * (torch.ones_like(r) if cfg.survival else r.float())
            weight = weight * cfg.gamma * (1 - p_done.float())
        return total


PLAN = "plan"  # the key under which a planning agent carries its warm start along with M's state


class PlanningAgent(Agent):
    """V, M and the planner: acts like any Agent in the real-env loops. The warm start rides
    in the state dict, so when finished envs leave a lockstep batch their plans leave with them."""

    def __init__(self, vae: VAE, m: WorldModel, planner: Planner, device: torch.device, real_z: str = "mean") -> None:
        super().__init__(vae, m, planner, device, real_z)  # type: ignore[arg-type]  (m_input is all the loops use of c)
        self.planner = planner

    @torch.no_grad()
    def step(
        self, state: State, a_prev: torch.Tensor | None, frames: np.ndarray, params: torch.Tensor, noise: Noise,
    ) -> tuple[State, torch.Tensor]:
        warm = state.get(PLAN)
        state = self.observe_frames({k: v for k, v in state.items() if k != PLAN}, a_prev, frames, noise)
        a, plan = self.planner.plan(state, warm, noise)
        return {**state, PLAN: plan}, a
