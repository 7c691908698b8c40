"""Stage 3: train M, the world model, on V's latents of a rollout dataset.

    python traindynamics.py --model mdrnn --logdir exp --dataset datasets/carracing

The dataset is encoded once by <logdir>/vae/best.pt into <logdir>/latents/ (reused while
V is unchanged). Rerunning resumes from <logdir>/dynamics/<model>/latest.pt; --noreload
starts afresh. Each epoch writes an open-loop dream GIF to dynamics/<model>/dreams/.
`torchrun --nproc-per-node N traindynamics.py ...` trains data-parallel; --batch-size stays
the global batch.
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import numpy as np
import torch

from data.dataset import episode_split, open_dataset, relative_names
from data.frames import prefetch
from data.latents import latent_cache
from data.rollouts import load_rollout
from data.sequences import Batch, SequenceBatches
from models.noise import SeededNoise
from utils.checkpoint import seed_everything
from utils.cli import run_main
from utils.device import to_device
from utils.distributed import check_batch, count_per_rank, finish, init_world, main_first, world
from utils.dreams import open_loop, save_dream_gif
from utils.logdir import StageDir
from utils.precision import AMP
from utils.training import Trainer, TrainSettings, check_identity, mean_metrics
from utils.upstream import DYNAMICS, build_dynamics, dynamics_config, load_dynamics, load_vae, with_defaults

DREAM_EPISODES, DREAM_CONTEXT, DREAM_STEPS = 4, 8, 40


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=list(DYNAMICS), default="mdrnn")
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--hidden-size", type=int, default=256,
                   help="mdrnn: LSTM units (Ha: 256 CarRacing, 512 Doom); rssm: width of its MLPs (Dreamer: 200); "
                        "tssm: the transformer's width")
    p.add_argument("--gaussians", type=int, default=5, help="mdrnn, tssm: mixture components per latent dimension")
    p.add_argument("--head-units", type=int, default=0,
                   help="mdrnn, tssm: 0 reads reward and done linearly off M's output (Ha); N > 0 gives them "
                        "a two-layer MLP of N units (Dreamer)")
    p.add_argument("--deter", type=int, default=200, help="rssm: GRU state size")
    p.add_argument("--stoch", type=int, default=30, help="rssm: Gaussian state size, or number of categoricals")
    p.add_argument("--classes", type=int, default=0,
                   help="rssm: 0 for a Gaussian stochastic state, else classes per categorical (DreamerV2: "
                        "--stoch 32 --classes 32)")
    p.add_argument("--free-nats", type=float, default=1.0, help="rssm: KL below this is not penalised")
    p.add_argument("--kl-balance", type=float, default=0.8, help="rssm: share of the KL gradient that trains the prior")
    p.add_argument("--kl-weight", type=float, default=1.0, help="rssm")
    p.add_argument("--layers", type=int, default=2, help="tssm: transformer layers")
    p.add_argument("--heads", type=int, default=4, help="tssm: attention heads (must divide --hidden-size)")
    p.add_argument("--context", type=int, default=32,
                   help="tssm: most past steps one step attends to, itself included (at most --seq-len)")
    p.add_argument("--dropout", type=float,
                   help="tssm: dropout on each residual branch (default 0.1); mdrnn: Dropout's Dream Land, "
                        "dropout on z and h in training, one mask per dream in C's dreams (Wellmer & Kwok: "
                        "0.05; default 0)")
    p.add_argument("--reward-weight", type=float, default=1.0)
    p.add_argument("--done-weight", type=float, default=1.0)
    p.add_argument("--done-pos-weight", type=float, default=1.0,
                   help="weight of the rare done = 1 steps in the done loss (Ha's Doom: 10): p(done) then "
                        "passes the dream's 0.5 once the true chance of the end exceeds 1 / (1 + w)")
    p.add_argument("--grad-clip", type=float, default=1.0)
    p.add_argument("--patience", type=int, default=10, help="epochs without improvement before stopping")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--temperature", type=float, default=1.0, help="tau for the dream GIFs")
    p.add_argument("--nodreams", action="store_true", help="skip the dream GIF each epoch")
    p.add_argument("--dream-only", action="store_true",
                   help="train nothing: write dreams/best_tau<T>.gif from best.pt and exit")
    p.add_argument("--noreload", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=AMP, default="none",
                   help="mixed precision: bf16 (GPUs since Ampere, CPUs with AVX-512 BF16 or AMX), fp16 with loss "
                        "scaling (GPUs), or auto: bf16 where it is native, else float32")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    sizes = (a.epochs, a.seq_len, a.batch_size, a.hidden_size, a.gaussians, a.deter, a.stoch, a.layers, a.heads,
             a.context)
    if min(sizes) < 1 or a.classes < 0 or a.head_units < 0:
        p.error("sizes and --epochs must be >= 1 (--classes and --head-units >= 0)")
    if a.model == "tssm" and a.hidden_size % a.heads:
        p.error(f"--hidden-size {a.hidden_size} must divide into --heads {a.heads}")
    if a.model == "tssm" and a.context > a.seq_len:
        p.error(f"--context {a.context} exceeds --seq-len {a.seq_len}: the TSSM would meet distances in the "
                "dream that it never saw in training")
    if a.dropout is None:
        a.dropout = 0.1 if a.model == "tssm" else 0.0
    if a.model == "rssm" and a.dropout:
        p.error("--dropout is for --model mdrnn and tssm")
    if not 0 <= a.dropout < 1:
        p.error("--dropout must lie in [0, 1)")
    if not 0 <= a.kl_balance <= 1 or a.free_nats < 0:
        p.error("--kl-balance must lie in [0, 1] and --free-nats be >= 0")
    if a.dream_only and a.noreload:
        p.error("--dream-only reads best.pt; it cannot go with --noreload")
    return a


def data_key(files: list[Path]) -> dict:
    """Which episodes M trains on: when a round adds some, M continues from its weights."""
    names = relative_names(files)
    return {"episodes": len(names), "names_sha1": hashlib.sha1("\n".join(names).encode()).hexdigest()}


def main() -> None:
    started = time.monotonic()
    a = parse_args()
    device = init_world(a.device)
    check_batch(a.batch_size)
    files = open_dataset(a.dataset)
    vae, vae_id = load_vae(a.logdir, device)
    stage = StageDir(a.logdir, f"dynamics/{a.model}")
    stage.start(a.noreload)
    seed_everything(a.seed)
    resume = stage.resume_state(device)
    if resume is not None:
        resume["identity"]["model"] = with_defaults(a.model, resume["identity"]["model"])
    check_identity(stage, resume, {"vae": vae_id})  # before encoding anything
    lat = main_first(latent_cache, a.logdir, a.dataset, files, vae, vae_id, device)
    train_eps, val_eps = main_first(episode_split, a.logdir, files, 0.1)
    train = SequenceBatches(lat, train_eps, a.seq_len, a.batch_size, a.seed)
    val = SequenceBatches(lat, val_eps or train_eps, a.seq_len, a.batch_size, a.seed)

    # the longest validation episodes show the most dreaming (the GIF stops with the shortest)
    dream_eps = sorted(val_eps or train_eps, key=lambda e: lat.offsets[e] - lat.offsets[e + 1])[:DREAM_EPISODES]

    def write_dreams(model: torch.nn.Module, name: str) -> None:
        truths, dreams = [], []
        for e in dream_eps:
            span = lat.episode(e)
            T = min(span.stop - span.start, DREAM_CONTEXT + DREAM_STEPS)
            truths.append(load_rollout(files[e])["observations"][:T])
            dreams.append(open_loop(vae, model, lat.stats[span][:T], lat.actions[span][:T], DREAM_CONTEXT,
                                    a.temperature, device))
        save_dream_gif(stage.sub("dreams") / name, truths, dreams, DREAM_CONTEXT)

    if a.dream_only:
        best, _ = load_dynamics(a.logdir, a.model, vae, vae_id, device)
        write_dreams(best, f"best_tau{a.temperature:g}.gif")
        print(f"wrote {stage.path / 'dreams' / f'best_tau{a.temperature:g}.gif'}")
        return

    config = dynamics_config(a.model, {**vars(a), "z_size": vae.cfg.z_size, "action_size": lat.actions.shape[1]})
    m = build_dynamics(a.model, config).to(device)
    optimizer = torch.optim.Adam(m.parameters(), lr=a.lr)
    settings = TrainSettings(a.epochs, stop_patience=a.patience, grad_clip=a.grad_clip,
                             checkpoint_every_s=60 * a.checkpoint_minutes, amp=a.amp)
    identity = {"model": config, "vae": vae_id, "dataset": str(a.dataset.resolve()),
                "seq_len": a.seq_len, "batch_size": a.batch_size, "seed": a.seed}
    trainer = Trainer(stage, m, optimizer, settings, identity, data_key(files))
    trainer.restore(resume)
    stage.write_config({**vars(a), "logdir": str(a.logdir), "dataset": str(a.dataset), "device": str(device)})
    print(f"M ({a.model}): {sum(p.numel() for p in m.parameters()):,} parameters on {device}; "
          f"{len(train_eps)} train / {len(val_eps)} validation episodes, z {vae.cfg.z_size}")

    def batch_loss(b: Batch, shard: bool):
        t = {k: to_device(torch.from_numpy(np.asarray(v)), device) for k, v in b.items()}
        z = vae.sample(t["stats"])  # a fresh z from the stored mu and sigma every batch
        # z is drawn for the whole global batch, so every rank's z agrees with a single process's;
        # M's masked means divide by the ranks' mean count of valid steps (count_per_rank, passed
        # in: models/ does not import utils/), so the average of the ranks' losses is the global
        # batch's loss without a row weight
        rows = world().split(len(z))[0] if shard else slice(None)
        # the MDN-RNN's dropout masks come from per-row seeds drawn for the global batch, like z
        seeds = torch.randint(1 << 31, (len(z),)) if a.model == "mdrnn" and a.dropout else None
        noise = {} if seeds is None else {"noise": SeededNoise(seeds[rows])}
        return m.loss(z[rows], *(t[k][rows] for k in ("actions", "rewards", "terminals", "mask", "next_mask")),
                      count=count_per_rank, **noise)

    def validate() -> dict[str, torch.Tensor]:
        return mean_metrics((batch_loss(b, False)[1], len(b["mask"])) for b in val.epoch(0, shuffle=False))

    def after_epoch(epoch: int) -> None:
        if not a.nodreams and world().main:
            write_dreams(m, f"epoch_{epoch:03d}.gif")

    trainer.fit(lambda epoch, start: prefetch(train.epoch(epoch, start), 1),
                train.n_batches(), lambda b: batch_loss(b, True), validate, after_epoch)
    print(f"best validation loss {trainer.progress.best_val:.5g}: {stage.best}")
    stage.record_run(started)
    finish()


if __name__ == "__main__":
    run_main(main)
