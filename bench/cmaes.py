"""Stage 4 throughput: CMA-ES generations in the dream, and V, M and C in the real-env loop.

    python bench/cmaes.py                       # Doom-size dream, CarRacing real env
    python bench/cmaes.py --env VizdoomTakeCover-v1 --z 64 --hidden 512

1. Seconds per dream generation: population 64 x 16 samples as one batch of 1024 dreams at
   Doom size (z 64, LSTM 512 or --dream-hidden, 3 actions), every dream running --horizon steps.
2. The same generation evaluated one candidate at a time (16 dreams per call): the ratio
   batched / one-at-a-time steps/s is what batching buys.
3. Real-env frames/s with V, M and C acting, against the raw env stepping random actions,
   in one process on one thread as in a worker; target >= 0.75. Shown for one env and for
   16 envs in lockstep (--envs-per-worker), where V, M and C run batched.
Weights are untrained: inference costs the same, and the done head is biased so that no
dream ends early.
4. With --logdir, a first CMA-ES generation (sigma 0.1 around zero) dreamt in that logdir's
   trained M at its env's time limit, where dreams end at uneven times: seconds with finished
   dreams leaving the batch against the whole batch stepped to the end (ratio).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.episodes import Agent, random_episode
from agent.evaluate import dream_evaluator, load_world, logdir_action_repeat, logdir_env
from data.envs import make_env, time_limit
from models.controller import ControllerConfig, LinearController
from models.mdrnn import MDRNN, MDRNNConfig
from models.vae import VAE, VAEConfig


def agent_of(z: int, hidden: int, space, device: torch.device) -> Agent:
    vae = VAE(VAEConfig(latent_size=z)).eval()
    m = MDRNN(MDRNNConfig(z_size=z, action_size=3 if space is None else ControllerConfig.for_space(1, space).outputs,
                          hidden_size=hidden)).eval()
    with torch.no_grad():
        m.mdn.bias[-1] = -20.0  # p(done) ~ 0: every dream runs the whole horizon
    cfg = ControllerConfig(m.feature_size, 3, True) if space is None else ControllerConfig.for_space(
        m.feature_size, space)
    return Agent(vae, m, LinearController(cfg), device)


def dream_generation(agent: Agent, pop: int, samples: int, horizon: int, per_call: int) -> float:
    """Seconds to evaluate pop x samples dreams, per_call dreams at a time."""
    params = 0.1 * torch.randn(pop * samples, agent.c.cfg.n_params)
    starts = torch.randn(pop * samples, 2 * agent.vae.cfg.z_size)
    seeds = torch.arange(pop * samples)
    t = time.perf_counter()
    for i in range(0, pop * samples, per_call):
        agent.dream(params[i : i + per_call], starts[i : i + per_call], seeds[i : i + per_call], 1.15, horizon,
                    survival=True)
    return time.perf_counter() - t


def real_rate(env_id: str, agent: Agent | None, n_envs: int, episodes: int) -> float:
    """Frames/s of `episodes` episodes: random actions on the raw env, or the agent acting."""
    envs = [make_env(env_id) for _ in range(n_envs)]
    for env in envs:
        env.reset(seed=0)  # a worker keeps its envs: their start-up (0.14 s per Doom game) is not per episode
    steps, t = 0, time.perf_counter()
    for e in range(0, episodes, n_envs):
        seeds = list(range(e, e + n_envs))
        if agent is None:
            steps += sum(random_episode(env, s).steps for env, s in zip(envs, seeds, strict=True))
        else:
            params = 0.1 * torch.randn(n_envs, agent.c.cfg.n_params)
            steps += sum(ep.steps for ep in agent.real_episodes(envs, params, seeds))
    rate = steps / (time.perf_counter() - t)
    for env in envs:
        env.close()
    return rate


def uneven_dreams(logdir: Path, pop: int, samples: int, temperature: float) -> None:
    """Part 4: a real first generation in a trained M, compacted against the whole batch
    (record=True keeps every row to the end)."""
    cpu = torch.device("cpu")
    vae, m, ids = load_world(logdir, "mdrnn", cpu)
    env = make_env(logdir_env(logdir), logdir_action_repeat(logdir))
    space, limit = env.action_space, time_limit(env)
    agent = Agent(vae, m, LinearController(ControllerConfig.for_space(m.feature_size, space)), cpu)
    dreams = dream_evaluator(agent, logdir, ids["vae"], temperature, limit, True, held_out=False)
    n = pop * samples
    params = 0.1 * torch.randn(n, agent.c.cfg.n_params, generator=torch.Generator().manual_seed(0))
    seeds = torch.arange(n)
    times = {}
    for record in (False, True):
        t = time.perf_counter()
        _, steps, _ = agent.dream(params, dreams.starts_for(seeds), seeds, temperature, limit, True, record=record)
        times[record] = time.perf_counter() - t
    print(f"first generation in {logdir}'s M, {pop} x {samples} dreams, tau {temperature}, cap {limit}: dreams "
          f"last {steps.float().mean():.0f} steps on average, {int(steps.max())} at most; {times[False]:.1f} s "
          f"with finished dreams leaving the batch, {times[True]:.1f} s stepping the whole batch: "
          f"ratio {times[True] / times[False]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pop-size", type=int, default=64)
    p.add_argument("--n-samples", type=int, default=16)
    p.add_argument("--horizon", type=int, default=100, help="dream steps per episode")
    p.add_argument("--dream-hidden", type=int, default=512, help="M's LSTM size for the dream part")
    p.add_argument("--env", default="CarRacing-v3")
    p.add_argument("--z", type=int, default=32, help="V's latent size for the real-env part")
    p.add_argument("--hidden", type=int, default=256, help="M's LSTM size for the real-env part")
    p.add_argument("--episodes", type=int, default=16, help="real episodes per measurement")
    p.add_argument("--envs-per-worker", type=int, default=16)
    p.add_argument("--logdir", type=Path, help="also time a dream generation in this logdir's trained MDN-RNN")
    p.add_argument("--temperature", type=float, default=1.15, help="tau of the --logdir dreams")
    a = p.parse_args()
    torch.set_num_threads(1)
    cpu = torch.device("cpu")

    doom = agent_of(64, a.dream_hidden, None, cpu)
    n = a.pop_size * a.n_samples
    with torch.no_grad():
        dream_generation(doom, 4, 4, 5, 16)  # warm-up
        batched = dream_generation(doom, a.pop_size, a.n_samples, a.horizon, n)
        single = dream_generation(doom, a.pop_size, a.n_samples, a.horizon, a.n_samples)
    steps = n * a.horizon
    print(f"dream generation, population {a.pop_size} x {a.n_samples}, {a.horizon} steps, z 64, LSTM {a.dream_hidden}: "
          f"{batched:.2f} s batched ({steps / batched:,.0f} steps/s), {single:.2f} s one candidate at a time "
          f"({steps / single:,.0f} steps/s): ratio {single / batched:.2f}")

    space = make_env(a.env).action_space
    agent = agent_of(a.z, a.hidden, space, cpu)
    raw = real_rate(a.env, None, 1, a.episodes)
    print(f"{a.env}: raw env {raw:,.0f} frames/s (random actions, one process, one thread)")
    for n_envs in sorted({1, a.envs_per_worker}):
        rate = real_rate(a.env, agent, n_envs, a.episodes)
        print(f"  with V (z {a.z}), M (LSTM {a.hidden}) and C acting, {n_envs} env(s) in lockstep: "
              f"{rate:,.0f} frames/s = {rate / raw:.2f} of the raw env (target >= 0.75)")
    if a.logdir:
        with torch.no_grad():
            uneven_dreams(a.logdir, a.pop_size, a.n_samples, a.temperature)


if __name__ == "__main__":
    main()
