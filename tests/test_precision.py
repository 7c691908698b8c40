"""--amp: mixed precision trains M and the actor-critic on CPU (bf16); fp16 is refused there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import run_script
from utils import precision
from utils.checkpoint import load_checkpoint
from utils.precision import Precision

M_ARGS = ["--epochs", "2", "--hidden-size", "32", "--seq-len", "8", "--batch-size", "16", "--nodreams",
          "--device", "cpu"]


def train_losses(logdir: Path, stage: str) -> list[float]:
    lines = [json.loads(ln) for ln in (logdir / stage / "metrics.jsonl").read_text().splitlines()]
    return [ln["train/loss"] for ln in lines if "train/loss" in ln]


def test_bf16_trains_m_with_float32_weights(grid_vae, grid_data, tmp_path) -> None:
    runs = {}
    for amp in ("none", "bf16"):
        logdir = Path(shutil.copytree(grid_vae, tmp_path / amp))
        run_script("traindynamics.py", "--logdir", str(logdir), "--dataset", str(grid_data), *M_ARGS, "--amp", amp)
        runs[amp] = train_losses(logdir, "dynamics/mdrnn")
        weights = load_checkpoint(logdir / "dynamics" / "mdrnn" / "best.pt")["model"]
        assert all(w.dtype == torch.float32 for w in weights.values())
    assert runs["bf16"][1] < runs["bf16"][0]  # it learns
    assert runs["bf16"] != runs["none"]  # autocast really ran in lower precision
    assert runs["bf16"] == pytest.approx(runs["none"], rel=0.02)  # and agrees with float32 closely


def test_actor_critic_imagines_in_bf16(grid_world, tmp_path) -> None:
    logdir = Path(shutil.copytree(grid_world, tmp_path / "exp"))
    run_script("trainagent.py", "--logdir", str(logdir), "--method", "ac", "--select", "dream", "--updates", "4",
               "--eval-every", "2", "--eval-episodes", "8", "--batch-size", "4", "--units", "32", "--device", "cpu",
               "--amp", "bf16")
    lines = [json.loads(ln) for ln in (logdir / "agent" / "mdrnn" / "ac" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all(torch.isfinite(torch.tensor(ln["actor_loss"])) for ln in lines)


def test_fp16_on_a_cpu_is_a_clear_error(grid_vae, grid_data, tmp_path) -> None:
    logdir = Path(shutil.copytree(grid_vae, tmp_path / "exp"))
    proc = run_script("traindynamics.py", "--logdir", str(logdir), "--dataset", str(grid_data), *M_ARGS,
                      "--amp", "fp16", check=False)
    assert proc.returncode == 2 and "--amp fp16 is for GPUs" in proc.stderr


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_is_bf16_only_where_the_cpu_computes_it(monkeypatch, native: bool, capsys) -> None:
    """auto: bf16 on a CPU with native bf16, float32 on one that would emulate it (about 40x
    slower for V); an explicit bf16 on such a CPU still runs in bf16 and says why it is slow."""
    monkeypatch.setattr(precision, "native_bf16", lambda: native)
    cpu = torch.device("cpu")
    assert Precision("auto", cpu).mode == ("bf16" if native else "none")
    assert Precision("auto", torch.device("cuda")).mode == "bf16"
    assert Precision("bf16", cpu).mode == "bf16"
    assert ("emulated" in capsys.readouterr().out) is not native
