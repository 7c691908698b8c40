"""Shared test helpers: run a stage script as a user would, from the repo root."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from quickstart import M_FLAGS, V_FLAGS

ROOT = Path(__file__).resolve().parents[1]


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
