"""CMA-ES over C's parameters (pycma ask/tell), resumable generation by generation.

pycma minimises, so it is told negative mean returns. Each generation's n_samples episode
seeds are shared by the whole population (common random numbers: candidates are compared
on the same tracks / dream starts). latest.pt holds the whole search state after every
generation: pycma's state as tensors and plain values (agent/es_state.py), written back into
a strategy built anew from the run's settings on resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agent.episodes import Episode
from agent.es_state import es_state, new_strategy, restore_es
from agent.evaluate import episode_seed
from utils.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from utils.logdir import StageDir
from utils.training import new_round

Evaluate = Callable[[np.ndarray, list[int]], tuple[np.ndarray, list[Episode]]]
TRAIN, SELECT = 0, 1  # seed purposes


@dataclass(frozen=True)
class SearchSettings:
    pop_size: int = 64
    n_samples: int = 16
    sigma: float = 0.1
    generations: int = 100
    target_return: float | None = None
    eval_every: int = 5
    eval_episodes: int = 64
    seed: int = 0
    round_sigma: float | None = None  # step size when a new round restarts the search (None: sigma)
    round_from: str = "best"  # a new round's search starts around C's best, or "fresh" at x0
    restarts: int = 1  # independent searches per M, each of `generations`
    x0: tuple[float, ...] | None = None  # where searches start that do not start at C's best (None: zeros)


@dataclass
class SearchState:
    es: Any  # cma.CMAEvolutionStrategy
    generation: int = 0  # finished generations
    best_score: float = -np.inf
    frames: int = 0  # env (or dream) steps so far, selection episodes included
    select_frames: int = 0  # steps of the selection episodes alone (real ones where fitness is dreamt)
    seconds: float = 0.0
    round: int = 0  # online rounds: each new M starts one (see start_round)
    round_start: int = 0  # the generation this round started at

    def to_checkpoint(self) -> dict[str, Any]:
        return {"es_state": es_state(self.es), "generation": self.generation, "best_score": self.best_score,
                "frames": self.frames, "select_frames": self.select_frames, "seconds": self.seconds,
                "round": self.round, "round_start": self.round_start, "rng": rng_state()}

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], n_params: int, s: SearchSettings, path: str) -> SearchState:
        if "es_state" not in ckpt:
            raise CheckpointError(f"{path}: a CMA-ES search in an older format that needs unpickling; refused: "
                                  "rerun with --noreload")
        es = new_search(n_params, s).es
        restore_es(es, ckpt["es_state"])
        set_rng_state(ckpt["rng"])  # after the strategy is built: pycma seeds numpy's RNG when built
        return cls(es, ckpt["generation"], ckpt["best_score"], ckpt["frames"], ckpt.get("select_frames", 0),
                   ckpt["seconds"], ckpt.get("round", 0), ckpt.get("round_start", 0))

    def start_round(self, best: np.ndarray, s: SearchSettings) -> None:
        """A new M: search again around C's best so far (or, round_from "fresh", from the initial
        point x0, zeros unless set: in Doom a C that held one button in the old dream's hole stayed near it), with the
        round's own step size, for s.generations more; best.pt is judged afresh, since scores in
        the old M do not carry over."""
        self.round += 1
        self.round_start, self.best_score = self.generation, -np.inf
        self.es = round_strategy(best, s, episode_seed(s.seed, 2, self.round) + 1)

    def restart(self, best: np.ndarray, s: SearchSettings) -> None:
        """The next of s.restarts searches in this M: started as the round's first search was,
        at another seed; best_score stays, so best.pt is the best over all searches."""
        k = (self.generation - self.round_start) // s.generations
        seed = episode_seed(s.seed, 3, self.round, k) + 1
        self.es = round_strategy(best, s, seed) if self.round else new_strategy(len(best), s.sigma, s.pop_size, seed,
                                                                                _x0(s))


def round_strategy(best: np.ndarray, s: SearchSettings, seed: int) -> Any:
    """A search in a changed M: around C's best, or at the initial point (round_from "fresh")."""
    x0 = best if s.round_from == "best" else _x0(s)
    return new_strategy(len(best), s.round_sigma or s.sigma, s.pop_size, seed, x0)


def _x0(s: SearchSettings) -> np.ndarray | None:
    """The settings' initial point as pycma takes it (None: zeros)."""
    return None if s.x0 is None else np.array(s.x0)


def new_search(n_params: int, s: SearchSettings) -> SearchState:
    return SearchState(new_strategy(n_params, s.sigma, s.pop_size, episode_seed(s.seed, 2) + 1, _x0(s)))


def selection_seeds(s: SearchSettings) -> list[int]:
    """The fixed episodes every candidate for best.pt is judged on, so scores compare."""
    return [episode_seed(s.seed, SELECT, j) for j in range(s.eval_episodes)]


def run_search(
    stage: StageDir, evaluate: Evaluate, s: SearchSettings, n_params: int, identity: dict[str, Any],
    best_extra: dict[str, Any], select: Evaluate | None = None,
) -> SearchState:
    """Evolve until s.generations or until a selection score reaches s.target_return. `select`
    plays the selection episodes where they differ from the fitness episodes' world (a C
    evolved in M's dream but chosen on real episodes); by default `evaluate` plays both."""
    resume = stage.resume_state("cpu")
    rounds = new_round(stage, resume, identity)
    state = SearchState.from_checkpoint(resume, n_params, s, str(stage.latest)) if resume else new_search(n_params, s)
    if resume:
        stage.trim_metrics(state.generation)
        print(f"resuming {stage.path} after generation {state.generation} "
              f"(best selection score {state.best_score:.4g})")
    if rounds:
        state.start_round(_best_params(stage, state), s)
    end = state.round_start + s.generations * s.restarts
    stage.start_tb(purge_step=state.generation + 1)
    bar = tqdm(total=end - state.round_start, initial=state.generation - state.round_start, unit="gen",
               desc="CMA-ES" + (f" (round {state.round})" if state.round else ""))
    while state.generation < end and not _reached(state.best_score, s.target_return):
        t0 = time.perf_counter()
        g = state.generation
        if g > state.round_start and (g - state.round_start) % s.generations == 0:
            # also after a kill right at the boundary; round 0 restarts at x0 and needs no best.pt
            state.restart(_best_params(stage, state) if state.round else state.es.mean, s)
        candidates = np.asarray(state.es.ask())
        seeds = [episode_seed(s.seed, TRAIN, g, j) for j in range(s.n_samples)]
        returns, episodes = evaluate(np.repeat(candidates, s.n_samples, 0), seeds * len(candidates))
        fitness = returns.reshape(len(candidates), s.n_samples).mean(1)
        state.es.tell(list(candidates), list(-fitness))
        state.frames += sum(e.steps for e in episodes)
        metrics = {"fitness_mean": fitness.mean(), "fitness_best": fitness.max(), "fitness_worst": fitness.min(),
                   "sigma": state.es.sigma}
        state.generation = g + 1
        if state.generation % s.eval_every == 0 or (state.generation - state.round_start) % s.generations == 0:
            metrics.update(_select(stage, select or evaluate, s, state, candidates[fitness.argmax()], identity,
                                   best_extra))
        state.seconds += time.perf_counter() - t0
        metrics.update(frames=state.frames, select_frames=state.select_frames, seconds=state.seconds)
        save_checkpoint(stage.latest, {"identity": identity, **state.to_checkpoint()})
        stage.log(state.generation, metrics)
        bar.update(1)
        bar.set_postfix(mean=f"{fitness.mean():.3g}", best=f"{fitness.max():.3g}", sel=f"{state.best_score:.3g}")
    bar.close()
    stage.close()
    return state


def _best_params(stage: StageDir, state: SearchState) -> np.ndarray:
    """C's best so far: best.pt, or the search's mean if no selection has run yet."""
    best = load_checkpoint(stage.best)["params"].double().numpy() if stage.best.exists() else state.es.mean
    return np.array(best)


def _select(
    stage: StageDir, evaluate: Evaluate, s: SearchSettings, state: SearchState, params: np.ndarray,
    identity: dict[str, Any], best_extra: dict[str, Any],
) -> dict[str, float]:
    """Judge this generation's best candidate on the selection episodes; best.pt only improves."""
    returns, episodes = evaluate(np.repeat(params[None], s.eval_episodes, 0), selection_seeds(s))
    steps = sum(e.steps for e in episodes)
    state.frames += steps
    state.select_frames += steps
    score = float(returns.mean())
    out = {"select_mean": score, "select_std": float(returns.std())}
    successes = [e.success for e in episodes if e.success is not None]
    if successes:
        out["select_success"] = float(np.mean(successes))
    if score > state.best_score:
        state.best_score = score
        save_checkpoint(stage.best, {"identity": identity, **best_extra, "params": torch.from_numpy(params).float(),
                                     "generation": state.generation, "score": score, "score_std": out["select_std"]})
    return out


def _reached(score: float, target: float | None) -> bool:
    return target is not None and score >= target

