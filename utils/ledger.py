"""The results ledger: one small JSON per published run, made from what the logdir knows.

test_controller.py --results writes it: every episode's seed and return, the summary, and
for every stage that made the evaluated C its seed, its exact commands and wall seconds
(from each stage's runs.jsonl), plus the commit, torch, CPU count and device. RESULTS.md
is generated from these files (tools/results_md.py), so every figure in it can be checked.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from utils.io import write_json
from utils.runs import command_line, read_runs

ROOT = Path(__file__).resolve().parent.parent


def commit() -> str:
    """The checkout's commit, with '-dirty' when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
    try:
        sha = git("rev-parse", "HEAD")
        return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "") if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _summary(runs: list[dict[str, Any]], seed: Any) -> dict[str, Any]:
    """Each distinct command once, in order (running one again resumes it), and the seconds of all runs."""
    return {"seed": seed, "commands": list(dict.fromkeys(r["command"] for r in runs)),
            "seconds": round(sum(r["seconds"] for r in runs), 2)}


def dataset_stage(root: Path, folders: set[str] | None = None) -> dict[str, Any]:
    """The dataset and its controller-collected subfolders (those in `folders`, relative to
    root, if given): every generation command, in order."""
    meta = json.loads((root / "dataset.json").read_text()) if (root / "dataset.json").exists() else {}
    subs = sorted(p.parent for p in root.rglob("*/runs.jsonl"))
    if folders is not None:
        subs = [sub for sub in subs if sub.relative_to(root).as_posix() in folders]
    runs = sorted((r for folder in [root, *subs] for r in read_runs(folder)), key=lambda r: r["finished"])
    return _summary(runs, meta.get("seed"))


def cached_folders(logdir: Path) -> set[str] | None:
    """The dataset's folders whose episodes M learned from (its latent cache lists them): a
    C kept from an earlier round never saw the later rounds' data."""
    meta = logdir / "latents" / "meta.json"
    if not meta.exists():
        return None
    return {Path(f[0]).parent.as_posix() for f in json.loads(meta.read_text())["files"]}


def stages(logdir: Path, dataset: Path, dynamics: str | None, method: str | None) -> dict[str, dict[str, Any]]:
    """Seed, commands and seconds of every stage behind the evaluated C (None: no M or C)."""
    out = {"data": dataset_stage(dataset, cached_folders(logdir) if dynamics else None)}
    folders = {"vae": logdir / "vae"} if dynamics else {}
    if dynamics:
        folders["dynamics"] = logdir / "dynamics" / dynamics
    if dynamics and method:
        folders["controller"] = logdir / "agent" / dynamics / method
    if dynamics and (logdir / "rounds" / "runs.jsonl").exists():
        folders["rounds"] = logdir / "rounds"  # rounds.py drove the stages above
    for name, folder in folders.items():
        out[name] = _summary(read_runs(folder), _config(folder).get("seed"))
    return out


def write_record(
    path: Path, *, env: str, dynamics: str | None, controller: str, dream_only: bool | None, evaluation: dict,
    episodes: list[dict], summary: dict, stage_info: dict[str, dict], eval_seconds: float, device: str,
) -> dict[str, Any]:
    """Write the ledger file for one evaluated run and return it."""
    stage_info = {**stage_info, "eval": {"seed": episodes[0]["seed"], "commands": [command_line()],
                                         "seconds": round(eval_seconds, 2)}}
    record = {
        "env": env, "dynamics": dynamics, "controller": controller, "dream_only": dream_only,
        "evaluation": evaluation, **summary,
        "returns": [e["return"] for e in episodes], "episode_seeds": [e["seed"] for e in episodes],
        "steps": [e["steps"] for e in episodes],
        **({"successes": [e["success"] for e in episodes]} if "success_rate" in summary else {}),
        "seed": {k: v["seed"] for k, v in stage_info.items()},
        "commands": {k: v["commands"] for k, v in stage_info.items()},
        "seconds": {k: v["seconds"] for k, v in stage_info.items()},
        "commit": commit(), "torch": torch.__version__, "cpus": os.cpu_count(), "device": device,
        "machine": platform.machine(), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
    return record
