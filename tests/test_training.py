"""The shared training loop: best.pt only improves, NaN stops cleanly, checkpoints are safe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from utils.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from utils.logdir import StageDir
from utils.training import Trainer, TrainingError, TrainSettings


def make_trainer(tmp_path, epochs: int) -> Trainer:
    stage = StageDir(tmp_path, "toy")
    stage.start(noreload=False)
    model = nn.Linear(2, 1)
    trainer = Trainer(stage, model, torch.optim.SGD(model.parameters(), 0.1), TrainSettings(epochs),
                      {"model": {"in": 2}})
    trainer.restore(stage.resume_state("cpu"))
    return trainer


def fit(trainer: Trainer, val_losses: list[float], train_loss: float = 1.0) -> None:
    scripted = iter(val_losses)
    x = torch.ones(4, 2)

    def loss_fn(_):
        loss = trainer.model(x).pow(2).mean() * 0 + train_loss
        return loss, {"loss": loss.detach()}

    trainer.fit(lambda e, s: iter(range(s, 3)), 3, loss_fn, lambda: {"loss": torch.tensor(next(scripted))})


def test_best_is_replaced_only_by_a_better_model_even_across_resume(tmp_path) -> None:
    t = make_trainer(tmp_path, 3)
    fit(t, [3.0, 1.0, 2.0])
    best = load_checkpoint(tmp_path / "toy" / "best.pt")
    assert best["epoch"] == 2 and best["val_loss"] == 1.0
    t = make_trainer(tmp_path, 4)  # a rerun resumes at epoch 3 with best_val 1.0
    fit(t, [1.5])
    again = load_checkpoint(tmp_path / "toy" / "best.pt")
    assert again["id"] == best["id"]
    assert load_checkpoint(tmp_path / "toy" / "latest.pt")["progress"]["epoch"] == 4


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    t = make_trainer(tmp_path, 1)
    fit(t, [1.0])
    before = load_checkpoint(tmp_path / "toy" / "latest.pt")
    t = make_trainer(tmp_path, 2)
    with pytest.raises(TrainingError, match="loss became non-finite at epoch 2, batch 1"):
        fit(t, [1.0], train_loss=float("nan"))
    after = load_checkpoint(tmp_path / "toy" / "latest.pt")
    assert after["id"] == before["id"] and after["progress"]["epoch"] == 1


def test_early_stopping_ends_and_stays_ended(tmp_path) -> None:
    t = make_trainer(tmp_path, 20)
    t.settings.stop_patience = 2
    fit(t, [1.0, 2.0, 2.0, 0.5])
    assert t.progress.stopped and t.progress.epoch == 3
    t = make_trainer(tmp_path, 20)
    fit(t, [])  # nothing left to do: validate is never called again
    assert t.progress.epoch == 3


def test_checkpoints_refuse_unsafe_pickles(tmp_path) -> None:
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="only unpickling could load"):
        load_checkpoint(tmp_path / "evil.pt")
    save_checkpoint(tmp_path / "ok.pt", {"w": torch.ones(2), "meta": {"a": [1, 2.0, "x", None]}})
    assert torch.load(tmp_path / "ok.pt", weights_only=True)["meta"] == {"a": [1, 2.0, "x", None]}
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_checkpoint(tmp_path / "cut.pt")
