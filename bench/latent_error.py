"""How well each trained M predicts V's latents open-loop, next to what its training cost.

    python bench/latent_error.py --logdir exp/carracing_cmp --models mdrnn rssm tssm

For every M in the logdir (dynamics/<model>/best.pt, all trained on the same latents), on
the held-out episodes of <logdir>/split.json: from every step t, M filters the real
latents z_0..z_t, then imagines --horizon steps under the real actions with its most
likely outcome (temperature -> 0). Prints the mean squared error per latent dimension 1
step and --horizon steps ahead, as such and as a ratio to copying the last real latent
(z_{t+k} = z_t), and the seconds its training batches took (metrics.jsonl, all epochs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.dataset import open_dataset  # noqa: E402
from data.latents import cached_dataset, latent_cache  # noqa: E402
from utils.dreams import latent_errors  # noqa: E402
from utils.upstream import DYNAMICS, load_dynamics, load_vae  # noqa: E402


def training_cost(logdir: Path, name: str) -> tuple[int, float]:
    """(epochs, seconds of training batches) from dynamics/<name>/metrics.jsonl."""
    rows = [json.loads(ln) for ln in (logdir / "dynamics" / name / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/loss" in r]
    if any("train/seconds" not in r for r in train):
        raise SystemExit(f"{name}: metrics.jsonl predates train/seconds; retrain it with --noreload")
    return len(train), sum(r["train/seconds"] for r in train)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--models", nargs="+", choices=list(DYNAMICS), default=list(DYNAMICS))
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--max-steps", type=int, default=300, help="steps used per held-out episode (memory)")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    cpu = torch.device("cpu")
    vae, vae_id = load_vae(a.logdir, cpu)
    dataset = cached_dataset(a.logdir)
    lat = latent_cache(a.logdir, dataset, open_dataset(dataset), vae, vae_id, cpu)
    val = json.loads((a.logdir / "split.json").read_text())["val"]
    episodes = []
    for e in [lat.names.index(n) for n in val]:
        span = lat.episode(e)
        stop = min(span.stop, span.start + a.max_steps + 1)
        if stop - span.start > a.horizon + 1:
            z = vae.sample(torch.tensor(lat.stats[span.start:stop]), mean=True)[None]
            episodes.append((z, torch.tensor(lat.actions[span.start:stop - 1])[None]))
    print(f"{len(episodes)} held-out episodes, up to {a.max_steps} steps each, horizon {a.horizon}\n")
    print(f"| M | parameters | epochs | training s | MSE 1 step (/ copy) | MSE {a.horizon} steps (/ copy) |")
    print("|---|---|---|---|---|---|")
    for name in a.models:
        m, _ = load_dynamics(a.logdir, name, vae, vae_id, cpu)
        err, copy = torch.zeros(a.horizon), torch.zeros(a.horizon)
        for z, act in episodes:
            e, c = latent_errors(m, z, act, a.horizon)
            err, copy = err + e, copy + c
        err, copy = err / len(episodes), copy / len(episodes)
        epochs, seconds = training_cost(a.logdir, name)
        n = sum(q.numel() for q in m.parameters())
        print(f"| {name} | {n:,} | {epochs} | {seconds:.0f} | {err[0]:.4f} ({err[0] / copy[0]:.2f}) "
              f"| {err[-1]:.4f} ({err[-1] / copy[-1]:.2f}) |")


if __name__ == "__main__":
    main()
