"""Is M's dream as hard as the game? Simple policies scored in the dream and in the real env.

    python bench/dream_check.py --logdir exp/doom_L10 --temperature 1.15 --survival

A C evolved in the dream transfers only if the dream does not overrate what it learns. Two
cheap checks, run before spending a search on an M: the uniformly random policy, and each
constant action (discrete action spaces), each scored over --dreams dreams that start from
held-out episode starts and over --episodes real episodes (seeds from 2^30, as
test_controller uses). On Doom, M's seed 1 rated holding one button at 1343 steps against
171 in the game, and the C evolved in its dream held that button (RESULTS.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.episodes import Agent, play, random_episode
from agent.evaluate import TRAIN_SEEDS, dream_evaluator, load_world, logdir_action_repeat, logdir_env
from data.envs import make_env, time_limit
from models.controller import ControllerConfig, LinearController


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--dynamics", default="mdrnn")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--survival", action="store_true", help="score +1 per step survived (Doom), not M's reward")
    p.add_argument("--dreams", type=int, default=128)
    p.add_argument("--episodes", type=int, default=30)
    a = p.parse_args()
    cpu = torch.device("cpu")
    vae, m, ids = load_world(a.logdir, a.dynamics, cpu)
    env = make_env(logdir_env(a.logdir), logdir_action_repeat(a.logdir))
    if not hasattr(env.action_space, "n"):
        raise SystemExit("dream_check.py needs a discrete action space (constant actions)")
    n, limit = int(env.action_space.n), time_limit(env)
    # a linear C with zero weights acts on its bias alone: argmax for a constant action, or
    # a uniform draw from the episode's noise when sampling
    cfgs = {"random": ControllerConfig(m.feature_size, n, True, sample=True)}
    cfgs |= {f"action {k} always": ControllerConfig(m.feature_size, n, True) for k in range(n)}
    seeds = [TRAIN_SEEDS + i for i in range(a.episodes)]
    dream_seeds = torch.arange(a.dreams)
    starts = dream_evaluator(Agent(vae, m, LinearController(cfgs["random"]), cpu), a.logdir, ids["vae"],
                             a.temperature, limit, a.survival, held_out=True).starts_for(dream_seeds)
    print(f"{a.logdir}, tau {a.temperature}: dream ({a.dreams} dreams) against real ({a.episodes} episodes)")
    for i, (name, cfg) in enumerate(cfgs.items()):
        agent = Agent(vae, m, LinearController(cfg), cpu)
        params = torch.zeros(a.dreams, cfg.n_params)
        if i:
            params[:, m.feature_size * n + i - 1] = 1.0
        with torch.no_grad():
            dreamt = agent.dream(params, starts, dream_seeds, a.temperature, limit, a.survival)[0].double().numpy()
        if i:
            real = [play([env], lambda _f, _rows, k=i - 1: [k], [s])[0] for s in seeds]
        else:
            real = [random_episode(env, s) for s in seeds]
        score = np.array([e.steps if a.survival else e.ret for e in real], np.float64)
        print(f"  {name:>16}: dream {dreamt.mean():8.1f} +/- {dreamt.std():7.1f}   "
              f"real {score.mean():8.1f} +/- {score.std():7.1f}")


if __name__ == "__main__":
    main()
