"""Stage 2 throughput and memory: trainvae.py against V's own forward+backward.

    python bench/vae.py                                        # throughput ratio, synthetic data
    python bench/vae.py --dataset datasets/carracing           # throughput ratio on a real dataset
    python bench/vae.py --memory --episodes 1000 --frames 1000 # peak memory, CarRacing-sized data
    python bench/vae.py --settings --latent-size 64            # speed of each V setting, Doom-sized z

Throughput: frames/s of a real trainvae.py epoch (data path, logging and all, taken from
its metrics.jsonl) divided by frames/s of forward+backward+Adam on one batch already in
memory, same model, batch size and threads. Target (issue 3): >= 0.9.
Memory: builds a synthetic CarRacing-sized dataset (uint8 64x64 frames), trains on it
for --seconds and reports the peak resident memory of the training process; target < 4 GB.
Settings: the bare step's frames/s under each speed setting trainvae.py offers (--batch-size,
--amp bf16, --width), as a ratio to Ha's (batch 32, fp32, width 32) measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.rollouts import save_rollout  # noqa: E402
from models.vae import VAE, VAEConfig  # noqa: E402
from utils.precision import Precision, native_bf16  # noqa: E402


def in_memory_rate(batch_size: int, steps: int, amp: str = "none", width: int = 32, latent_size: int = 32) -> float:
    """Frames/s of the bare model step: the ceiling a training loop can reach."""
    vae = VAE(VAEConfig(latent_size=latent_size, width=width))
    opt = torch.optim.Adam(vae.parameters(), 1e-3)
    precision = Precision(amp, torch.device("cpu"))
    x = torch.rand(batch_size, 3, 64, 64)
    for i in range(steps + 3):
        if i == 3:
            t0 = time.perf_counter()
        with precision.autocast():
            loss, _ = vae.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch_size / (time.perf_counter() - t0)


# (batch size, --amp, --width): Ha's setting first, then each lever alone, then together
SETTINGS = [(32, "none", 32), (128, "none", 32), (32, "bf16", 32), (128, "bf16", 32), (32, "none", 16),
            (128, "none", 16), (128, "bf16", 16)]


def settings_table(latent_size: int, frames: int) -> None:
    """Each setting's bare-step frames/s over about `frames` frames, and its ratio to Ha's."""
    emulated = not native_bf16()  # bf16 runs about 40x slower there: a tenth of the frames tells as much
    rates = {s: in_memory_rate(s[0], max(4, frames // s[0] // (10 if emulated and s[1] == "bf16" else 1)), s[1],
                               s[2], latent_size) for s in SETTINGS}
    base = rates[SETTINGS[0]]
    print(f"V's step at z {latent_size}, {torch.get_num_threads()} threads (ratio to batch 32, fp32, width 32)"
          + (", bf16 emulated: this CPU has no native bf16" if emulated else "") + ":")
    for (batch, amp, width), rate in rates.items():
        print(f"  --batch-size {batch:<4} --amp {amp:<5} --width {width:<3} {rate:7.0f} frames/s  x{rate / base:.2f}")


def trainvae(logdir: Path, dataset: Path, batch_size: int, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "trainvae.py"), "--logdir", str(logdir), "--dataset", str(dataset),
           "--batch-size", str(batch_size), "--nosamples", "--device", "cpu", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def throughput(dataset: Path | None, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        logdir = Path(tmp) / "exp"
        if dataset is None:
            dataset = Path(tmp) / "data"
            dataset.mkdir()
            synthetic_dataset(dataset, 20, 500)
        proc = trainvae(logdir, dataset, batch_size, "--epochs", "1")
        _, err = proc.communicate()
        if proc.returncode:
            sys.exit(err)
        line = json.loads((logdir / "vae" / "metrics.jsonl").read_text().splitlines()[0])
        loop = line["train/batches_per_s"] * batch_size
        bare = in_memory_rate(batch_size, 100)
        print(f"V training, batch {batch_size}, {torch.get_num_threads()} threads")
        print(f"  forward+backward on an in-memory batch  {bare:7.1f} frames/s")
        print(f"  trainvae.py epoch on {dataset}  {loop:7.1f} frames/s   ratio {loop / bare:.2f} (target >= 0.90)")


def synthetic_dataset(root: Path, episodes: int, frames: int) -> None:
    """CarRacing-sized episodes of smooth random frames (cheap to compress and write)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8).repeat(8, 0).repeat(8, 1)
    for e in range(episodes):
        shift = (np.arange(frames) + e) % 64
        obs = np.stack([np.roll(base, s, axis=1) for s in shift])
        save_rollout(root / f"rollout_{e:06d}.npz", {
            "observations": obs,
            "actions": rng.uniform(-1, 1, (frames, 3)).astype(np.float32),
            "rewards": np.zeros(frames, np.float32),
            "terminals": np.zeros(frames, bool),
            "truncations": np.eye(1, frames, frames - 1, dtype=bool)[0],
        })


def peak_memory(episodes: int, frames: int, seconds: float, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset, logdir = Path(tmp) / "data", Path(tmp) / "exp"
        dataset.mkdir()
        t0 = time.monotonic()
        synthetic_dataset(dataset, episodes, frames)
        print(f"wrote {episodes} x {frames} synthetic frames in {time.monotonic() - t0:.0f} s")
        proc = trainvae(logdir, dataset, batch_size, "--epochs", "1")
        peak = {"VmRSS": 0, "RssAnon": 0}
        t0, training = time.monotonic(), None
        while proc.poll() is None:
            status = Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            for line in status:
                key, _, value = line.partition(":")
                if key in peak:
                    peak[key] = max(peak[key], int(value.split()[0]) * 1024)
            if training is None and (Path(dataset) / "cache" / "frames.json").exists():
                training = time.monotonic()
            if training and time.monotonic() - training > seconds:
                proc.kill()
            time.sleep(0.2)
        proc.wait()
    gib = 2**30
    print(f"cache built in {training - t0:.0f} s, then trained for {seconds:.0f} s")
    print(f"  peak resident memory {peak['VmRSS'] / gib:.2f} GiB "
          f"(anonymous {peak['RssAnon'] / gib:.2f} GiB; the rest is shared libraries and mapped frame pages)")
    print(f"  dataset {episodes * frames * 64 * 64 * 3 / gib:.1f} GiB of frames; target < 4 GB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, help="default: 20 synthetic episodes of 500 frames")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--memory", action="store_true", help="measure peak memory on a synthetic dataset")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=120)
    p.add_argument("--settings", action="store_true", help="compare V's speed settings (batch, bf16, width)")
    p.add_argument("--latent-size", type=int, default=32, help="--settings: z dimensions (Doom: 64)")
    a = p.parse_args()
    if a.settings:
        settings_table(a.latent_size, 4096)
    elif a.memory:
        peak_memory(a.episodes, a.frames, a.seconds, a.batch_size)
    else:
        throughput(a.dataset, a.batch_size)


if __name__ == "__main__":
    main()
