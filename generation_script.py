"""Stage 1: record rollouts of an environment to datasets/<env>/.

    python generation_script.py --env CarRacing-v3 --rollouts 1000 --threads 8
    python generation_script.py --env CarRacing-v3 --rollouts 1000 --threads 64 --ray auto
    python generation_script.py --policy controller --logdir exp --rollouts 500
    python generation_script.py --policy controller --method plan --plan-light --logdir exp --rollouts 600

Rerunning tops the dataset up to --rollouts: finished episodes are kept, missing ones are
generated, and each episode depends only on (--seed, its index), with either backend.

--policy controller is Ha & Schmidhuber's iterative training: the trained C of --logdir
(agent/<dynamics>/<method>/best.pt), or PlaNet's planner on its M (--method plan), plays
with --noise exploration, and its episodes go to a
subfolder of the dataset M was trained on (controller_<C's id>/), so retraining M on
that dataset learns from random and controller episodes together.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from tqdm import tqdm

from agent.evaluate import check_env_fits, load_trained, logdir_action_repeat
from agent.plan_flags import METHODS, planner_arguments, planner_settings
from agent.policy import ControllerSpec, init_controller_generator
from data.collect import EpisodeJob, generate_episode, init_generator
from data.dataset import (
    DatasetError,
    episode_stats,
    read_meta,
    rollout_index,
    rollout_path,
    write_meta,
)
from data.envs import FRAME_SIZE, describe_space, make_env
from data.latents import cached_dataset
from data.policies import POLICIES, make_policy, policy_name
from data.rollouts import write_rollout_bytes
from utils.cli import run_main
from utils.device import resolve_device
from utils.io import TMP_MARK, remove_stale_tmp
from utils.logdir import writable_dir
from utils.parallel import open_pool
from utils.runs import append_run
from utils.upstream import DYNAMICS

META_EVERY_S = 5.0


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--env", help="env id (see data/envs.py; default GridWorld-v0, or C's env with --policy controller)")
    p.add_argument("--rollouts", type=int, default=100, help="episodes the dataset should hold")
    p.add_argument("--rootdir", type=Path,
                   help="output folder (default datasets/<env>, or controller_<id>/ inside M's dataset)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="worker processes (or Ray actors), one env each (0: run in this process)")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="run the workers as Ray actors: 'auto' (a running local cluster, else a private one) or a "
                        "cluster address; episodes come back to this process, which writes the dataset")
    p.add_argument("--policy", choices=[*POLICIES, "controller"], default="auto",
                   help="auto: brownian for continuous actions, sticky for discrete; runs: sticky with each "
                        "episode's run length drawn from 1 to 1000 steps (held buttons too); controller: --logdir's "
                        "trained C")
    p.add_argument("--logdir", type=Path, help="--policy controller: the logdir holding V, M and C")
    p.add_argument("--dynamics", choices=list(DYNAMICS), default="mdrnn", help="--policy controller: which M's C")
    p.add_argument("--method", choices=METHODS, default="cmaes",
                   help="--policy controller: which C (plan: PlaNet's planner on M)")
    p.add_argument("--noise", type=float, default=0.1,
                   help="--policy controller: random-action probability (discrete) or Gaussian std in half box "
                        "widths (continuous)")
    p.add_argument("--device", default="cpu", help="--policy controller: where the workers run V, M and C")
    p.add_argument("--max-steps", type=int, help="cap on episode length in agent steps (a truncation)")
    p.add_argument("--action-repeat", type=int,
                   help="env steps per agent step, rewards summed (default 1, or M's with --policy controller); "
                        "every later stage takes it from the dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds one episode may take before its worker counts as hung")
    planner_arguments(p)
    args = p.parse_args()
    args.planner = planner_settings(args)
    if args.rollouts < 1 or args.threads < 0 or (args.max_steps is not None and args.max_steps < 1):
        p.error("--rollouts and --max-steps must be >= 1, --threads >= 0")
    if args.ray and args.threads < 1:
        p.error("--ray needs --threads >= 1 (the number of Ray actors)")
    if (args.policy == "controller") != (args.logdir is not None):
        p.error("--policy controller and --logdir go together")
    if not 0 <= args.noise <= 1:
        p.error("--noise must lie in [0, 1]")
    if args.action_repeat is not None and args.action_repeat < 1:
        p.error("--action-repeat must be >= 1")
    return args


def controller_source(args: argparse.Namespace) -> tuple[ControllerSpec, dict]:
    """Load C once here (a clear error if it is missing or stale) and say what it is."""
    device = resolve_device(args.device)
    _, _, ckpt = load_trained(args.logdir, args.dynamics, args.method, device, args.planner)
    repeat = logdir_action_repeat(args.logdir)
    if args.action_repeat not in (None, repeat):
        raise DatasetError(f"--action-repeat {args.action_repeat}: M in {args.logdir} learned from episodes "
                           f"repeating each action {repeat} times; collect with the same")
    args.action_repeat = repeat
    if args.env and args.env != ckpt["env"]:
        env = make_env(args.env)
        env.close()
        check_env_fits(args.logdir, args.env, env.action_space)
    args.env = args.env or ckpt["env"]
    args.rootdir = args.rootdir or cached_dataset(args.logdir) / f"controller_{ckpt['id'][:8]}"
    spec = ControllerSpec(str(args.logdir.resolve()), args.dynamics, args.method, args.noise, str(device),
                          args.planner, repeat)
    return spec, {"logdir": spec.logdir, "dynamics": args.dynamics, "method": args.method, "c_id": ckpt["id"],
                  "noise": args.noise, **({"planner": args.planner} if args.planner else {})}


def dataset_meta(args: argparse.Namespace, controller: dict | None) -> dict:
    """What defines the dataset; a top-up must agree with it. Also checks env and policy."""
    env = make_env(args.env, args.action_repeat)
    try:
        policy = "ControllerPolicy" if controller else policy_name(make_policy(args.policy, env.action_space))
    except ValueError as e:
        raise DatasetError(str(e)) from e
    finally:
        env.close()
    return {
        "env": args.env,
        "frame_size": [FRAME_SIZE, FRAME_SIZE, 3],
        "action_space": describe_space(env.action_space),
        "policy": policy,
        **({"controller": controller} if controller else {}),
        "seed": args.seed,
        "max_steps": args.max_steps,
        **({"action_repeat": args.action_repeat} if args.action_repeat > 1 else {}),
    }


def main() -> None:
    started = time.monotonic()
    args = parse_args()
    spec, controller = controller_source(args) if args.policy == "controller" else (None, None)
    args.env = args.env or "GridWorld-v0"
    args.action_repeat = args.action_repeat or 1
    args.rootdir = args.rootdir or Path("datasets") / args.env
    meta = dataset_meta(args, controller)
    root: Path = writable_dir(args.rootdir)
    remove_stale_tmp(root)

    old = read_meta(root) or {}
    clash = [k for k in meta if k in old and old[k] != meta[k]]
    if clash:
        diff = ", ".join(f"{k}: {old[k]!r} there, {meta[k]!r} asked" for k in clash)
        raise DatasetError(f"{root} was generated with other settings ({diff}); use another --rootdir")
    stats: dict[str, dict] = old.get("episodes", {})
    # this folder's own episodes only: subfolders (controller episodes) are other datasets
    files = {p.name: p for p in sorted(root.glob("rollout_*.npz")) if TMP_MARK not in p.name}
    stats = {name: stats.get(name) or episode_stats(p) for name, p in files.items()}
    done = {rollout_index(p) for p in files.values()}
    todo = [i for i in range(args.rollouts) if i not in done]

    def save_meta() -> None:
        frames = sum(s["frames"] for s in stats.values())
        write_meta(root, {**meta, "episodes_count": len(stats), "frames": frames, "episodes": stats})

    backend = f"Ray actor(s) at {args.ray}" if args.ray else "worker(s)"
    print(f"{args.env}: {len(done)} episodes in {root}, generating {len(todo)} with {args.threads} {backend}, "
          f"policy {meta['policy']}")
    new_frames, t0, last_save = 0, time.monotonic(), 0.0
    jobs = [EpisodeJob(args.seed, i, args.max_steps) for i in todo]
    init, init_args = (init_controller_generator, (args.env, spec)) if spec else (
        init_generator, (args.env, args.policy, args.action_repeat))
    try:
        with open_pool(args.threads, init, generate_episode, init_args, args.timeout, 1, args.ray,
                       gpus=bool(spec) and spec.device.startswith("cuda")) as pool, \
                tqdm(total=len(jobs), unit="ep") as bar:
            for job, (s, data) in pool.imap_unordered(jobs):
                path = rollout_path(root, job.index)
                write_rollout_bytes(path, data)
                stats[path.name] = s
                new_frames += s["frames"]
                bar.update()
                bar.set_postfix(fps=f"{new_frames / (time.monotonic() - t0):.0f}", refresh=False)
                if time.monotonic() - last_save > META_EVERY_S:
                    save_meta()
                    last_save = time.monotonic()
    finally:
        save_meta()
        remove_stale_tmp(root)

    append_run(root, started)
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
