"""Stage 1: record random-policy rollouts of an environment to datasets/<env>/.

    python generation_script.py --env CarRacing-v3 --rollouts 1000 --threads 8

Rerunning tops the dataset up to --rollouts: finished episodes are kept, missing ones are
generated, and each episode depends only on (--seed, its index).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tqdm import tqdm

from data.collect import EpisodeJob, generate_episode, init_generator
from data.dataset import (
    DatasetError,
    episode_stats,
    list_rollouts,
    read_meta,
    rollout_index,
    rollout_path,
    write_meta,
)
from data.envs import FRAME_SIZE, describe_space, make_env
from data.policies import POLICIES, make_policy
from utils.cli import run_main
from utils.io import remove_stale_tmp
from utils.parallel import WorkerPool

META_EVERY_S = 5.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="GridWorld-v0", help="env id (see data/envs.py)")
    p.add_argument("--rollouts", type=int, default=100, help="episodes the dataset should hold")
    p.add_argument("--rootdir", type=Path, help="output folder (default datasets/<env>)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="worker processes, one env each (0: run in this process)")
    p.add_argument("--policy", choices=POLICIES, default="auto",
                   help="auto: brownian for continuous actions, sticky for discrete")
    p.add_argument("--max-steps", type=int, help="cap on episode length (a truncation)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds one episode may take before its worker counts as hung")
    args = p.parse_args()
    if args.rollouts < 1 or args.threads < 0 or (args.max_steps is not None and args.max_steps < 1):
        p.error("--rollouts and --max-steps must be >= 1, --threads >= 0")
    args.rootdir = args.rootdir or Path("datasets") / args.env
    return args


def dataset_meta(args: argparse.Namespace) -> dict:
    """What defines the dataset; a top-up must agree with it. Also checks env and policy."""
    env = make_env(args.env)
    try:
        policy = make_policy(args.policy, env.action_space)
    except ValueError as e:
        raise DatasetError(str(e)) from e
    finally:
        env.close()
    return {
        "env": args.env,
        "frame_size": [FRAME_SIZE, FRAME_SIZE, 3],
        "action_space": describe_space(env.action_space),
        "policy": type(policy).__name__,
        "seed": args.seed,
        "max_steps": args.max_steps,
    }


def main() -> None:
    args = parse_args()
    meta = dataset_meta(args)
    root: Path = args.rootdir
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_tmp(root)

    old = read_meta(root) or {}
    clash = [k for k in meta if k in old and old[k] != meta[k]]
    if clash:
        diff = ", ".join(f"{k}: {old[k]!r} there, {meta[k]!r} asked" for k in clash)
        raise DatasetError(f"{root} was generated with other settings ({diff}); use another --rootdir")
    stats: dict[str, dict] = old.get("episodes", {})
    files = {p.name: p for p in list_rollouts(root)}
    stats = {name: stats.get(name) or episode_stats(p) for name, p in files.items()}
    done = {rollout_index(p) for p in files.values()}
    todo = [i for i in range(args.rollouts) if i not in done]

    def save_meta() -> None:
        frames = sum(s["frames"] for s in stats.values())
        write_meta(root, {**meta, "episodes_count": len(stats), "frames": frames, "episodes": stats})

    print(f"{args.env}: {len(done)} episodes in {root}, generating {len(todo)} with {args.threads} worker(s)")
    new_frames, t0, last_save = 0, time.monotonic(), 0.0
    jobs = [EpisodeJob(str(root), args.seed, i, args.max_steps) for i in todo]
    try:
        with WorkerPool(args.threads, init_generator, generate_episode, (args.env, args.policy),
                        timeout=args.timeout) as pool, tqdm(total=len(jobs), unit="ep") as bar:
            for job, s in pool.imap_unordered(jobs):
                stats[rollout_path(root, job.index).name] = s
                new_frames += s["frames"]
                bar.update()
                bar.set_postfix(fps=f"{new_frames / (time.monotonic() - t0):.0f}", refresh=False)
                if time.monotonic() - last_save > META_EVERY_S:
                    save_meta()
                    last_save = time.monotonic()
    finally:
        save_meta()
        remove_stale_tmp(root)

    elapsed = time.monotonic() - t0
    returns = [s["return"] for s in stats.values()]
    frames = sum(s["frames"] for s in stats.values())
    print(
        f"dataset {root}: {len(stats)} episodes, {frames} frames, "
        f"mean return {sum(returns) / max(1, len(returns)):.3f}; "
        f"this run: {len(jobs)} episodes, {new_frames} frames in {elapsed:.1f} s "
        f"({new_frames / max(elapsed, 1e-9):.0f} frames/s)"
    )


if __name__ == "__main__":
    run_main(main)
