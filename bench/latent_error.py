"""How well each trained M predicts V's latents open-loop, next to what its training cost.

    python bench/latent_error.py --logdir exp/carracing_cmp --models mdrnn rssm tssm

For every M in the logdir (dynamics/<model>/best.pt, all trained on the same latents), on
the held-out episodes of <logdir>/split.json (those under --only PREFIX, if given): from
every step t, M filters the real latents z_0..z_t, then imagines --horizon steps under the
real actions with its most likely outcome (temperature -> 0). Prints the mean squared error
per latent dimension 1 step and --horizon steps ahead, as such and as a ratio to copying
the last real latent (z_{t+k} = z_t), and the seconds its training batches took
(metrics.jsonl, all epochs).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data.dataset import episode_split, open_dataset, relative_names  # noqa: E402
from data.latents import cached_dataset, latent_cache  # noqa: E402
from utils.dreams import mean_latent_errors  # noqa: E402
from utils.upstream import DYNAMICS, load_dynamics, load_vae  # noqa: E402


def training_cost(logdir: Path, name: str) -> tuple[int, str]:
    """(epochs, seconds of training batches) from dynamics/<name>/metrics.jsonl; the seconds
    read "n/a" for runs older than the train/seconds metric."""
    rows = [json.loads(ln) for ln in (logdir / "dynamics" / name / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train/loss" in r]
    if any("train/seconds" not in r for r in train):
        return len(train), "n/a"
    return len(train), f"{sum(r['train/seconds'] for r in train):.0f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--models", nargs="+", choices=list(DYNAMICS), default=list(DYNAMICS))
    p.add_argument("--horizon", type=int, default=15)
    p.add_argument("--max-steps", type=int, default=300, help="steps used per held-out episode (memory)")
    p.add_argument("--only", default="", metavar="PREFIX",
                   help="held-out episodes whose dataset path starts with PREFIX, e.g. controller_ "
                        "to score Ms on the trained C's episodes (iterative training)")
    a = p.parse_args()
    torch.set_grad_enabled(False)
    cpu = torch.device("cpu")
    vae, vae_id = load_vae(a.logdir, cpu)
    dataset = cached_dataset(a.logdir)
    files = open_dataset(dataset)
    lat = latent_cache(a.logdir, dataset, files, vae, vae_id, cpu)
    _, val = episode_split(a.logdir, files)
    names = relative_names(files)
    episodes = [i for i in val if names[i].startswith(a.only)]
    print(f"{len(episodes)} held-out episodes, up to {a.max_steps} steps each, horizon {a.horizon}\n")
    print(f"| M | parameters | epochs | training s | MSE 1 step (/ copy) | MSE {a.horizon} steps (/ copy) |")
    print("|---|---|---|---|---|---|")
    for name in a.models:
        m, _ = load_dynamics(a.logdir, name, vae, vae_id, cpu)
        errors = mean_latent_errors(m, vae, lat, episodes, a.horizon, a.max_steps)
        if errors is None:
            sys.exit(f"no held-out episode is longer than --horizon {a.horizon}")
        err, copy = errors
        epochs, seconds = training_cost(a.logdir, name)
        n = sum(q.numel() for q in m.parameters())
        print(f"| {name} | {n:,} | {epochs} | {seconds} | {err[0]:.4f} ({err[0] / copy[0]:.2f}) "
              f"| {err[-1]:.4f} ({err[-1] / copy[-1]:.2f}) |")


if __name__ == "__main__":
    main()
