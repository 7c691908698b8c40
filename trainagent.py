"""Stage 4: train C, the controller, on top of V and M from --logdir.

    python trainagent.py --method cmaes --logdir exp --pop-size 64 --n-samples 16 --max-workers 8
    python trainagent.py --method cmaes --logdir exp --dream --temperature 1.15
    python trainagent.py --method ac --dynamics rssm --logdir exp --updates 2000

CMA-ES evolves the linear controller in the real env (parallel worker processes, each with
V, M, C and one env) or, with --dream, entirely inside M (the whole population times
n-samples as one batch). Every --eval-every generations the generation's best candidate
plays --eval-episodes fixed selection episodes, in the same world unless --select says
otherwise; best.pt changes only when that score improves. `--dream --select real` evolves C
only in M's dream and chooses among the candidates on real episodes (seeds apart from the
test episodes'), which guards best.pt against a late exploit of a hole in the dream.

The actor-critic (--method ac) always learns inside M, as Dreamer does: imagined rollouts
of --horizon steps from M's posterior states on real sequences, lambda-returns, gradients
through M (continuous actions) or REINFORCE (discrete). Every --eval-every updates the
actor plays the selection episodes in the real env (or in the dream: --select dream).

Rerunning resumes exactly; --noreload starts afresh.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np

from agent.ac import LoopSettings, StartStates, run_actor_critic
from agent.cmaes import SearchSettings, run_search
from agent.episodes import Agent
from agent.evaluate import (
    AgentSpec,
    DreamEvaluator,
    RealEvaluator,
    check_env_fits,
    dream_evaluator,
    load_world,
    logdir_action_repeat,
    logdir_env,
)
from agent.imagination import ImaginationLearner, ImaginationSettings
from agent.keep import KEPT
from agent.media import save_policy_dreams
from data.dataset import episode_split, open_dataset
from data.envs import make_env, time_limit
from data.latents import cached_dataset, latent_cache
from data.sequences import SequenceBatches
from models.actor_critic import Actor, ActorConfig, ActorController, Critic
from models.controller import ControllerConfig, LinearController
from utils.checkpoint import load_checkpoint, seed_everything
from utils.cli import UserError, run_main
from utils.distributed import check_batch, finish, init_world, main_first, world
from utils.logdir import controller_stage
from utils.precision import AMP
from utils.upstream import DYNAMICS

SURVIVAL_ENVS = ("VizdoomTakeCover-v1",)  # Ha's Doom dream: +1 per step survived


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=["cmaes", "ac"], default="cmaes")
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--dynamics", choices=list(DYNAMICS), default="mdrnn", help="which M in the logdir")
    p.add_argument("--env", help="env id (default: the env of the dataset M was trained on)")
    p.add_argument("--target-return", type=float, help="stop once a selection score reaches it")
    p.add_argument("--eval-every", type=int,
                   help="generations (cmaes, default 5) or updates (ac, default 100) between selection evaluations")
    p.add_argument("--eval-episodes", type=int, default=64, help="episodes of each selection evaluation")
    p.add_argument("--select", choices=["real", "dream"],
                   help="where the selection episodes that choose best.pt are played: the real env, or M's dream "
                        "(no real env at all); default: the dream for cmaes --dream, else the real env")
    p.add_argument("--max-workers", type=int, default=os.cpu_count() or 1,
                   help="real-env worker processes (0: run in this process)")
    p.add_argument("--envs-per-worker", type=int, default=16, help="envs each worker plays in lockstep")
    p.add_argument("--ray", metavar="ADDRESS",
                   help="real-env workers as Ray actors: 'auto' (a running local cluster, else a private one) or "
                        "a cluster address; --max-workers counts actors; the logdir must be readable on every node")
    p.add_argument("--timeout", type=float, default=900.0,
                   help="seconds a worker may spend on one chunk of --envs-per-worker episodes")
    p.add_argument("--temperature", type=float, default=1.0, help="tau of the dream (Ha: 1.15 for Doom)")
    p.add_argument("--dream-reward", choices=["auto", "head", "survival"], default="auto",
                   help="M's reward head, or +1 per step survived (auto: survival for TakeCover)")
    p.add_argument("--max-steps", type=int, help="episode cap (default: the env's time limit)")
    p.add_argument("--noreload", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    es = p.add_argument_group("CMA-ES (--method cmaes)")
    es.add_argument("--pop-size", type=int, default=64)
    es.add_argument("--n-samples", type=int, default=16, help="episodes per candidate per generation")
    es.add_argument("--sigma", type=float, default=0.1, help="CMA-ES initial step size")
    es.add_argument("--round-sigma", type=float,
                    help="step size when M has changed (an online round) and the search restarts (default: --sigma)")
    es.add_argument("--round-from", choices=["best", "fresh", "kept"], default="best",
                    help="where the search restarts when M has changed: around C's best; at C's initial point "
                         "(zeros, or --init; a C that learned the old dream's hole sits where a small step "
                         "cannot leave); or at the C rounds.py --keep-best kept, the best in real episodes so far "
                         "(<logdir>/kept/, read through the new M; C's initial point until there is one)")
    es.add_argument("--init", type=Path, metavar="BEST_PT",
                    help="C's initial point: the parameters of this C (a best.pt of a C of the same shape), not zeros")
    es.add_argument("--generations", type=int, default=100,
                    help="generations to run (after M changed in an online round: this many more)")
    es.add_argument("--restarts", type=int, default=1,
                    help="independent searches per M, one after another, each of --generations and started as "
                         "the first was but at its own seed; best.pt is the best over all of them")
    es.add_argument("--dream", action="store_true", help="evolve entirely inside M")
    es.add_argument("--discrete", choices=["argmax", "sample"], default="argmax",
                    help="discrete actions: argmax of C's outputs, or sampled from their softmax")
    ac = p.add_argument_group("actor-critic (--method ac; Dreamer's settings by default)")
    ac.add_argument("--updates", type=int, default=1000,
                    help="imagination updates (after M changed in an online round: this many more)")
    ac.add_argument("--batch-size", type=int, default=16, help="real sequence windows per update")
    ac.add_argument("--seq-len", type=int, default=32, help="steps per window: every step starts an imagined rollout")
    ac.add_argument("--horizon", type=int, default=15, help="imagined steps")
    ac.add_argument("--gamma", type=float, default=0.99,
                    help="discount (Dreamer's 0.99); its horizon 1 / (1 - gamma) should not far exceed an "
                         "episode's length (GridWorld's 16 steps: 0.9)")
    ac.add_argument("--lam", type=float, default=0.95, help="lambda of the lambda-returns")
    ac.add_argument("--actor-lr", type=float, default=8e-5)
    ac.add_argument("--critic-lr", type=float, default=8e-5)
    ac.add_argument("--entropy", type=float, default=1e-3, help="weight of the actor's entropy bonus")
    ac.add_argument("--grad-clip", type=float, default=100.0)
    ac.add_argument("--target-mix", type=float, default=0.02, help="target critic's step towards the critic")
    ac.add_argument("--actor-grad", choices=["auto", "dynamics", "reinforce"], default="auto",
                    help="through M, or REINFORCE with the critic as baseline (auto: reinforce for discrete actions)")
    ac.add_argument("--return-norm", action="store_true", help="divide returns by their 5-95%% range (DreamerV3)")
    ac.add_argument("--units", type=int, default=200, help="width of the actor's and the critic's MLPs")
    ac.add_argument("--mlp-layers", type=int, default=2, help="hidden layers of the actor's and the critic's MLPs")
    ac.add_argument("--amp", choices=AMP, default="none",
                    help="mixed precision for the imagined rollouts: bf16, fp16 (GPUs) or auto (bf16 where "
                         "it is native)")
    ac.add_argument("--act", choices=["mode", "sample"], default="mode",
                    help="in real episodes and dreams, the actor's most likely action or a sample")
    a = p.parse_args()
    a.eval_every = a.eval_every or (5 if a.method == "cmaes" else 100)
    if min(a.pop_size, a.n_samples, a.generations, a.restarts, a.eval_every, a.eval_episodes, a.envs_per_worker,
           a.updates, a.batch_size, a.seq_len, a.horizon, a.units) < 1 or a.mlp_layers < 0:
        p.error("counts and sizes must be >= 1 (--mlp-layers >= 0)")
    if a.pop_size < 2:
        p.error("--pop-size must be >= 2")
    if a.round_sigma is not None and a.round_sigma <= 0:
        p.error("--round-sigma must be > 0")
    if a.sigma <= 0 or a.temperature <= 0 or a.timeout <= 0 or a.max_workers < 0 or a.seed < 0:
        p.error("--sigma, --temperature and --timeout must be > 0; --max-workers and --seed >= 0")
    if not (0 < a.gamma <= 1 and 0 <= a.lam <= 1 and 0 < a.target_mix <= 1) or min(a.actor_lr, a.critic_lr) <= 0:
        p.error("need 0 < --gamma <= 1, 0 <= --lam <= 1, 0 < --target-mix <= 1 and positive learning rates")
    if a.ray and a.max_workers < 1:
        p.error("--ray needs --max-workers >= 1")
    if a.init and not a.init.is_file():
        p.error(f"--init {a.init}: no such file (a C's best.pt)")
    if a.method == "ac" and (a.init or a.round_from == "kept"):
        p.error("--init and --round-from kept start CMA-ES's searches; the actor-critic continues its own networks")
    if a.method == "ac" and a.dream:
        p.error("--dream is CMA-ES's; the actor-critic always learns in the dream (see --select)")
    if a.method == "cmaes" and not a.dream and a.select == "dream":
        p.error("--select dream needs --dream: a C evolved in the real env is chosen there too")
    a.select = a.select or ("dream" if a.dream else "real")
    return a


def main() -> None:
    started = time.monotonic()
    a = parse_args()
    device = init_world(a.device)
    if world().size > 1 and a.method != "ac":
        raise UserError("torchrun is for the actor-critic's gradients; CMA-ES spreads episodes with --max-workers "
                        "or --ray")
    env_id = a.env or logdir_env(a.logdir)
    repeat = logdir_action_repeat(a.logdir)
    env = make_env(env_id, repeat)
    max_steps = a.max_steps or time_limit(env)
    space = env.action_space
    env.close()
    vae, m, ids = load_world(a.logdir, a.dynamics, device)  # checks that M was trained on this V
    check_env_fits(a.logdir, env_id, space)
    survival = a.dream_reward == "survival" or (a.dream_reward == "auto" and env_id in SURVIVAL_ENVS)
    stage = controller_stage(a.logdir, a.dynamics, a.method)
    stage.start(a.noreload)
    stage.write_config({**vars(a), "logdir": str(a.logdir), "init": a.init and str(a.init), "env": env_id,
                        "device": str(device), "max_steps": max_steps, "survival": survival})
    common = {"method": a.method, "dynamics": a.dynamics, **ids, "env": env_id, "max_steps": max_steps,
              "eval_episodes": a.eval_episodes, "seed": a.seed}
    (train_cmaes if a.method == "cmaes" else train_ac)(a, stage, vae, m, ids, env_id, space, max_steps, survival,
                                                        common, device)
    stage.record_run(started)


def evaluator_for(a, agent: Agent, ids: dict, env_id: str, controller: dict, in_dream: bool, tau: float,
                  max_steps: int, survival: bool) -> tuple[DreamEvaluator | RealEvaluator, str]:
    """Where selection (and CMA-ES's fitness) episodes happen, and a phrase saying so."""
    if in_dream:
        where = f"in M's dream (tau {tau:g}, reward: {'+1 per step survived' if survival else 'M head'})"
        return dream_evaluator(agent, a.logdir, ids["vae"], tau, max_steps, survival, held_out=False), where
    spec = AgentSpec(str(a.logdir), a.dynamics, env_id, controller, str(agent.device),
                     action_repeat=logdir_action_repeat(a.logdir))
    return (RealEvaluator(spec, a.max_workers, a.timeout, a.max_steps, a.envs_per_worker, a.ray),
            f"in the real {env_id} with {a.max_workers} {'Ray actors' if a.ray else 'workers'}")


def train_cmaes(a, stage, vae, m, ids, env_id, space, max_steps, survival, common, device) -> None:
    cfg = ControllerConfig.for_space(m.feature_size, space, sample=a.discrete == "sample")
    agent = Agent(vae, m, LinearController(cfg), device)
    x0, init_id = initial_point(a, cfg)
    settings = SearchSettings(a.pop_size, a.n_samples, a.sigma, a.generations, a.target_return, a.eval_every,
                              a.eval_episodes, a.seed, a.round_sigma, "best" if a.round_from == "best" else "fresh",
                              a.restarts, None if x0 is None else tuple(x0.tolist()))
    identity = {**common, "controller": cfg.to_dict(), "dream": a.dream,
                "temperature": a.temperature if a.dream else None, "survival": survival if a.dream else None,
                "pop_size": a.pop_size, "n_samples": a.n_samples, "sigma": a.sigma,
                "init": init_id,  # the --init C's checkpoint id (None: zeros), whatever path names it
                # None where selection is in the world C evolves in: searches saved before --select resume
                "select": None if (a.select == "dream") == a.dream else a.select}
    evaluator, where = evaluator_for(a, agent, ids, env_id, cfg.to_dict(), a.dream, a.temperature, max_steps,
                                     survival)
    select, select_where = (evaluator, where) if (a.select == "dream") == a.dream else \
        evaluator_for(a, agent, ids, env_id, cfg.to_dict(), False, a.temperature, max_steps, survival)
    print(f"C: linear, {cfg.n_params} parameters on {agent.m.feature_size} features of M ({a.dynamics}); "
          f"CMA-ES population {a.pop_size} x {a.n_samples} episodes {where}; selection episodes {select_where}")
    try:
        state = run_search(stage, evaluator, settings, cfg.n_params, identity, {"controller": cfg.to_dict(),
                           "env": env_id, "dynamics": a.dynamics}, select)
    finally:
        evaluator.close()
        if select is not evaluator:
            select.close()
    print(f"{state.generation} generations, {state.frames:,} {'dream ' if a.dream else ''}steps, "
          f"{state.seconds:.0f} s; best selection score {state.best_score:.4g}: {stage.best}\n"
          f"evaluate it in the real env: python test_controller.py --logdir {a.logdir} --dynamics {a.dynamics}")


def initial_point(a: argparse.Namespace, cfg: ControllerConfig) -> tuple[np.ndarray | None, str | None]:
    """Where searches start that do not start at C's best: the kept C's parameters (--round-from
    kept, once rounds.py --keep-best has kept one), --init's, or None for zeros; and the id of
    --init's checkpoint, which the search's identity holds (the kept C changes from round to
    round by design)."""
    kept = a.logdir / KEPT / "agent" / a.dynamics / "cmaes" / "best.pt"
    path = kept if a.round_from == "kept" and kept.exists() else a.init
    if a.round_from == "kept":
        print(f"a search in a new M starts at the kept C, {kept}" if path == kept else
              "no kept C yet (rounds.py --keep-best keeps one): a search in a new M starts at C's initial point")
    init_id = load_checkpoint(a.init).get("id") if a.init else None
    if path is None:
        return None, init_id
    ckpt = load_checkpoint(path)
    theirs, ours = ckpt.get("controller") or {}, cfg.to_dict()
    if theirs != ours:
        differ = sorted(k for k in ours.keys() | theirs.keys() if theirs.get(k) != ours.get(k))
        raise UserError(f"{path} holds a C of another controller config than this one (it differs in "
                        f"{', '.join(differ)}): its parameters cannot start this search")
    return ckpt["params"].double().numpy(), init_id


def train_ac(a, stage, vae, m, ids, env_id, space: gym.Space, max_steps, survival, common, device) -> None:
    check_batch(a.batch_size)
    seed_everything(a.seed)  # the actor's and the critic's first weights; a resume restores the RNGs
    cfg = ActorConfig.for_space(m.feature_size, space, hidden_size=a.units, layers=a.mlp_layers,
                                sample=a.act == "sample")
    reinforce = a.actor_grad == "reinforce" or (a.actor_grad == "auto" and cfg.discrete)
    try:
        settings = ImaginationSettings(a.horizon, a.gamma, a.lam, a.actor_lr, a.critic_lr, a.entropy, a.grad_clip,
                                       a.target_mix, reinforce, a.return_norm, a.temperature, survival)
        learner = ImaginationLearner(m, Actor(cfg).to(device), Critic(m.feature_size, a.units, a.mlp_layers).to(device),
                                     settings, a.amp)
    except ValueError as e:
        raise UserError(str(e)) from e
    dataset = cached_dataset(a.logdir)
    files = open_dataset(dataset)
    lat = main_first(latent_cache, a.logdir, dataset, files, vae, ids["vae"], device)
    train_eps, _ = main_first(episode_split, a.logdir, files, 0.1)
    starts = StartStates(vae, m, SequenceBatches(lat, train_eps, a.seq_len, a.batch_size, a.seed), a.seed,
                         device)
    agent = Agent(vae, m, ActorController(cfg), device)
    identity = {**common, "controller": cfg.to_dict(), "imagination": vars(settings).copy(),
                "select": a.select, "batch_size": a.batch_size, "seq_len": a.seq_len}
    evaluator, where = evaluator_for(a, agent, ids, env_id, cfg.to_dict(), a.select == "dream", a.temperature,
                                     max_steps, survival) if world().main else (None, "on rank 0")
    n_params = sum(p.numel() for p in learner.actor.parameters())
    print(f"C: actor-critic ({'REINFORCE' if reinforce else 'gradients through M'}), actor of {n_params:,} "
          f"parameters on {m.feature_size} features of M ({a.dynamics}); imagining {a.horizon} steps from "
          f"{a.batch_size} x {a.seq_len} real states per update; selection episodes {where}")
    dreams = stage.sub("dreams")
    held_out = dream_evaluator(agent, a.logdir, ids["vae"], a.temperature, max_steps, survival, held_out=True)
    try:
        state = run_actor_critic(
            stage, learner, starts, evaluator,
            LoopSettings(a.updates, a.eval_every, a.eval_episodes, a.target_return, a.seed), identity,
            {"controller": cfg.to_dict(), "env": env_id, "dynamics": a.dynamics},
            lambda u: save_policy_dreams(dreams / f"update_{u:06d}.gif", held_out, learner.actor, 4,
                                         min(max_steps, 100)))
    finally:
        if evaluator is not None:
            evaluator.close()
    finish()
    print(f"{state.update} updates, {state.imagined:,} imagined steps, {state.seconds:.0f} s; best selection "
          f"score {state.best_score:.4g}: {stage.best}\nthe actor in M's dream: {dreams}\n"
          f"evaluate it in the real env: python test_controller.py --logdir {a.logdir} --dynamics {a.dynamics} "
          "--method ac")


if __name__ == "__main__":
    run_main(main)
