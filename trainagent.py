"""Stage 4: train C, the controller, on top of V and M from --logdir.

    python trainagent.py --method cmaes --logdir exp --pop-size 64 --n-samples 16 --max-workers 8
    python trainagent.py --method cmaes --logdir exp --dream --temperature 1.15

CMA-ES evolves the linear controller in the real env (parallel worker processes, each with
V, M, C and one env) or, with --dream, entirely inside M (the whole population times
n-samples as one batch). Every --eval-every generations the generation's best candidate
plays --eval-episodes fixed selection episodes in the same world; best.pt changes only when
that score improves. Rerunning resumes the search exactly; --noreload starts afresh.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from agent.cmaes import SearchSettings, run_search
from agent.episodes import Agent
from agent.evaluate import AgentSpec, DreamEvaluator, RealEvaluator, dream_evaluator, load_world
from data.dataset import read_meta
from data.envs import make_env, time_limit
from data.latents import cached_dataset
from models.controller import ControllerConfig, LinearController
from utils.checkpoint import CheckpointError
from utils.cli import run_main
from utils.device import resolve_device
from utils.logdir import StageDir
from utils.upstream import DYNAMICS

SURVIVAL_ENVS = ("VizdoomTakeCover-v1",)  # Ha's Doom dream: +1 per step survived


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["cmaes"], default="cmaes")
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--dynamics", choices=list(DYNAMICS), default="mdrnn", help="which M in the logdir")
    p.add_argument("--env", help="env id (default: the env of the dataset M was trained on)")
    p.add_argument("--pop-size", type=int, default=64)
    p.add_argument("--n-samples", type=int, default=16, help="episodes per candidate per generation")
    p.add_argument("--sigma", type=float, default=0.1, help="CMA-ES initial step size")
    p.add_argument("--generations", type=int, default=100)
    p.add_argument("--target-return", type=float, help="stop once a selection score reaches it")
    p.add_argument("--eval-every", type=int, default=5, help="generations between selection evaluations")
    p.add_argument("--eval-episodes", type=int, default=64, help="episodes of each selection evaluation")
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 1,
                   help="real-env worker processes (0: run in this process)")
    p.add_argument("--envs-per-worker", type=int, default=16, help="envs each worker plays in lockstep")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds a worker may spend on one chunk of --envs-per-worker episodes")
    p.add_argument("--dream", action="store_true", help="evolve entirely inside M")
    p.add_argument("--temperature", type=float, default=1.0, help="tau of the dream (Ha: 1.15 for Doom)")
    p.add_argument("--dream-reward", choices=["auto", "head", "survival"], default="auto",
                   help="M's reward head, or +1 per step survived (auto: survival for TakeCover)")
    p.add_argument("--discrete", choices=["argmax", "sample"], default="argmax",
                   help="discrete actions: argmax of C's outputs, or sampled from their softmax")
    p.add_argument("--max-steps", type=int, help="episode cap (default: the env's time limit)")
    p.add_argument("--noreload", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    if min(a.pop_size, a.n_samples, a.generations, a.eval_every, a.eval_episodes, a.envs_per_worker) < 1:
        p.error("--pop-size, --n-samples, --generations, --eval-every, --eval-episodes and --envs-per-worker "
                "must be >= 1")
    if a.pop_size < 2:
        p.error("--pop-size must be >= 2")
    if a.sigma <= 0 or a.temperature <= 0 or a.timeout <= 0 or a.max_workers < 0 or a.seed < 0:
        p.error("--sigma, --temperature and --timeout must be > 0; --max-workers and --seed >= 0")
    return a


def main() -> None:
    a = parse_args()
    device = resolve_device(a.device)
    try:
        dataset = cached_dataset(a.logdir)
    except FileNotFoundError as e:
        raise CheckpointError(str(e)) from e
    env_id = a.env or (read_meta(dataset) or {}).get("env")
    if not env_id:
        raise CheckpointError(f"{dataset} does not say which env it holds: pass --env")
    env = make_env(env_id)
    max_steps = a.max_steps or time_limit(env)
    vae, m, ids = load_world(a.logdir, a.dynamics, device)  # checks that M was trained on this V
    cfg = ControllerConfig.for_space(m.feature_size, env.action_space, sample=a.discrete == "sample")
    env.close()
    agent = Agent(vae, m, LinearController(cfg), device)
    survival = a.dream_reward == "survival" or (a.dream_reward == "auto" and env_id in SURVIVAL_ENVS)

    stage = StageDir(a.logdir, f"agent/{a.method}")
    stage.start(a.noreload)
    settings = SearchSettings(a.pop_size, a.n_samples, a.sigma, a.generations, a.target_return, a.eval_every,
                              a.eval_episodes, a.seed)
    identity = {"method": a.method, "dynamics": a.dynamics, **ids, "env": env_id, "controller": cfg.to_dict(),
                "dream": a.dream, "temperature": a.temperature if a.dream else None,
                "survival": survival if a.dream else None, "max_steps": max_steps, "pop_size": a.pop_size,
                "n_samples": a.n_samples, "sigma": a.sigma, "eval_episodes": a.eval_episodes, "seed": a.seed}
    stage.write_config({**vars(a), "logdir": str(a.logdir), "env": env_id, "device": str(device),
                        "max_steps": max_steps, "survival": survival})
    if a.dream:
        evaluator: DreamEvaluator | RealEvaluator = dream_evaluator(agent, a.logdir, ids["vae"], a.temperature,
                                                                    max_steps, survival, held_out=False)
        where = f"in M's dream (tau {a.temperature:g}, reward: {'+1 per step survived' if survival else 'M head'})"
    else:
        spec = AgentSpec(str(a.logdir), a.dynamics, env_id, cfg.to_dict(), str(device))
        evaluator = RealEvaluator(spec, a.max_workers, a.timeout, a.max_steps, a.envs_per_worker)
        where = f"in the real {env_id} with {a.max_workers} workers"
    print(f"C: linear, {cfg.n_params} parameters on {agent.m.feature_size} features of M ({a.dynamics}); "
          f"CMA-ES population {a.pop_size} x {a.n_samples} episodes {where}")
    try:
        state = run_search(stage, evaluator, settings, cfg.n_params, identity, {"controller": cfg.to_dict(),
                           "env": env_id, "dynamics": a.dynamics})
    finally:
        evaluator.close()
    print(f"{state.generation} generations, {state.frames:,} {'dream ' if a.dream else ''}steps, "
          f"{state.seconds:.0f} s; best selection score {state.best_score:.4g}: {stage.best}\n"
          f"evaluate it in the real env: python test_controller.py --logdir {a.logdir}")


if __name__ == "__main__":
    run_main(main)
