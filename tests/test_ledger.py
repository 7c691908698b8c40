"""C per M in one logdir, and the results ledger test_controller.py --results writes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_script
from utils.ledger import stages

SMALL = ["--pop-size", "8", "--n-samples", "2", "--eval-every", "1", "--eval-episodes", "8", "--device", "cpu",
         "--dream", "--generations", "1"]


@pytest.fixture
def logdir(grid_world, tmp_path) -> Path:
    return Path(shutil.copytree(grid_world, tmp_path / "exp"))


def test_cs_of_two_ms_live_side_by_side_and_the_ledger_records_their_making(logdir, tmp_path) -> None:
    for dynamics in ("mdrnn", "rssm"):
        run_script("trainagent.py", "--logdir", str(logdir), "--dynamics", dynamics, *SMALL, "--seed", "3")
    assert all((logdir / "agent" / d / "cmaes" / "best.pt").exists() for d in ("mdrnn", "rssm"))
    ledger = tmp_path / "results" / "grid_rssm_seed3.json"
    run_script("test_controller.py", "--logdir", str(logdir), "--dynamics", "rssm", "--episodes", "5", "--workers",
               "0", "--device", "cpu", "--results", str(ledger))
    assert (logdir / "eval" / "rssm_cmaes.json").exists() and not (logdir / "eval" / "mdrnn_cmaes.json").exists()
    r = json.loads(ledger.read_text())
    assert (r["env"], r["dynamics"], r["controller"], r["dream_only"]) == ("GridWorld-v0", "rssm", "cmaes", True)
    assert len(r["returns"]) == len(r["episode_seeds"]) == 5 and min(r["episode_seeds"]) >= 2**30
    assert r["mean"] == pytest.approx(np.mean(r["returns"])) and r["std"] == pytest.approx(np.std(r["returns"]))
    assert 0 <= r["success_rate"] <= 1 and len(r["successes"]) == 5
    assert set(r["commands"]) == {"data", "vae", "dynamics", "controller", "eval"}
    assert ["--model rssm" in c for c in r["commands"]["dynamics"]] == [True]  # M's own stage, not another M's
    assert "--dynamics rssm" in r["commands"]["controller"][0] and "--seed 3" in r["commands"]["controller"][0]
    assert "--results" in r["commands"]["eval"][0] and len(r["commands"]["data"]) == 1
    assert r["seed"]["controller"] == 3 and r["seed"]["eval"] == 2**30
    assert all(s > 0 for s in r["seconds"].values())
    assert r["torch"] and r["cpus"] >= 1 and r["commit"]


def test_random_policy_ledger_and_an_unwritable_results_path(logdir, tmp_path) -> None:
    ledger = tmp_path / "random.json"
    run_script("test_controller.py", "--logdir", str(logdir), "--random", "--episodes", "3", "--results", str(ledger))
    r = json.loads(ledger.read_text())
    assert r["controller"] == "random" and r["dynamics"] is None and set(r["commands"]) == {"data", "eval"}
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_script("test_controller.py", "--logdir", str(logdir), "--random", "--results",
                      str(blocker / "x.json"), check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "not a writable folder" in proc.stderr
    assert "episodes" not in proc.stdout  # refused before any work


def test_the_data_stage_names_only_the_folders_m_learned_from(tmp_path) -> None:
    """A C kept from round 1 never saw round 2's episodes: its ledger lists the random data
    and round 1's collection, which its M's latent cache holds, and not round 2's."""
    data, exp = tmp_path / "data", tmp_path / "exp"
    for i, folder in enumerate((data, data / "exp_round01", data / "exp_round02")):
        folder.mkdir(parents=True)
        run = {"command": f"python generation_script.py --seed {i}", "seconds": 1.0, "finished": f"2026-01-0{i + 1}"}
        (folder / "runs.jsonl").write_text(json.dumps(run) + "\n")
    (exp / "latents").mkdir(parents=True)
    files = [["rollout_000000.npz", 10, 1], ["exp_round01/rollout_000000.npz", 10, 1]]
    (exp / "latents" / "meta.json").write_text(json.dumps({"files": files}))
    kept = stages(exp, data, "mdrnn", None)["data"]["commands"]
    assert kept == ["python generation_script.py --seed 0", "python generation_script.py --seed 1"]
    assert len(stages(exp, data, None, None)["data"]["commands"]) == 3  # the random policy: no M, the whole dataset
