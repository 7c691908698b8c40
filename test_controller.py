"""Stage 5: evaluate a trained controller (agent/<dynamics>/<method>/best.pt) over many episodes.

    python test_controller.py --logdir exp --episodes 100 --video 3
    python test_controller.py --logdir exp --dynamics rssm --method ac   # the actor-critic on the RSSM
    python test_controller.py --logdir exp --episodes 100 --results results/my_run_seed0.json
    python test_controller.py --logdir exp --method plan --plan-light   # PlaNet's planner on M, no C
    python test_controller.py --logdir exp --random            # the random-policy baseline
    python test_controller.py --logdir exp/kept --episodes 100 # the C rounds.py --keep-best kept
    python test_controller.py --logdir exp --dream --video 2   # C acting inside M, decoded by V
    xvfb-run -s "-screen 0 1400x900x24" python test_controller.py --logdir exp --display --episodes 3

Seeds start at 2^30 by default, above every seed trainagent.py uses, so these episodes were
never seen in training. Prints mean +/- std, min and max; writes eval/<dynamics>_<method>.json
(or random.json, <dynamics>_<method>_dream.json) with every episode and the exact command,
and MP4s of the first --video episodes to eval/videos/. --results also writes the run's
ledger file: every episode, and every stage's seed, commands and wall time (utils/ledger.py).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agent.episodes import REAL_Z, Episode, random_episode
from agent.evaluate import (
    TRAIN_SEEDS,
    AgentSpec,
    RealEvaluator,
    dream_evaluator,
    load_trained,
    logdir_action_repeat,
    logdir_env,
)
from agent.keep import read_kept, seconds_through
from agent.media import Window, write_video
from agent.plan_flags import METHODS, planner_arguments, planner_settings
from data.envs import make_env, time_limit
from data.latents import cached_dataset
from utils.cli import UserError, run_main
from utils.device import resolve_device
from utils.io import write_json
from utils.ledger import stages, write_record
from utils.upstream import DYNAMICS


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--dynamics", choices=list(DYNAMICS), default="mdrnn", help="which M's C")
    p.add_argument("--method", choices=METHODS, default="cmaes",
                   help="which C: a trained one (cmaes, ac), or PlaNet's planner on M (plan: nothing to train)")
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--seed", type=int, default=TRAIN_SEEDS, help="first episode seed (training uses < 2^30)")
    p.add_argument("--video", type=int, default=0, metavar="N", help="write MP4s of the first N episodes")
    p.add_argument("--display", action="store_true", help="show the episodes in a window")
    p.add_argument("--random", action="store_true", help="evaluate a uniformly random policy instead of C")
    p.add_argument("--dream", action="store_true", help="let C act inside M; frames are V's decodings")
    p.add_argument("--temperature", type=float, help="tau of the dream (default: the one C was trained at, or 1)")
    p.add_argument("--max-steps", type=int, help="episode cap (default: the env's time limit)")
    p.add_argument("--real-z", choices=REAL_Z, default="mean",
                   help="what a real frame gives M and C: V's mean, or a draw from V's posterior (what M was "
                        "trained on and dreams; Ha samples)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes for the episodes without video or display (0: this process)")
    p.add_argument("--envs-per-worker", type=int, default=16, help="envs each worker plays in lockstep")
    p.add_argument("--ray", metavar="ADDRESS", help="workers as Ray actors ('auto' or a cluster address)")
    p.add_argument("--device", default="auto")
    p.add_argument("--results", type=Path, metavar="FILE.json",
                   help="also write the run's ledger file (commit it under results/; RESULTS.md is made from those)")
    planner_arguments(p)
    a = p.parse_args()
    a.planner = planner_settings(a)
    if a.method == "plan" and a.dream:
        p.error("the planner acts in the real env only: evaluate it without --dream")
    if a.envs_per_worker < 1:
        p.error("--envs-per-worker must be >= 1")
    if a.episodes < 1 or a.video < 0 or a.workers < 0 or a.seed < 0:
        p.error("--episodes must be >= 1; --video, --workers and --seed >= 0")
    if a.random and a.dream:
        p.error("--random plays the real env; it cannot go with --dream")
    if a.results is not None:
        check_writable(a.results)
    if a.seed < TRAIN_SEEDS:
        print(f"warning: seeds below {TRAIN_SEEDS} may repeat episodes seen in training")
    return a


def check_writable(path: Path) -> None:
    """Fail before any episode is played if the ledger file cannot be written."""
    if path.suffix != ".json":
        raise UserError(f"--results {path}: give a .json file name")
    folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise UserError(f"--results {path}: {folder} is not a writable folder")


def summary(episodes: list[Episode]) -> dict:
    r = np.array([e.ret for e in episodes])
    out = {"mean": float(r.mean()), "std": float(r.std()), "min": float(r.min()), "max": float(r.max()),
           "steps_mean": float(np.mean([e.steps for e in episodes]))}
    successes = [e.success for e in episodes if e.success is not None]
    if successes:
        out["success_rate"] = float(np.mean(successes))
    return out


def describe(name: str, s: dict, n: int) -> str:
    text = f"{name}: {s['mean']:.4g} +/- {s['std']:.3g} over {n} episodes (min {s['min']:.4g}, max {s['max']:.4g})"
    return text + (f", success {100 * s['success_rate']:.1f}%" if "success_rate" in s else "")


def main() -> None:
    started = time.monotonic()
    a = parse_args()
    device = resolve_device(a.device)
    if a.random:  # no C needed: the env M's dataset came from
        agent, params, ckpt = None, None, {"env": logdir_env(a.logdir)}
    else:
        agent, params, ckpt = load_trained(a.logdir, a.dynamics, a.method, device, a.planner)
        agent.real_z = a.real_z
    env_id = ckpt["env"]
    repeat = logdir_action_repeat(a.logdir)
    env = make_env(env_id, repeat)
    max_steps = a.max_steps or time_limit(env)
    fps = max(1, int(env.metadata.get("render_fps") or 30) // repeat)  # one frame per agent step
    seeds = [a.seed + i for i in range(a.episodes)]
    window = Window(f"{env_id} ({'dream' if a.dream else 'real'})", fps) if a.display else None
    videos = a.logdir / "eval" / "videos"
    tag = f"{a.dynamics}_{a.method}"  # each C's results and videos keep their own names

    def frame_sink(i: int, kind: str):
        """(sink, finish) for episode i, or (None, None) when it is neither filmed nor shown."""
        if window is None and i >= a.video:
            return None, None
        frames: list[np.ndarray] = []

        def sink(_row: int, frame: np.ndarray) -> None:
            if window is not None:
                window.show(frame)
            if i < a.video:
                frames.append(frame)

        def finish() -> None:
            if i < a.video:
                write_video(videos / f"{tag}_{kind}_{i:03d}.mp4", frames, fps)
        return sink, finish

    if a.random:
        name, out = "random policy", "random.json"
        episodes = [random_episode(env, sd, max_steps) for sd in tqdm(seeds, desc="random policy", unit="ep",
                                                                      leave=False)]
    else:
        identity = ckpt["identity"]
        if a.dream:
            name, out = "controller in the dream", f"{tag}_dream.json"
            tau = a.temperature or identity.get("temperature") or 1.0
            episodes = dream_episodes(agent, a.logdir, ckpt["vae"], params, seeds, tau, max_steps,
                                      bool(identity.get("survival")), frame_sink)
        else:
            name, out = describe_controller(ckpt), f"{tag}.json"
            episodes = real_episodes(agent, env, params, seeds, max_steps, a, frame_sink,
                                     AgentSpec(str(a.logdir), ckpt["dynamics"], env_id, ckpt["controller"], "cpu",
                                               a.real_z, repeat))
    env.close()
    if window is not None:
        window.close()
    s = summary(episodes)
    print(describe(name, s, len(episodes)))
    (a.logdir / "eval").mkdir(parents=True, exist_ok=True)
    rows = [{"seed": sd, "return": e.ret, "steps": e.steps, "success": e.success}
            for sd, e in zip(seeds, episodes, strict=True)]
    write_json(a.logdir / "eval" / out, {
        "command": shlex.join([Path(sys.executable).name, *sys.argv]), "env": env_id, "what": name, **s,
        "episodes": rows})
    if a.results is not None:
        write_ledger(a, ckpt, env_id, max_steps, rows, s, time.monotonic() - started, str(device))
        print(f"ledger file: {a.results}")
    if a.video:
        print(f"videos in {videos}")


def describe_controller(ckpt: dict) -> str:
    if "generation" in ckpt:
        return f"controller (generation {ckpt['generation']})"
    if "update" in ckpt:
        return f"controller (update {ckpt['update']})"
    c = ckpt["controller"]
    return f"planner (H {c['horizon']}, I {c['iterations']}, J {c['candidates']}, K {c['top_k']})"


def write_ledger(a: argparse.Namespace, ckpt: dict, env_id: str, max_steps: int, rows: list[dict], s: dict,
                 seconds: float, device: str) -> None:
    """The run's results/ file: this evaluation and the stages that made the evaluated C."""
    identity = ckpt.get("identity", {})
    # the planner learns nothing in the real env; a C evolved in the dream may still be chosen on real episodes
    select = identity.get("select") or ("dream" if identity.get("dream") else "real")
    kept = read_kept(a.logdir)  # a C kept across online rounds for its real selection score, if this is it
    kept = kept if kept is not None and kept.get("c_id") == ckpt.get("id") else None  # not a C trained again there
    if kept is not None:
        select = "real"
    dream_only = None if a.random else a.planner is not None or select == "dream"
    evaluation = {"where": "dream" if a.dream else "real", "episodes": a.episodes, "first_seed": a.seed,
                  "max_steps": max_steps, "real_z": a.real_z, "action_repeat": logdir_action_repeat(a.logdir)}
    if kept is not None:
        evaluation["kept"] = kept
    if a.planner is not None:
        evaluation["planner"] = ckpt["controller"]
    if a.dream:
        evaluation["temperature"] = a.temperature or identity.get("temperature") or 1.0
    info = stages(a.logdir, cached_dataset(a.logdir), None if a.random else a.dynamics,
                  None if a.random or a.planner is not None else a.method)
    if kept is not None and "rounds" in info:  # the rounds' time up to the kept C's round, not the whole run's
        through = seconds_through(a.logdir, kept["round"])
        info["rounds"]["seconds"] = info["rounds"]["seconds"] if through is None else through
    write_record(a.results, env=env_id, dynamics=None if a.random else a.dynamics,
                 controller="random" if a.random else a.method, dream_only=dream_only, evaluation=evaluation,
                 episodes=rows, summary=s, stage_info=info, eval_seconds=seconds, device=device)


def real_episodes(agent, env, params, seeds, max_steps, a, frame_sink, spec) -> list[Episode]:
    """Episodes with video or display run here; the rest in parallel workers."""
    shown = len(seeds) if a.display else min(a.video, len(seeds))
    episodes: list[Episode] = []
    for i in range(shown):
        sink, finish = frame_sink(i, "episode")
        episodes += agent.real_episodes([env], params, [seeds[i]], max_steps, sink)
        if finish is not None:
            finish()
    rest = seeds[shown:]
    if rest:
        evaluator = RealEvaluator(spec, min(a.workers, len(rest)), None, max_steps, a.envs_per_worker, a.ray)
        try:
            _, more = evaluator(np.repeat(params.numpy()[None], len(rest), 0), rest)
        finally:
            evaluator.close()
        episodes += more
    return episodes


def dream_episodes(agent, logdir, vae_id, params, seeds, tau, max_steps, survival, frame_sink) -> list[Episode]:
    """All dreams as one batch from held-out episode starts; V decodes the ones shown."""
    dreams = dream_evaluator(agent, logdir, vae_id, tau, max_steps, survival, held_out=True)
    seeds_t = torch.tensor(seeds)
    ret, steps, zs = agent.dream(params.expand(len(seeds), -1), dreams.starts_for(seeds_t), seeds_t, tau, max_steps,
                                 survival, record=True)
    z = torch.stack(zs, 1)  # (B, T + 1, Z)
    for i in range(len(seeds)):
        sink, finish = frame_sink(i, "dream")
        if finish is not None:
            with torch.no_grad():
                x = agent.vae.decode(z[i, : int(steps[i]) + 1])
            for frame in x.clamp(0, 1).mul(255).byte().permute(0, 2, 3, 1).cpu().numpy():
                sink(i, frame)
            finish()
    return [Episode(float(r), int(n)) for r, n in zip(ret, steps, strict=True)]


if __name__ == "__main__":
    run_main(main)
