"""The agent really learns: on the fixed GridWorld map, from the same 1500 random episodes,
CMA-ES in the real env and the actor-critic in imagination succeed in >= 95% of 100 real
episodes never trained on, a C evolved in the dream in >= 80%; the random policy succeeds
in about one in five.

The random-layout GridWorld-v0 is not solved by any C yet (RESULTS.md says why), so these
tests use GridWorldFixed-v0, the quickstart's task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_script

EVAL = ["--episodes", "100", "--workers", "2"]


@pytest.fixture
def logdir(fixed_world, tmp_path) -> Path:
    return Path(shutil.copytree(fixed_world, tmp_path / "exp"))


def success(logdir: Path, *args: str) -> float:
    """Success rate of test_controller.py over 100 held-out real episodes (seeds from 2^30)."""
    run_script("test_controller.py", "--logdir", str(logdir), *EVAL, *args)
    name = "random.json" if "--random" in args else "mdrnn_ac.json" if "ac" in args else "mdrnn_cmaes.json"
    return json.loads((logdir / "eval" / name).read_text())["success_rate"]


CMAES = ["--method", "cmaes", "--pop-size", "32", "--n-samples", "8", "--eval-every", "5",
         "--eval-episodes", "100", "--discrete", "sample", "--device", "cpu"]


def test_random_policy_is_far_from_solving_the_fixed_map(logdir) -> None:
    assert success(logdir, "--random") < 0.35


def test_cmaes_in_the_real_env_solves_the_fixed_map(logdir) -> None:
    run_script("trainagent.py", "--logdir", str(logdir), *CMAES, "--generations", "80", "--max-workers", "2")
    assert success(logdir) >= 0.95


def test_cmaes_in_the_dream_transfers_to_the_real_env(logdir) -> None:
    """Evolved only inside M (selection in the dream too), judged in the real env. This
    search scored 96.0%, 99.5% and 98.5% with seeds 0-2 (RESULTS.md), but a dream can be
    exploited, so the bar is 'far above random' rather than 95%."""
    run_script("trainagent.py", "--logdir", str(logdir), *CMAES, "--dream", "--generations", "40")
    assert success(logdir) >= 0.8


def test_actor_critic_in_imagination_solves_the_fixed_map(logdir) -> None:
    """Dreamer's learner on M's imagination, selected on real episodes. gamma 0.9 fits
    16-step episodes; with Dreamer's 0.99 the critic's bootstrap amplifies M's small reward
    errors (up to +0.13 per step where the env pays -0.01) into a loop worth more than the goal."""
    run_script("trainagent.py", "--logdir", str(logdir), "--method", "ac", "--dynamics", "mdrnn", "--updates", "400",
               "--eval-every", "100", "--eval-episodes", "100", "--max-workers", "0", "--actor-lr", "3e-4",
               "--critic-lr", "3e-4", "--act", "sample", "--entropy", "1e-2", "--temperature", "0.1",
               "--gamma", "0.9", "--device", "cpu")
    assert success(logdir, "--method", "ac") >= 0.95
