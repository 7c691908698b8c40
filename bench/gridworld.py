"""GridWorld speed: steps/s through gymnasium.make and through our 64x64 wrapper.

    python bench/gridworld.py --steps 100000

Target (issue 2): at least 10,000 steps/s, resets included.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.envs import make_env


def steps_per_s(env: gym.Env, steps: int) -> float:
    env.reset(seed=0)
    env.action_space.seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100_000)
    a = p.parse_args()
    for env_id in ("GridWorld-v0", "GridWorldContinuous-v0"):
        raw = steps_per_s(gym.make(env_id), a.steps)
        wrapped = steps_per_s(make_env(env_id), a.steps)
        print(f"{env_id:24s} gymnasium.make {raw:9.0f} steps/s   make_env {wrapped:9.0f} steps/s   (target >= 10000)")


if __name__ == "__main__":
    main()
