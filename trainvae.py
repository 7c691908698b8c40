"""Stage 2: train V, the convolutional VAE, on every frame of a rollout dataset.

    python trainvae.py --logdir exp --dataset datasets/carracing

Rerunning with the same --logdir resumes from <logdir>/vae/latest.pt (to the batch);
--noreload starts afresh. Downstream stages use <logdir>/vae/best.pt.
`torchrun --nproc-per-node N trainvae.py ...` trains data-parallel; --batch-size stays the
global batch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from data.dataset import episode_split, open_dataset
from data.frames import FrameBatches, frame_cache, prefetch
from models.vae import VAE, VAEConfig, frames_to_tensor
from utils.checkpoint import seed_everything
from utils.cli import UserError, run_main
from utils.device import to_device
from utils.distributed import check_batch, finish, init_world, main_first, world
from utils.logdir import StageDir
from utils.precision import AMP
from utils.training import Trainer, TrainSettings, mean_metrics

N_SHOW = 8


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True, help="folder written by generation_script.py")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--latent-size", type=int, default=32, help="z dimensions (categorical variables if discrete)")
    p.add_argument("--latent", choices=["continuous", "discrete"], default="continuous")
    p.add_argument("--classes", type=int, default=32, help="classes per categorical variable (discrete)")
    p.add_argument("--kl-tolerance", type=float, default=0.5, help="free nats per latent dimension")
    p.add_argument("--recon", choices=["mse", "bce"], default="mse",
                   help="reconstruction loss: mse (Ha) or bce (better on flat-colour frames like GridWorld)")
    p.add_argument("--width", type=int, default=32, help="channels of the first conv layer (Ha: 32)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=10, help="epochs without improvement before stopping")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, help="latest.pt within an epoch")
    p.add_argument("--noreload", action="store_true", help="discard this stage's checkpoints and start afresh")
    p.add_argument("--nosamples", action="store_true", help="skip the reconstruction PNG each epoch")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=AMP, default="none",
                   help="mixed precision: bf16 (GPUs since Ampere, CPUs with AVX-512 BF16 or AMX), fp16 with loss "
                        "scaling (GPUs), or auto: bf16 where it is native, else float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1, help="batches prefetched by a background thread")
    a = p.parse_args()
    if min(a.epochs, a.batch_size, a.latent_size, a.width, a.classes) < 1 or not 0 <= a.val_fraction < 1:
        p.error("sizes and --epochs must be >= 1 and --val-fraction in [0, 1)")
    return a


def sample_grid(vae: VAE, frames: np.ndarray, device: torch.device) -> np.ndarray:
    """Rows: real frames, their reconstructions (mean z), decodes of prior samples."""
    x = frames_to_tensor(to_device(torch.from_numpy(frames), device))
    recon = vae.decode(vae.sample(vae.encode(x), mean=True))
    cfg = vae.cfg
    if cfg.discrete:
        idx = torch.randint(cfg.classes, (len(x), cfg.latent_size), device=device)
        z = torch.nn.functional.one_hot(idx, cfg.classes).float().flatten(1)
    else:
        z = torch.randn(len(x), cfg.latent_size, device=device)
    rows = [torch.cat(list(t), dim=2) for t in (x, recon, vae.decode(z))]
    grid = torch.cat(rows, dim=1).clamp(0, 1).mul(255).byte().permute(1, 2, 0)
    return grid.cpu().numpy()


def main() -> None:
    started = time.monotonic()
    a = parse_args()
    device = init_world(a.device)
    check_batch(a.batch_size)
    files = open_dataset(a.dataset)
    stage = StageDir(a.logdir, "vae")
    stage.start(a.noreload)
    seed_everything(a.seed)
    train_eps, val_eps = main_first(episode_split, a.logdir, files, a.val_fraction)
    if not val_eps:
        raise UserError(f"{a.dataset} has a single episode: V needs at least 2 (one for validation)")
    frames, offsets = main_first(frame_cache, a.dataset, files)
    train = FrameBatches(frames, offsets, train_eps, a.batch_size, a.seed)
    val = FrameBatches(frames, offsets, val_eps, 256, a.seed)
    show = np.asarray(val.frames[val.index[np.linspace(0, len(val.index) - 1, N_SHOW).astype(int)]])

    cfg = VAEConfig(a.latent_size, a.width, a.latent == "discrete", a.classes, a.kl_tolerance, a.recon)
    vae = VAE(cfg).to(device)
    optimizer = torch.optim.Adam(vae.parameters(), lr=a.lr)
    settings = TrainSettings(a.epochs, stop_patience=a.patience, checkpoint_every_s=60 * a.checkpoint_minutes,
                             amp=a.amp)
    identity = {"model": cfg.to_dict(), "dataset": str(a.dataset.resolve()), "batch_size": a.batch_size,
                "seed": a.seed}
    trainer = Trainer(stage, vae, optimizer, settings, identity)
    trainer.restore(stage.resume_state(device))
    stage.write_config({**vars(a), "logdir": str(a.logdir), "dataset": str(a.dataset), "device": str(device)})
    print(f"V: {sum(p.numel() for p in vae.parameters()):,} parameters on {device}; "
          f"{len(train.index)} train / {len(val.index)} validation frames "
          f"({len(train_eps)} / {len(val_eps)} episodes)")

    def loss_fn(batch: np.ndarray):
        rows, weight = world().split(len(batch))  # this rank's share of the global batch
        loss, metrics = vae.loss(frames_to_tensor(to_device(torch.from_numpy(batch[rows]), device)))
        return loss * weight, metrics

    def val_batch(batch: np.ndarray) -> tuple[dict[str, torch.Tensor], int]:
        x = frames_to_tensor(to_device(torch.from_numpy(batch), device))
        _, metrics = vae.loss(x)
        metrics["pixel_mse"] = (vae.decode(vae.sample(vae.encode(x), mean=True)) - x).pow(2).mean()
        return metrics, len(batch)

    def validate() -> dict[str, torch.Tensor]:
        return mean_metrics(val_batch(b) for b in val.epoch(0, shuffle=False))

    def after_epoch(epoch: int) -> None:
        if a.nosamples or not world().main:
            return
        with torch.no_grad():
            grid = sample_grid(vae, show, device)
        Image.fromarray(grid).save(stage.sub("samples") / f"epoch_{epoch:03d}.png")
        stage.tb.add_image("samples", grid, epoch, dataformats="HWC")

    trainer.fit(
        lambda epoch, start: prefetch(train.epoch(epoch, start), a.workers),
        len(train), loss_fn, validate, after_epoch,
    )
    print(f"best validation loss {trainer.progress.best_val:.5g}: {stage.best}")
    stage.record_run(started)
    finish()


if __name__ == "__main__":
    run_main(main)
