"""Shared test helpers: run a stage script as a user would, from the repo root.

The suite runs on one pytest-xdist worker per core (pyproject.toml); the tests that share a
trained fixture run on one worker, which builds that fixture once. Every process, the
scripts it starts included, computes with two threads: the learning tests' thresholds hold
for M and C trained with that float rounding (with one thread a worker the fixed map's dream
C transferred 22% of the time instead of >= 80%), and a machine with more cores would
otherwise round differently and run cores x cores threads. The CPU's vector width (AVX2 or
AVX-512) still changes the rounding, so thresholds need a margin beyond one machine's. OpenMP's threads sleep rather
than spin when they wait, so the workers share the cores."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

# before torch is imported, here or by a script this process starts
os.environ.setdefault("OMP_NUM_THREADS", "2")
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import pytest
from _pytest.nodeid import NodeId

from quickstart import M_FLAGS, V_FLAGS

ROOT = Path(__file__).resolve().parents[1]

# tests that need one of these run together: a fixture is built once per worker that needs it
SHARED = {"grid_data": "gridworld", "grid_vae": "gridworld", "grid_world": "gridworld",
          "fixed_world": "gridworld_fixed"}
# modules whose tests must not overlap with each other (one local Ray instance at a time)
SERIAL_MODULES = {"test_ray.py": "ray"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Send each group of tests to a single xdist worker (--dist loadgroup). xdist 3.8 marks a
    group in the test's id, which pytest 9.2 keeps in `_id`, so the id is set here."""
    for item in items:
        groups = {SHARED[f] for f in item.fixturenames if f in SHARED}
        assert len(groups) <= 1, f"{item.nodeid} needs two trained fixtures; they would be built twice"
        group = groups.pop() if groups else SERIAL_MODULES.get(item.path.name)
        if group and getattr(config.option, "loadgroup", False):  # set on xdist's workers only
            item._id = NodeId.parse(f"{item.nodeid}@{group}")


def run_script(script: str, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python <script> args...` in the repo root; fail with its output if it fails."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
    )
    if check and proc.returncode != 0:
        pytest.fail(f"{script} {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


# The quickstart's GridWorld V: it learns in under a minute on 2 CPU cores.
GRID_VAE = list(V_FLAGS)


@pytest.fixture(scope="session")
def grid_data(tmp_path_factory) -> Path:
    """1500 random GridWorld episodes (about 18,000 frames)."""
    root = tmp_path_factory.mktemp("gridworld")
    run_script("generation_script.py", "--rootdir", str(root), "--rollouts", "1500", "--threads", "2")
    return root


@pytest.fixture(scope="session")
def grid_vae(grid_data, tmp_path_factory) -> Path:
    """A logdir whose vae/ holds V trained on grid_data with GRID_VAE. Copy, don't write."""
    logdir = tmp_path_factory.mktemp("grid_vae")
    run_script("trainvae.py", "--logdir", str(logdir), "--dataset", str(grid_data), "--device", "cpu", *GRID_VAE)
    return logdir


# M for GridWorld: episodes last about 12 steps and endings are rare, so reward and done weigh more.
GRID_M = ["--epochs", "60", "--seq-len", "16", "--reward-weight", "5", "--done-weight", "5", "--nodreams"]


# The RSSM for GridWorld: Dreamer's GRU and MLP widths with DreamerV2's categorical state at
# half its size. Gaussian states, or a GRU narrower than 200, learned done but not the sign of
# the reward (RESULTS.md, "World models on GridWorld").
GRID_RSSM = ["--model", "rssm", "--epochs", "60", "--seq-len", "16", "--deter", "200", "--stoch", "16",
             "--classes", "16", "--hidden-size", "200", "--reward-weight", "5", "--done-weight", "5", "--nodreams"]

# The TSSM for GridWorld: one narrow layer sees whole episodes (about 12 steps); more layers
# or width only overfit 1500 episodes.
GRID_TSSM = ["--model", "tssm", "--epochs", "40", "--seq-len", "16", "--context", "16", "--layers", "1",
             "--hidden-size", "64", "--dropout", "0", "--reward-weight", "5", "--done-weight", "5", "--nodreams"]


@pytest.fixture(scope="session")
def grid_world(grid_vae, grid_data, tmp_path_factory) -> Path:
    """A logdir with V and every M (MDN-RNN with GRID_M, RSSM with GRID_RSSM, TSSM with
    GRID_TSSM) trained on grid_data. Copy, don't write."""
    logdir = tmp_path_factory.mktemp("grid_world") / "exp"
    shutil.copytree(grid_vae, logdir)
    for m_args in (GRID_M, GRID_RSSM, GRID_TSSM):
        run_script("traindynamics.py", "--logdir", str(logdir), "--dataset", str(grid_data), "--device", "cpu", *m_args)
    return logdir


# The quickstart's M for the fixed map: one small LSTM learns its 14 cells.
FIXED_M = [*M_FLAGS, "--nodreams"]


@pytest.fixture(scope="session")
def fixed_world(tmp_path_factory) -> Path:
    """A logdir with V (GRID_VAE), the MDN-RNN (FIXED_M, as quickstart.py trains them) and the
    RSSM (GRID_RSSM) trained on 1500 random episodes of GridWorldFixed-v0. Copy, don't write."""
    data = tmp_path_factory.mktemp("gridworld_fixed")
    run_script("generation_script.py", "--env", "GridWorldFixed-v0", "--rootdir", str(data), "--rollouts", "1500",
               "--threads", "2")
    logdir = tmp_path_factory.mktemp("fixed_world") / "exp"
    run_script("trainvae.py", "--logdir", str(logdir), "--dataset", str(data), "--device", "cpu", *GRID_VAE)
    for m_args in (FIXED_M, GRID_RSSM):
        run_script("traindynamics.py", "--logdir", str(logdir), "--dataset", str(data), "--device", "cpu", *m_args)
    return logdir
