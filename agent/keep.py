"""The best C across online rounds, kept with the V and M it acts through.

A round's fresh C can score less in the game than an earlier round's (a search that found
nothing in a harsher M, or one that kept a candidate its dreams overrate), and the rounds
train the logdir's M and C on. `rounds.py --keep-best N` therefore judges every round's C
on the same N real selection episodes (seeds below 2^30, so never test_controller.py's) and
copies the best one so far, with its V and the M it was trained in (C reads M's h, so it
only works through that M), into <logdir>/kept/: a logdir of its own that test_controller.py
evaluates, whose kept.json says which round it came from and every round's judgement.
kept/ is replaced whole whenever a later round's C does better.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agent.evaluate import TRAIN_SEEDS, AgentSpec, RealEvaluator, episode_seed, load_trained, logdir_action_repeat
from data.envs import make_env, time_limit
from utils.cli import UserError
from utils.io import write_json

KEPT = "kept"
JUDGE = 7  # the purpose in episode_seed's key: apart from the searches' fitness and selection seeds
STAGE_FILES = ("best.pt", "config.json", "runs.jsonl", "metrics.jsonl")


def judge_seeds(seed: int, n: int) -> list[int]:
    """N consecutive training-range seeds, the same every round so that rounds compare; consecutive
    so that `test_controller.py --seed <first> --episodes N` replays them."""
    first = episode_seed(seed, JUDGE) % (TRAIN_SEEDS - n)
    return list(range(first, first + n))


def judge(logdir: Path, dynamics: str, method: str, seeds: list[int], workers: int) -> dict[str, Any]:
    """The logdir's C (best.pt) on real episodes, capped as test_controller.py caps them: their
    returns, the env steps they took, and the ids of C and of the M it acts through."""
    _, params, ckpt = load_trained(logdir, dynamics, method, torch.device("cpu"))  # checks C against V and M
    repeat = logdir_action_repeat(logdir)
    env = make_env(ckpt["env"], repeat)
    max_steps = time_limit(env)
    env.close()
    spec = AgentSpec(str(logdir), dynamics, ckpt["env"], ckpt["controller"], action_repeat=repeat)
    evaluator = RealEvaluator(spec, workers, timeout=None, max_steps=max_steps)
    try:
        returns, episodes = evaluator(np.repeat(params.numpy()[None], len(seeds), 0), seeds)
    finally:
        evaluator.close()
    return {"mean": float(returns.mean()), "std": float(returns.std()), "returns": returns.tolist(),
            "frames": sum(e.steps for e in episodes) * repeat, "c_id": ckpt["id"],
            "dynamics_id": ckpt["dynamics_id"], "workers": workers, "max_steps": max_steps}


def read_kept(logdir: Path) -> dict[str, Any] | None:
    """kept.json of a kept logdir (None if `logdir` is not one)."""
    path = logdir / "kept.json"
    return json.loads(path.read_text()) if path.exists() else None


def _copy_stage(src: Path, dst: Path) -> None:
    """A stage folder's best.pt and records; not latest.pt: the kept logdir is for evaluation."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in STAGE_FILES:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link where the file system allows: the latent cache is large, and its writers
    replace files rather than change them, so the link stays a snapshot."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def keep_if_better(logdir: Path, dynamics: str, method: str, round_: int, seeds: list[int],
                   judged: dict[str, Any]) -> dict[str, Any]:
    """Record round_'s judgement; copy its V, M and C into <logdir>/kept/ if it beats the kept
    one (a tie keeps the earlier). Safe to repeat after a kill at any point: the copy is built
    aside and swapped in by renames. Returns kept.json."""
    kept_dir, new_dir, old_dir = logdir / KEPT, logdir / f"{KEPT}.new", logdir / f"{KEPT}.old"
    if not kept_dir.exists() and old_dir.exists():  # killed between the two renames below
        old_dir.rename(kept_dir)
    shutil.rmtree(new_dir, ignore_errors=True)
    shutil.rmtree(old_dir, ignore_errors=True)
    record = read_kept(kept_dir) or {"round": None, "mean": None, "episodes": len(seeds), "first_seed": seeds[0]}
    if (record["episodes"], record["first_seed"]) != (len(seeds), seeds[0]):
        raise UserError(f"{kept_dir} was judged on {record['episodes']} episodes from seed {record['first_seed']}, "
                        f"this round on {len(seeds)} from {seeds[0]}: keep --keep-best and --seed as they were, "
                        f"or remove {kept_dir}")
    history = [h for h in record.get("judged", []) if h["round"] != round_]
    history.append({"round": round_, **{k: judged[k] for k in ("mean", "std", "frames", "c_id", "dynamics_id")},
                    "returns": judged["returns"]})
    record["judged"] = history
    if record["mean"] is not None and judged["mean"] <= record["mean"]:  # a tie keeps the earlier C
        write_json(kept_dir / "kept.json", record)
        return record
    for folder in ("vae", f"dynamics/{dynamics}", f"agent/{dynamics}/{method}", "rounds"):
        _copy_stage(logdir / folder, new_dir / folder)
    (new_dir / "latents").mkdir()
    for src in (logdir / "latents").iterdir():  # M's data, so that the kept C can also dream
        if src.is_file():
            _link_or_copy(src, new_dir / "latents" / src.name)
    if (logdir / "split.json").exists():
        shutil.copy2(logdir / "split.json", new_dir / "split.json")
    record.update(round=round_, **{k: judged[k] for k in ("mean", "std", "c_id", "dynamics_id", "workers",
                                                          "max_steps")})
    write_json(new_dir / "kept.json", record)
    if kept_dir.exists():
        kept_dir.rename(old_dir)
    new_dir.rename(kept_dir)
    shutil.rmtree(old_dir, ignore_errors=True)
    return record


def seconds_through(kept_dir: Path, round_: int) -> float | None:
    """Wall seconds of rounds 0..round_ from the rounds' metrics copied into the kept logdir:
    what the kept C cost, where the rounds' runs.jsonl counts every round. None while the
    kept round has no metrics line yet (a run killed before its evaluation)."""
    path = kept_dir / "rounds" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if round_ not in {r["step"] for r in rows}:
        return None
    return round(sum(r["seconds"] for r in rows if r["step"] <= round_), 2)


def copy_rounds_record(logdir: Path) -> None:
    """The rounds' config and commands into the kept logdir, so its ledger file names them."""
    if (logdir / KEPT).is_dir():
        _copy_stage(logdir / "rounds", logdir / KEPT / "rounds")
