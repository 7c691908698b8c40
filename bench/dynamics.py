"""Stage 3 throughput: traindynamics.py against M's own forward+backward, and dream speed.

    python bench/dynamics.py [--model mdrnn rssm tssm]

For each M:
1. Sequences/s of real traindynamics.py epochs (from its metrics.jsonl) divided by
   sequences/s of forward+backward+Adam on a batch already in memory, each the median of
   REPEATS measurements; target >= 0.9.
   Runs on 200 synthetic episodes of 500 steps, encoded by a tiny untrained V.
2. Imagined steps/s with 1024 dreams stepped together through the world-model interface,
   at CarRacing size (z 32) and Doom size (z 64): MDN-RNN with LSTM 256 and 512 (Ha), RSSM
   at Dreamer's sizes (deter 200, stoch 30, MLPs 200) for both, TSSM at traindynamics.py's
   defaults (width 256, 2 layers, 4 heads, context 32) for both; its key/value cache has a
   fixed shape, so every dream step costs the same however full the context is.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.vae import synthetic_dataset  # noqa: E402
from models.vae import VAE, VAEConfig  # noqa: E402
from utils.checkpoint import save_checkpoint  # noqa: E402
from utils.logdir import StageDir  # noqa: E402
from utils.upstream import DYNAMICS, build_dynamics  # noqa: E402

REPEATS = 3  # single 5-second measurements swung from 0.68 to 1.06 on a shared 2-core machine

# traindynamics.py's default sizes per M, and the LSTM of Ha's Doom M
SIZES = {"mdrnn": {32: {"hidden_size": 256}, 64: {"hidden_size": 512}},
         "rssm": {32: {"hidden_size": 200}, 64: {"hidden_size": 200}},
         "tssm": {32: {"hidden_size": 256}, 64: {"hidden_size": 256}}}


def build(name: str, z_size: int) -> torch.nn.Module:
    return build_dynamics(name, {"z_size": z_size, "action_size": 3, **SIZES[name][z_size]})


def in_memory_rate(name: str, batch: int, seq_len: int, steps: int) -> float:
    m = build(name, 32)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    z = torch.randn(batch, seq_len + 1, m.z_size)
    a = torch.rand(batch, seq_len, m.action_size)
    ones = torch.ones(batch, seq_len)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        loss, _ = m.loss(z, a, ones * 0, ones * 0, ones, ones)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)  # as traindynamics does (--grad-clip)
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def training_ratio(name: str, batch: int, seq_len: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, logdir = Path(tmp) / "data", Path(tmp) / "exp"
        data.mkdir()
        synthetic_dataset(data, 200, 500)
        vae_stage = StageDir(logdir, "vae")
        vae_stage.start(False)
        cfg = VAEConfig(width=4)  # M's speed does not depend on V: a tiny V encodes quickly
        save_checkpoint(vae_stage.best, {"model": VAE(cfg).state_dict(), "identity": {"model": cfg.to_dict()}})
        cmd = [sys.executable, str(ROOT / "traindynamics.py"), "--logdir", str(logdir), "--dataset", str(data),
               "--epochs", str(REPEATS), "--nodreams", "--device", "cpu", "--batch-size", str(batch),
               "--seq-len", str(seq_len), "--model", name,
               "--hidden-size", str(SIZES[name][32]["hidden_size"])]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(proc.stderr)
        rows = [json.loads(ln) for ln in (logdir / "dynamics" / name / "metrics.jsonl").read_text().splitlines()]
    loop = statistics.median(r["train/batches_per_s"] for r in rows if "train/batches_per_s" in r) * batch
    bare = statistics.median(in_memory_rate(name, batch, seq_len, 100) for _ in range(REPEATS))
    print(f"M ({name}) training, batch {batch} x {seq_len} steps, {torch.get_num_threads()} threads, "
          f"medians of {REPEATS} epochs and {REPEATS} in-memory runs")
    print(f"  forward+backward on in-memory tensors  {bare:8.1f} sequences/s")
    print(f"  traindynamics.py epoch                 {loop:8.1f} sequences/s   ratio {loop / bare:.2f} "
          "(target >= 0.90)")


@torch.no_grad()
def dream_rate(m: torch.nn.Module, rollouts: int, steps: int) -> float:
    m.eval()
    state = m.observe(m.initial_state(rollouts), torch.randn(rollouts, m.z_size), None)
    a = torch.rand(rollouts, m.action_size)
    m.imagine(state, a)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, *_ = m.imagine(state, a, 1.15)
    return rollouts * steps / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--rollouts", type=int, default=1024)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--model", nargs="+", choices=list(DYNAMICS), default=list(DYNAMICS))
    a = p.parse_args()
    for name in a.model:
        training_ratio(name, a.batch_size, a.seq_len)
        for z_size, size in [(32, "CarRacing size (z 32)"), (64, "Doom size (z 64)")]:
            rate = dream_rate(build(name, z_size), a.rollouts, a.steps)
            print(f"  imagine, {a.rollouts} dreams at once, {size}: {rate:10.0f} steps/s")


if __name__ == "__main__":
    main()
