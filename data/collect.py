"""Play episodes and record them: the loop behind stage 1 (and iterative data collection)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.envs import PixelEnv, make_env
from data.policies import Policy, make_policy
from data.rollouts import Rollout, encode_rollout


def episode_rng(seed: int, index: int) -> np.random.Generator:
    """Episode `index` depends only on (seed, index), never on worker count or order."""
    return np.random.default_rng([seed, index])


def run_episode(
    env: PixelEnv, policy: Policy, rng: np.random.Generator, max_steps: int | None = None
) -> tuple[Rollout, float]:
    """Play one episode; returns the rollout and the env's full return.

    The return includes reward earned during frames the wrapper skips at reset, so it is
    comparable with the raw environment's episode return.
    """
    policy.reset(rng)
    obs, info = env.reset(seed=int(rng.integers(2**31 - 1)))
    ret = float(info.get("reset_return", 0.0))
    frames, actions, rewards, terms, truncs = [], [], [], [], []
    while True:
        a = env.bound_action(policy.act(obs))
        frames.append(obs)
        actions.append(a)
        obs, r, terminated, truncated, _ = env.step(a)
        truncated = truncated or (max_steps is not None and len(frames) >= max_steps)
        rewards.append(r)
        terms.append(terminated)
        truncs.append(truncated and not terminated)
        ret += r
        if terminated or truncated:
            break
    rollout = {
        "observations": np.stack(frames),
        "actions": np.asarray(actions),
        "rewards": np.asarray(rewards, np.float32),
        "terminals": np.asarray(terms, bool),
        "truncations": np.asarray(truncs, bool),
    }
    return rollout, ret


@dataclass(frozen=True)
class EpisodeJob:
    seed: int
    index: int
    max_steps: int | None


def init_generator(env_id: str, policy: str, action_repeat: int = 1) -> tuple[PixelEnv, Policy]:
    """Worker state: one env and one policy, built once per process."""
    env = make_env(env_id, action_repeat)
    return env, make_policy(policy, env.action_space)


def generate_episode(state: tuple[PixelEnv, Policy], job: EpisodeJob) -> tuple[dict[str, float], bytes]:
    """Play episode `job.index`; its length and return, and its compressed file's bytes."""
    env, policy = state
    rollout, ret = run_episode(env, policy, episode_rng(job.seed, job.index), job.max_steps)
    return {"frames": len(rollout["rewards"]), "return": ret}, encode_rollout(rollout)
