"""The actor-critic's training loop: imagination updates, periodic scored episodes, resume.

Every update draws a batch of real sequence windows from the latent cache (chosen by
(seed, update) alone), filters them through M to get start states, and runs one
imagination update. Every `eval_every` updates the actor plays the fixed selection
episodes (real env, or M's dream when selecting in the dream); best.pt changes only when
that score improves, and latest.pt then holds everything a rerun needs to continue as if
never stopped: weights, optimizers, the return scale, RNG states and the counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agent.cmaes import SELECT, Evaluate
from agent.evaluate import episode_seed
from agent.imagination import ImaginationLearner, posterior_starts
from data.sequences import SequenceBatches
from models.actor_critic import flat_params
from models.vae import VAE
from models.world_model import WorldModel
from utils.checkpoint import rng_state, save_checkpoint, set_rng_state
from utils.distributed import broadcast, total_over_ranks, world
from utils.logdir import StageDir
from utils.training import TrainingError, new_round


@dataclass(frozen=True)
class LoopSettings:
    updates: int = 1000
    eval_every: int = 100
    eval_episodes: int = 32
    target_return: float | None = None
    seed: int = 0


@dataclass
class LoopState:
    update: int = 0  # finished updates
    best_score: float = -np.inf
    imagined: int = 0  # imagined steps so far
    select_frames: int = 0  # steps of the selection episodes (real ones unless selecting in the dream)
    seconds: float = 0.0
    round: int = 0  # online rounds: each new M starts one, for s.updates more updates
    round_start: int = 0  # the update this round started at


class StartStates:
    """Start states for imagination: M's posterior states over random windows of the
    training episodes, the same windows for the same (seed, update)."""

    def __init__(self, vae: VAE, m: WorldModel, batches: SequenceBatches, seed: int, device: torch.device) -> None:
        self.vae, self.m, self.batches, self.seed, self.device = vae, m, batches, seed, device
        self.windows = batches.windows(0, shuffle=False)

    def __call__(self, update: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, update])
        pick = np.sort(rng.choice(len(self.windows), min(self.batches.batch_size, len(self.windows)), replace=False))
        pick = pick[world().split(len(pick))[0]]  # under torchrun, this rank's windows of the global batch
        b = self.batches.gather(self.windows[pick])
        t = lambda k: torch.as_tensor(np.asarray(b[k]), device=self.device)  # noqa: E731
        return posterior_starts(self.m, self.vae, t("stats")[:, :-1], t("actions"), t("mask"))


def run_actor_critic(
    stage: StageDir, learner: ImaginationLearner, starts: Callable[[int], dict[str, torch.Tensor]],
    evaluate: Evaluate | None, s: LoopSettings, identity: dict[str, Any], best_extra: dict[str, Any],
    after_eval: Callable[[int], None] | None = None,
) -> LoopState:
    """Train until s.updates or until a selection score reaches s.target_return. Under
    torchrun every rank imagines from its share of the windows and the gradients are
    averaged; only rank 0 plays the selection episodes (`evaluate` is None elsewhere)."""
    resume = stage.resume_state("cpu")
    rounds = new_round(stage, resume, identity)
    state = LoopState()
    if resume:
        learner.load_state_dict(resume["learner"])  # a new round keeps actor, critic and optimizers
        state = LoopState(**resume["loop"])
        set_rng_state(resume["rng"])
        stage.trim_metrics(state.update)
        print(f"resuming {stage.path} after update {state.update} (best selection score {state.best_score:.4g})")
    if rounds:  # scores in the old M do not carry over: best.pt is judged afresh
        state.round, state.round_start, state.best_score = state.round + 1, state.update, -np.inf
    end = state.round_start + s.updates
    stage.start_tb(purge_step=state.update + 1)
    bar = tqdm(total=s.updates, initial=state.update - state.round_start, unit="update", disable=not world().main,
               desc="actor-critic" + (f" (round {state.round})" if state.round else ""))
    sums: dict[str, float] = {}
    summed = 0  # updates in sums: a round need not start at a multiple of eval_every
    seeds = [episode_seed(s.seed, SELECT, j) for j in range(s.eval_episodes)]
    while state.update < end and not (s.target_return is not None and state.best_score >= s.target_return):
        t0 = time.perf_counter()
        start = starts(state.update)
        metrics = learner.update(start)
        bad = [k for k, v in metrics.items() if not np.isfinite(v)]
        if bad:
            raise TrainingError(f"{', '.join(bad)} became non-finite at update {state.update + 1}; stopped without "
                                f"saving, the last good checkpoint is {stage.latest}")
        state.update += 1
        state.imagined += learner.s.horizon * total_over_ranks(len(next(iter(start.values()))))
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + v
        summed += 1
        bar.update(1)
        bar.set_postfix(ret=f"{metrics['return']:.3g}", sel=f"{state.best_score:.3g}", refresh=False)
        state.seconds += time.perf_counter() - t0
        if state.update % s.eval_every and state.update != end:
            continue
        logged = {k: v / summed for k, v in sums.items()}
        sums, summed = {}, 0
        params = flat_params(learner.actor)
        returns, episodes = (evaluate(np.repeat(params.numpy()[None], s.eval_episodes, 0), seeds) if evaluate
                             else (np.zeros(1), []))  # under torchrun rank 0 alone plays them
        score = broadcast(float(returns.mean()))
        state.select_frames += sum(e.steps for e in episodes)  # rank 0's count: it alone plays them
        logged.update(select_mean=score, select_std=float(returns.std()), imagined=state.imagined,
                      select_frames=state.select_frames, seconds=state.seconds)
        successes = [e.success for e in episodes if e.success is not None]
        if successes:
            logged["select_success"] = float(np.mean(successes))
        if score > state.best_score:
            state.best_score = score
            save_checkpoint(stage.best, {"identity": identity, **best_extra, "params": params, "update": state.update,
                                         "score": score, "score_std": logged["select_std"]})
        save_checkpoint(stage.latest, {"identity": identity, "learner": learner.state_dict(),
                                       "loop": vars(state).copy(), "rng": rng_state()})
        stage.log(state.update, logged)
        bar.write(f"update {state.update}: imagined return {logged['return']:.4g}, selection score {score:.4g} "
                  f"+/- {logged['select_std']:.3g}" + (f", success {100 * logged['select_success']:.0f}%"
                                                      if successes else ""))
        if after_eval is not None and world().main:
            after_eval(state.update)
    bar.close()
    stage.close()
    return state
