"""Stage 1 throughput: generation_script.py against the bare env loop, as ratios.

    python bench/generation.py --env CarRacing-v3 --episodes 4 --workers 2

The bare loop resets and steps the same wrapped env (64x64 frames) with random actions,
saving nothing; generation adds the exploration policy, worker processes and compressed
files. Targets (issue 2): 1 worker >= 0.9 x bare loop, 2 workers >= 1.7 x 1 worker.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.envs import make_env  # noqa: E402


def bare_loop(env_id: str, episodes: int, max_steps: int | None) -> float:
    """Frames/s of reset + step with action_space.sample(), nothing recorded."""
    env = make_env(env_id)
    env.action_space.seed(0)
    frames, t0 = 0, time.perf_counter()
    for ep in range(episodes):
        env.reset(seed=ep)
        for _ in range(max_steps or 10**9):
            _, _, terminated, truncated, _ = env.step(env.action_space.sample())
            frames += 1
            if terminated or truncated:
                break
    env.close()
    return frames / (time.perf_counter() - t0)


def generation(env_id: str, episodes: int, workers: int, max_steps: int | None) -> float:
    """Frames/s that generation_script.py reports for a whole run (worker start-up included)."""
    with tempfile.TemporaryDirectory() as root:
        cmd = [sys.executable, str(ROOT / "generation_script.py"), "--env", env_id, "--rootdir", root,
               "--rollouts", str(episodes), "--threads", str(workers)]
        if max_steps:
            cmd += ["--max-steps", str(max_steps)]
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return float(re.search(r"\((\d+) frames/s\)", out).group(1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", default="CarRacing-v3")
    p.add_argument("--episodes", type=int, default=4, help="episodes per worker")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-steps", type=int)
    a = p.parse_args()

    bare = bare_loop(a.env, a.episodes, a.max_steps)
    one = generation(a.env, a.episodes, 1, a.max_steps)
    many = generation(a.env, a.episodes * a.workers, a.workers, a.max_steps)
    print(f"{a.env}: {a.episodes} episodes per worker")
    print(f"  bare env loop, 1 process        {bare:8.0f} frames/s")
    print(f"  generation_script, 1 worker     {one:8.0f} frames/s   "
          f"ratio to bare loop {one / bare:.2f} (target >= 0.90)")
    print(f"  generation_script, {a.workers} workers    {many:8.0f} frames/s   "
          f"ratio to 1 worker {many / one:.2f} (target >= {0.85 * a.workers:.2f})")


if __name__ == "__main__":
    main()
