"""The gradient-training loop shared by V and M: resumable to the batch, never silent.

latest.pt is written at every epoch end and every `checkpoint_every_s` seconds within an
epoch, with the model, optimizer, plateau scheduler, early-stopping state and RNG states;
batch order depends only on (seed, epoch), so a resumed run continues exactly where the
killed one stopped. best.pt is replaced only when the validation loss improves on the
best value recorded in latest.pt, so a resume can never let a worse model overwrite it.

Online rounds: a stage that passes `data` (which episodes it trains on) continues from
latest.pt's weights and optimizer when the data has grown since, for another --epochs on
all of it: a new round, whose epochs are numbered after the earlier rounds' and whose
best.pt is judged on the new validation episodes only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from utils.checkpoint import CheckpointError, load_weights, rng_state, save_checkpoint, set_rng_state
from utils.cli import UserError
from utils.distributed import average_gradients, mean_over_ranks, world
from utils.logdir import StageDir
from utils.precision import Precision

Metrics = dict[str, torch.Tensor]


class TrainingError(UserError):
    """Training cannot go on (a NaN loss); the last good checkpoint is kept."""


def check_identity(stage: StageDir, state: dict[str, Any] | None, identity: dict[str, Any]) -> None:
    """Refuse to resume from a checkpoint made with other settings in `identity`'s keys.

    Stages call it early with the upstream keys alone, before any expensive work."""
    if state is None:
        return
    diff = [k for k in identity if state["identity"].get(k) != identity[k]]
    if diff:
        values = [d for k in diff for d in differences(state["identity"].get(k), identity[k], k)]
        raise CheckpointError(
            f"{stage.latest} was trained with other {', '.join(diff)} ({'; '.join(values)}): "
            "rerun with --noreload to start this stage afresh, or use another --logdir"
        )


def differences(saved: Any, asked: Any, name: str) -> list[str]:
    """'name: saved there, asked here' for each setting that differs, nested ones by their dotted
    name, so that a refused resume says which flag to change back."""
    if isinstance(saved, dict) and isinstance(asked, dict):
        keys = sorted(set(saved) | set(asked))
        return [d for k in keys for d in differences(saved.get(k), asked.get(k), f"{name}.{k}")]
    if saved == asked:
        return []
    short = [v if len(v) <= 24 else v[:12] + "..." for v in (str(saved), str(asked))]
    return [f"{name}: {short[0]} there, {short[1]} here"]


def new_round(stage: StageDir, state: dict[str, Any] | None, identity: dict[str, Any]) -> bool:
    """True when latest.pt differs from `identity` only in M's checkpoint: a round of online
    training updated M, and C continues from its own state in the new M. Any other change
    is refused as check_identity does."""
    if state is None:
        return False
    if [k for k in identity if state["identity"].get(k) != identity[k]] == ["dynamics_id"]:
        print(f"{stage.path}: M changed since the last run (a new round): continuing C from its state")
        return True
    check_identity(stage, state, identity)
    return False


def mean_metrics(batches: Iterator[tuple[Metrics, int]]) -> Metrics:
    """Average per-batch metrics weighted by batch size (the last batch may be short)."""
    sums: Metrics = {}
    n = 0
    for metrics, size in batches:
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0) + v * size
        n += size
    return {k: v / max(n, 1) for k, v in sums.items()}


@dataclass
class Progress:
    epoch: int = 0  # finished epochs
    batch: int = 0  # finished batches of the current epoch
    step: int = 0  # optimizer steps overall
    best_val: float = math.inf
    bad_epochs: int = 0
    stopped: bool = False  # early stopping fired
    sums: dict[str, float] = field(default_factory=dict)  # this epoch's running train metrics
    train_time: float = 0.0  # seconds spent in this epoch's training batches
    round: int = 0  # rounds of training on grown data before this one
    epoch0: int = 0  # epochs of those rounds: logs and best.pt count epochs from there

    @property
    def global_epoch(self) -> int:
        return self.epoch0 + self.epoch


@dataclass
class TrainSettings:
    epochs: int
    lr_patience: int = 5
    stop_patience: int = 10
    grad_clip: float | None = None
    checkpoint_every_s: float = 600.0
    amp: str = "none"  # mixed precision: none, bf16 or fp16 (utils/precision.py)


class Trainer:
    def __init__(
        self,
        stage: StageDir,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: TrainSettings,
        identity: dict[str, Any],
        data: dict[str, Any] | None = None,
    ) -> None:
        """identity: what must not change across a resume (model config, upstream, dataset);
        data: the episodes trained on, which may grow between rounds (None: they may not)."""
        self.stage, self.model, self.optimizer, self.settings = stage, model, optimizer, settings
        self.identity, self.data = identity, data
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=settings.lr_patience
        )
        self.progress = Progress()
        self.precision = Precision(settings.amp, next(model.parameters()).device)

    def restore(self, state: dict[str, Any] | None) -> None:
        """Continue from latest.pt, refusing one made with another model or upstream."""
        if state is None:
            return
        check_identity(self.stage, state, self.identity)
        load_weights(self.model, state["model"], self.stage.latest)
        self.optimizer.load_state_dict(state["optimizer"])
        self.precision.load_state_dict(state.get("scaler", {}))
        set_rng_state(state["rng"])
        old = Progress(**state["progress"])
        if self.data is not None and state.get("data") not in (None, self.data):
            # a new round: the plateau scheduler and early stopping start over on the new
            # validation set; the optimizer keeps its moments and learning rate
            self.progress = Progress(step=old.step, round=old.round + 1, epoch0=old.global_epoch)
            print(f"{self.stage.path}: the data grew ({state['data'].get('episodes')} -> "
                  f"{self.data.get('episodes')} episodes); continuing from its weights, round {old.round + 1}")
            return
        self.scheduler.load_state_dict(state["scheduler"])
        self.progress = old
        print(f"resuming {self.stage.path} at epoch {old.global_epoch}, batch {old.batch}")

    def _save_latest(self) -> None:
        save_checkpoint(self.stage.latest, {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "progress": asdict(self.progress),
            "scaler": self.precision.state_dict(),
            "rng": rng_state(),
            "identity": self.identity,
            **({"data": self.data} if self.data is not None else {}),
        })

    def _check(self, metrics: Metrics, where: str) -> None:
        bad = [k for k, v in metrics.items() if not torch.isfinite(v).all()]
        if bad:
            raise TrainingError(
                f"{', '.join(bad)} became non-finite {where}; stopped without saving, "
                f"the last good checkpoint is {self.stage.latest}"
            )

    def fit(
        self,
        batches: Callable[[int, int], Iterator[Any]],
        n_batches: int,
        loss_fn: Callable[[Any], tuple[torch.Tensor, Metrics]],
        validate: Callable[[], Metrics],
        after_epoch: Callable[[int], None] | None = None,
        best_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """batches(epoch, start) yields the epoch's global batches from index `start` on;
        under torchrun loss_fn computes its rank's share of one (utils/distributed.py) and
        every rank validates on the whole validation set."""
        p, s = self.progress, self.settings
        if p.stopped:
            print(f"{self.stage.path}: early stopping already ended training at epoch {p.global_epoch}")
            return
        self.stage.trim_metrics(p.global_epoch)
        self.stage.start_tb(purge_step=p.global_epoch + 1)
        last_save = time.monotonic()
        while p.epoch < s.epochs:
            self.model.train()
            bar = tqdm(batches(p.epoch, p.batch), total=n_batches, initial=p.batch,
                       desc=f"epoch {p.epoch + 1}/{s.epochs}" + (f" (round {p.round})" if p.round else ""),
                       unit="batch", leave=False, disable=not world().main)
            tick = time.perf_counter()
            for batch in bar:
                with self.precision.autocast():
                    loss, metrics = loss_fn(batch)
                metrics = mean_over_ranks(metrics)
                self._check(metrics, f"at epoch {p.epoch + 1}, batch {p.batch + 1}")
                self.optimizer.zero_grad(set_to_none=True)
                self.precision.backward(loss)
                average_gradients(self.model.parameters())
                self.precision.unscale(self.optimizer)
                if s.grad_clip:
                    nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
                self.precision.step(self.optimizer)
                self.precision.update()
                p.batch += 1
                p.step += 1
                p.train_time += time.perf_counter() - tick
                tick = time.perf_counter()
                for k, v in metrics.items():
                    p.sums[k] = p.sums.get(k, 0.0) + float(v)
                bar.set_postfix(loss=f"{p.sums['loss'] / p.batch:.4g}", refresh=False)
                if time.monotonic() - last_save > s.checkpoint_every_s:
                    self._save_latest()
                    last_save = time.monotonic()
            bar.close()
            self._end_epoch(validate, after_epoch, best_extra)
            last_save = time.monotonic()
            if p.stopped:
                print(f"early stopping: no validation improvement for {p.bad_epochs} epochs")
                break
        self.stage.close()

    def _end_epoch(self, validate, after_epoch, best_extra) -> None:
        p = self.progress
        self.model.eval()
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # the same noise every epoch: validation losses compare like with like
            val = validate()
        self._check(val, f"in validation after epoch {p.epoch + 1}")
        train = {k: v / max(p.batch, 1) for k, v in p.sums.items()}
        train["batches_per_s"] = p.batch / max(p.train_time, 1e-9)
        train["seconds"] = p.train_time  # this epoch's training batches, for comparing models' cost
        val_loss = float(val["loss"])
        self.scheduler.step(val_loss)
        p.epoch += 1
        p.batch, p.sums, p.train_time = 0, {}, 0.0
        improved = val_loss < p.best_val
        if improved:
            p.best_val, p.bad_epochs = val_loss, 0
            save_checkpoint(self.stage.best, {
                "model": self.model.state_dict(),
                "identity": self.identity,
                "epoch": p.global_epoch,
                "round": p.round,
                "val_loss": val_loss,
                **(best_extra() if best_extra else {}),
            })
        else:
            p.bad_epochs += 1
            p.stopped = p.bad_epochs >= self.settings.stop_patience
        lr = self.optimizer.param_groups[0]["lr"]
        self.stage.log(p.global_epoch, train, "train/")
        self.stage.log(p.global_epoch, {**{k: float(v) for k, v in val.items()}, "lr": lr}, "val/")
        print(
            f"epoch {p.global_epoch}: train loss {train.get('loss', math.nan):.5g}, val loss {val_loss:.5g}"
            f"{' (best)' if improved else ''}, lr {lr:.3g}"
        )
        if after_epoch:
            after_epoch(p.global_epoch)
        self._save_latest()
