"""Rollout throughput of the two pool backends: local processes and Ray actors, as ratios.

    python bench/rollouts.py --env GridWorld-v0 --episodes 200 --workers 2
    python bench/rollouts.py --env CarRacing-v3 --episodes 8 --workers 2 --ray ADDRESS

Each run plays the same generation episodes (random policy, compressed files shipped back
to this process, which discards them) and times only the episodes: pool start-up (and Ray's
own start) is left out, since a long collection pays it once. Ratios to compare: 2 workers
against 1 on each backend, and Ray against local with the same worker count.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.collect import EpisodeJob, generate_episode, init_generator  # noqa: E402
from utils.parallel import open_pool  # noqa: E402


def rollouts_per_s(env_id: str, episodes: int, workers: int, ray: str | None) -> tuple[float, float]:
    """(episodes/s, frames/s) of `episodes` generation episodes on `workers` workers."""
    jobs = [EpisodeJob(0, i, None) for i in range(episodes)]
    with open_pool(workers, init_generator, generate_episode, (env_id, "auto"), None, 1, ray) as pool:
        list(pool.imap_unordered(jobs[:workers]))  # every worker is up and has played once
        t0, frames = time.perf_counter(), 0
        for _, (stats, _) in pool.imap_unordered(jobs):
            frames += stats["frames"]
        seconds = time.perf_counter() - t0
    return episodes / seconds, frames / seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="GridWorld-v0")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ray", default="auto", help="Ray cluster address ('auto': a private local instance)")
    a = p.parse_args()
    rows = {}
    for backend in ("local", "ray"):
        for n in (1, a.workers):
            rows[backend, n] = rollouts_per_s(a.env, a.episodes, n, a.ray if backend == "ray" else None)
            eps, fps = rows[backend, n]
            print(f"{a.env} {backend:5s} {n} worker(s): {eps:8.2f} rollouts/s {fps:9.0f} frames/s", flush=True)
    for backend in ("local", "ray"):
        print(f"{backend}: {a.workers} workers / 1 worker = {rows[backend, a.workers][1] / rows[backend, 1][1]:.2f}")
    for n in (1, a.workers):
        print(f"{n} worker(s): ray / local = {rows['ray', n][1] / rows['local', n][1]:.2f}")


if __name__ == "__main__":
    main()
