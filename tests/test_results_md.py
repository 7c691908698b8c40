"""RESULTS.md is what tools/results_md.py makes of results/: every figure has its ledger file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tools.results_md import render, where


def test_results_md_agrees_with_the_ledger() -> None:
    assert (ROOT / "RESULTS.md").read_text() == render(ROOT / "results", ROOT / "docs" / "findings.md"), \
        "RESULTS.md is out of date: run python tools/results_md.py"


def record(seed: int, returns: list[float]) -> dict:
    return {"env": "GridWorldFixed-v0", "dynamics": "mdrnn", "controller": "cmaes", "dream_only": False,
            "returns": returns, "mean": sum(returns) / len(returns), "std": 0.5, "success_rate": 0.5,
            "seed": {"data": seed, "vae": seed, "dynamics": seed, "controller": seed, "eval": 2**30},
            "commands": {"data": [f"python generation_script.py --seed {seed}"], "eval": ["python test_controller.py"]},
            "seconds": {"data": 1.0, "eval": 2.0}, "commit": "abc", "torch": "2.13.0", "cpus": 2, "device": "cpu",
            "evaluation": {"where": "real"}}


def test_runs_of_one_recipe_get_a_row_over_seeds(tmp_path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for seed, returns in ((0, [1.0, 0.0]), (1, [1.0, 1.0]), (2, [0.0, 0.0])):
        (results / f"fixed_cmaes_seed{seed}.json").write_text(json.dumps(record(seed, returns)))
    rand = {**record(0, [0.0, -1.0]), "controller": "random", "dynamics": None, "success_rate": 0.25}
    (results / "fixed_random.json").write_text(json.dumps(rand))
    text = render(results, tmp_path / "none.md")
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len([r for r in rows if "[fixed_cmaes_seed" in r]) == 3
    # per-seed means 0.5, 1, 0: mean 0.5, population std 0.408
    assert "0.5 +/- 0.408 over 3 seeds" in text
    assert "random policy: -0.5 +/- 0.5, 25.0% success" in text  # the anchor where no paper has one
    assert "python generation_script.py --seed 0" in text and "seed1" not in text.split("```bash")[1]


def test_a_file_that_is_not_a_ledger_file_is_named(tmp_path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.json").write_text(json.dumps({"env": "GridWorld-v0"}))
    with pytest.raises(SystemExit, match="x.json: not a ledger file"):
        render(tmp_path / "results", Path("none"))


def test_where_c_learned_comes_from_the_record_and_its_commands() -> None:
    dream = {**record(0, [1.0]), "dream_only": True}
    chosen = {**record(0, [1.0]), "commands": {"controller": ["python trainagent.py --dream --select real"]}}
    real = {**record(0, [1.0]), "commands": {"controller": ["python trainagent.py --max-workers 8"]}}
    ac = {**record(0, [1.0]), "controller": "ac"}
    assert [where(r) for r in (dream, chosen, real, ac)] == ["dream only", "dream, real selection", "real env",
                                                             "dream, real selection"]
