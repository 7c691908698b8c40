"""Shared test helpers: run a stage script as a user would, from the repo root."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
