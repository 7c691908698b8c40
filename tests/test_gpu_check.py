"""bench/gpu_check.py on the CPU: the smoke run CI can afford, and its refusal of a missing GPU.

The GPU run itself needs a GPU; this keeps its command lines, its skip rules and its report
from rotting between GPU runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu_check.py"


def run_check(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def test_cpu_smoke_passes_bf16_and_skips_fp16(tmp_path: Path) -> None:
    out = tmp_path / "gpu_check.json"
    proc = run_check("--device", "cpu", "--json", str(out), "--workdir", str(tmp_path / "work"))
    assert out.exists(), proc.stdout + proc.stderr
    res = json.loads(out.read_text())
    checks = res["checks"]
    failed = {c["name"]: c["detail"] for c in checks if c["status"] not in ("pass", "skip")}
    assert not failed, "\n\n".join(f"{name}: {detail}" for name, detail in failed.items())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert res["device"] == "cpu" and res["torch"] == torch.__version__ and res["passed"]
    assert all(c["device"] == "cpu" and c["torch"] == torch.__version__ for c in checks)
    fp16 = [c for c in checks if c["amp"] == "fp16"]
    bf16 = [c for c in checks if c["amp"] == "bf16"]
    # V, every M and the actor-critic, in each precision
    assert {c["stage"] for c in fp16} == {c["stage"] for c in bf16} == {"V", "M", "C"}
    assert {c["name"].split()[1] for c in bf16 if c["stage"] == "M"} == {"mdrnn", "rssm", "tssm"}
    assert all(c["status"] == "skip" and c["detail"] == "fp16 is GPU-only" for c in fp16)
    assert all(c["status"] == "pass" for c in bf16)
    stages = {c["stage"] for c in checks if c["status"] == "pass"}
    assert stages == {"data", "V", "M", "C", "torchrun"}
    assert any("--dream" in c["command"] for c in checks if c["status"] == "pass")
    # one line per check, then the summary
    lines = proc.stdout.strip().splitlines()
    assert sum(ln.startswith(("PASS ", "SKIP ", "FAIL ")) for ln in lines) == len(checks)
    assert "SKIP  V --amp fp16 (cpu)" in proc.stdout and "skipped (fp16 is GPU-only)" in proc.stdout
    assert lines[-1].startswith(f"gpu_check: {len(checks) - len(fp16)} passed, 0 failed, {len(fp16)} skipped in ")
    assert lines[-1].endswith(f" s on cpu, torch {torch.__version__}")
    assert any((tmp_path / "work" / "logs").glob("*.err"))  # a given --workdir keeps its logs


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_one_line_and_exit_2() -> None:
    proc = run_check("--device", "cuda", timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "--device cuda" in proc.stderr and "--device cpu" in proc.stderr
