"""The logdir contract (DESIGN section 5): one folder per stage, shared by every script.
Under torchrun only rank 0 writes to it.

<logdir>/<stage>/ holds latest.pt (what a rerun resumes from), best.pt (what downstream
stages use), config.json and metrics.jsonl; TensorBoard files go to <logdir>/tb/<stage>.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from utils.checkpoint import CheckpointError, load_checkpoint
from utils.cli import UserError
from utils.distributed import barrier, world
from utils.io import write_json
from utils.runs import append_run


def writable_dir(path: Path) -> Path:
    """Create `path` if needed; a folder this process cannot write is one clear error, before any work."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {path}: {e.strerror or e}") from e
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to {path}: permission denied")
    return path


class StageDir:
    def __init__(self, logdir: str | Path, stage: str) -> None:
        self.logdir = Path(logdir)
        self.stage = stage
        self.path = self.logdir / stage
        self.latest = self.path / "latest.pt"
        self.best = self.path / "best.pt"
        self.metrics = self.path / "metrics.jsonl"
        self.tb_path = self.logdir / "tb" / stage.replace("/", "_")
        self._tb: Any = None

    def start(self, noreload: bool) -> None:
        """Create the folder; with noreload, discard everything this stage wrote before.
        Under torchrun rank 0 does it while the others wait."""
        if noreload and world().main:
            shutil.rmtree(self.path, ignore_errors=True)
            shutil.rmtree(self.tb_path, ignore_errors=True)
        writable_dir(self.path)
        barrier()

    def sub(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def write_config(self, config: dict[str, Any]) -> None:
        if world().main:
            write_json(self.path / "config.json", config)

    def resume_state(self, device: str | torch.device) -> dict[str, Any] | None:
        """latest.pt if there is one (never best.pt: that may be older than the last run)."""
        return load_checkpoint(self.latest, device) if self.latest.exists() else None

    def log(self, step: int, values: dict[str, float], prefix: str = "") -> None:
        """Append one JSON line and the matching TensorBoard scalars."""
        if not world().main:
            return
        values = {f"{prefix}{k}": float(v) for k, v in values.items()}
        with open(self.metrics, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        for k, v in values.items():
            self.tb.add_scalar(k, v, step)

    def trim_metrics(self, after_step: int) -> None:
        """Drop lines logged after the checkpoint we resume from, so nothing is duplicated."""
        if not self.metrics.exists() or not world().main:
            return
        keep = [ln for ln in self.metrics.read_text().splitlines() if ln and json.loads(ln)["step"] <= after_step]
        self.metrics.write_text("".join(ln + "\n" for ln in keep))

    def start_tb(self, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(self.tb_path), purge_step=purge_step) if world().main else _NullWriter()

    @property
    def tb(self) -> Any:
        if self._tb is None:
            self.start_tb(None)
        return self._tb

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()

    def record_run(self, started: float) -> None:
        """This invocation's command and wall time, in runs.jsonl (see utils/runs.py)."""
        if world().main:
            append_run(self.path, started)


class _NullWriter:
    """What ranks other than 0 log to under torchrun: nothing."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def controller_stage(logdir: str | Path, dynamics: str, method: str) -> StageDir:
    """C's folder: one per M and per method, so the Cs of every M live in one logdir."""
    return StageDir(logdir, f"agent/{dynamics}/{method}")


def require_upstream(stage: StageDir, what: str, command: str) -> dict[str, Any]:
    """best.pt of an upstream stage, or a clear error naming the command that makes it."""
    if not stage.best.exists():
        raise CheckpointError(f"no {what} in {stage.path}: run `{command}` first")
    return load_checkpoint(stage.best)
