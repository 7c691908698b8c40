"""The CEM planner's speed (agent/planner.py).

    python bench/planner.py [--model mdrnn rssm tssm] [--threads 1]

1. Imagined steps/s of one planning step (J candidates x H steps x I refits, all in one
   batch) divided by imagined steps/s of M's own imagination stepping the same batch of J
   for H x I steps with the same seeded noise: what sampling, scoring and refitting cost on
   top of M. Target >= 0.8. The median of REPEATS runs, A and B taken in turn.
2. Seconds per real step (V encodes the frame, M filters it, the planner searches) for one
   env, at CarRacing size (z 32, a Box(3)) and Doom size (z 64, Discrete(3)), with PlaNet's
   budget and with --plan-light's.
Untrained V and M of traindynamics.py's default sizes (the LSTM of Ha's Doom M at z 64):
speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.planner import LIGHT, PLANET, Planner, PlannerConfig, PlanningAgent  # noqa: E402
from bench.dynamics import build  # noqa: E402
from models.noise import SeededNoise  # noqa: E402
from models.vae import VAE, VAEConfig  # noqa: E402

REPEATS = 3
STEPS_PER_RUN = 60_000  # imagined steps per measurement: about a second, whatever the budget
SPACES = {32: {"type": "box", "low": [-1.0, 0.0, 0.0], "high": [1.0, 1.0, 1.0]},  # CarRacing
          64: {"type": "discrete", "n": 3}}  # Doom TakeCover
NAMES = {32: "CarRacing", 64: "Doom"}


def start_state(m: torch.nn.Module, batch: int) -> dict[str, torch.Tensor]:
    return m.observe(m.initial_state(batch), torch.randn(batch, m.z_size), None)


def plans_per_run(cfg: PlannerConfig) -> int:
    return -(-STEPS_PER_RUN // (cfg.candidates * cfg.horizon * cfg.iterations))


@torch.no_grad()
def planner_rate(m: torch.nn.Module, cfg: PlannerConfig) -> float:
    planner, state, n = Planner(m, cfg), start_state(m, 1), plans_per_run(cfg)
    t0 = time.perf_counter()
    for i in range(n):
        planner.plan(state, None, SeededNoise(torch.tensor([i])))
    return n * cfg.candidates * cfg.horizon * cfg.iterations / (time.perf_counter() - t0)


@torch.no_grad()
def imagination_rate(m: torch.nn.Module, cfg: PlannerConfig) -> float:
    first = {k: v.repeat_interleave(cfg.candidates, 0) for k, v in start_state(m, 1).items()}
    noise, n = SeededNoise(torch.arange(cfg.candidates)), plans_per_run(cfg)
    a = torch.rand(cfg.candidates, m.action_size)
    t0 = time.perf_counter()
    for _ in range(n * cfg.iterations):
        state = first
        for _ in range(cfg.horizon):
            state, *_ = m.imagine(state, a, cfg.temperature, noise)
    return n * cfg.candidates * cfg.horizon * cfg.iterations / (time.perf_counter() - t0)


@torch.no_grad()
def real_step_seconds(m: torch.nn.Module, z: int, budget: dict, steps: int) -> float:
    cfg = PlannerConfig.for_actions(SPACES[z], **budget)
    agent = PlanningAgent(VAE(VAEConfig(latent_size=z)).eval(), m, Planner(m, cfg), torch.device("cpu"))
    frames = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    noise = SeededNoise(torch.tensor([0]))
    state, a_prev = m.initial_state(1), None
    t0 = time.perf_counter()
    for _ in range(steps):
        state, a = agent.step(state, a_prev, frames, torch.zeros(0), noise)
        a_prev = agent.c.m_input(a)
    return (time.perf_counter() - t0) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", default=["mdrnn", "rssm", "tssm"])
    p.add_argument("--threads", type=int, default=1, help="torch threads (one real env's worker has one)")
    p.add_argument("--steps", type=int, default=3, help="real steps timed per budget")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} thread(s)")
    for name in a.model:
        for z in (32, 64):
            m = build(name, z).eval()
            for label, budget in (("PlaNet", PLANET), ("light", LIGHT)):
                cfg = PlannerConfig.for_actions(SPACES[z], **budget)
                planner_rate(m, cfg)  # warm-up
                plan, imagine = [], []
                for _ in range(REPEATS):
                    plan.append(planner_rate(m, cfg))
                    imagine.append(imagination_rate(m, cfg))
                ratio = statistics.median(plan) / statistics.median(imagine)
                step = real_step_seconds(m, z, budget, a.steps)
                print(f"{name:5s} {NAMES[z]:9s} {label:6s} J {cfg.candidates:4d}: planner "
                      f"{statistics.median(plan):9,.0f} imagined steps/s, M alone {statistics.median(imagine):9,.0f}"
                      f" -> ratio {ratio:.2f} (target >= 0.8); {step:.3f} s per real step", flush=True)


if __name__ == "__main__":
    main()
