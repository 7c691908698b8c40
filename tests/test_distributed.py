"""torchrun: 2 CPU processes (gloo) train like 1 process on the same global batch, resume,
and write the logdir once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import ROOT, run_script
from utils.checkpoint import load_checkpoint

M_ARGS = ["--epochs", "2", "--hidden-size", "32", "--seq-len", "8", "--batch-size", "16", "--nodreams",
          "--device", "cpu", "--dropout", "0.1"]  # the dropout masks must follow their rows across ranks too
AC_ARGS = ["--method", "ac", "--select", "dream", "--eval-every", "2", "--eval-episodes", "8", "--batch-size", "4",
           "--seq-len", "8", "--units", "32", "--device", "cpu"]


def torchrun(script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check and proc.returncode != 0:
        pytest.fail(f"torchrun {script} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def losses(logdir: Path, stage: str) -> list[tuple[float, float]]:
    lines = [json.loads(ln) for ln in (logdir / stage / "metrics.jsonl").read_text().splitlines()]
    train = [ln["train/loss"] for ln in lines if "train/loss" in ln]
    val = [ln["val/loss"] for ln in lines if "val/loss" in ln]
    return list(zip(train, val, strict=True))


@pytest.fixture
def logdirs(grid_vae, tmp_path) -> list[Path]:
    return [Path(shutil.copytree(grid_vae, tmp_path / name)) for name in ("one", "two", "resumed")]


def test_two_ranks_follow_one_process_and_resume_exactly(logdirs, grid_data) -> None:
    """M (MDN-RNN) on the same global batch of 16: per-epoch train and validation losses agree
    to 1e-4 relative (float sums in another order), and the weights to 1e-4; a run resumed
    under torchrun after epoch 1 ends exactly where the uninterrupted one did."""
    one, two, resumed = logdirs
    data = ["--dataset", str(grid_data)]
    run_script("traindynamics.py", "--logdir", str(one), *data, *M_ARGS)
    proc = torchrun("traindynamics.py", "--logdir", str(two), *data, *M_ARGS)
    assert proc.stdout.count("epoch 2: train loss") == 1  # rank 0 alone prints
    l1, l2 = losses(one, "dynamics/mdrnn"), losses(two, "dynamics/mdrnn")
    assert len(l1) == len(l2) == 2 and l1[1][0] < l1[0][0]  # it learns
    for (t1, v1), (t2, v2) in zip(l1, l2, strict=True):
        assert t2 == pytest.approx(t1, rel=1e-4) and v2 == pytest.approx(v1, rel=1e-4)
    w1, w2 = (load_checkpoint(d / "dynamics" / "mdrnn" / "best.pt")["model"] for d in (one, two))
    assert all(torch.allclose(w1[k], w2[k], atol=1e-4) for k in w1)

    torchrun("traindynamics.py", "--logdir", str(resumed), *data, *M_ARGS[:1], "1", *M_ARGS[2:])
    proc = torchrun("traindynamics.py", "--logdir", str(resumed), *data, *M_ARGS)
    assert "resuming" in proc.stdout
    assert losses(resumed, "dynamics/mdrnn") == l2
    w3 = load_checkpoint(resumed / "dynamics" / "mdrnn" / "best.pt")["model"]
    assert all(torch.equal(w2[k], w3[k]) for k in w2)


def test_trainvae_under_torchrun_logs_each_epoch_once(grid_data, tmp_path) -> None:
    logdir = tmp_path / "exp"
    torchrun("trainvae.py", "--logdir", str(logdir), "--dataset", str(grid_data), "--epochs", "1", "--width", "8",
             "--batch-size", "64", "--device", "cpu")
    assert len(losses(logdir, "vae")) == 1
    assert len(list((logdir / "vae" / "samples").glob("*.png"))) == 1
    assert load_checkpoint(logdir / "vae" / "best.pt")["epoch"] == 1


def test_actor_critic_under_torchrun_runs_and_resumes(grid_world, tmp_path) -> None:
    logdir = Path(shutil.copytree(grid_world, tmp_path / "exp"))
    torchrun("trainagent.py", "--logdir", str(logdir), *AC_ARGS, "--updates", "2")
    proc = torchrun("trainagent.py", "--logdir", str(logdir), *AC_ARGS, "--updates", "4")
    assert "resuming" in proc.stdout and "4 updates" in proc.stdout
    lines = (logdir / "agent" / "mdrnn" / "ac" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(ln)["step"] for ln in lines] == [2, 4]
    assert load_checkpoint(logdir / "agent" / "mdrnn" / "ac" / "latest.pt")["loop"]["update"] == 4


def test_cmaes_under_torchrun_is_refused(grid_world, tmp_path) -> None:
    logdir = Path(shutil.copytree(grid_world, tmp_path / "exp"))
    proc = torchrun("trainagent.py", "--logdir", str(logdir), "--dream", "--device", "cpu", check=False)
    assert proc.returncode != 0 and "--max-workers or --ray" in proc.stderr
