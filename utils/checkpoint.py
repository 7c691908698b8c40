"""Checkpoints: tensors and plain Python types only, written atomically, read weights-only.

Every checkpoint carries an `id` (a fresh uuid per save) so that a downstream stage can
record exactly which upstream checkpoint it was trained on and notice when it changes.
"""

from __future__ import annotations

import os
import pickle
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from utils.cli import UserError
from utils.distributed import world
from utils.io import atomic_open


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, or does not match what the stage expects."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> str:
    """Write `state` plus a new id atomically; returns the id. Under torchrun only rank 0
    writes (every rank holds the same weights)."""
    if not world().main:
        return ""
    ckpt_id = uuid.uuid4().hex
    with atomic_open(path) as f:
        torch.save({**state, "id": ckpt_id}, f)
    return ckpt_id


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True: a checkpoint can never run code when opened."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:  # a payload beyond tensors and plain values
        raise CheckpointError(f"{path}: holds Python objects that only unpickling could load (and unpickling can "
                              "run code); refused") from e
    except Exception as e:  # truncated zip, ...
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"{path}: cannot read checkpoint ({type(e).__name__}: {first})") from e


def _numpy_state() -> dict[str, Any]:
    name, key, pos, has_gauss, gauss = np.random.get_state()
    return {"name": name, "key": key.tolist(), "pos": pos, "has_gauss": has_gauss, "gauss": gauss}


def _numpy_tuple(s: dict[str, Any]) -> tuple:
    return s["name"], np.asarray(s["key"], np.uint32), s["pos"], s["has_gauss"], s["gauss"]


def load_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """load_state_dict, with a clear message when the file is from another architecture."""
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"{path}: its weights do not fit this model ({str(e).splitlines()[1].strip()}); "
            "it was made with other settings or another version: retrain with --noreload"
        ) from e


def rng_state() -> dict[str, Any]:
    """Every RNG a training loop may touch, as tensors and plain types."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": _numpy_state(),
        "python": [*random.getstate()[1], random.getstate()[0]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np.random.set_state(_numpy_tuple(state["numpy"]))
    *internal, version = state["python"]
    random.setstate((version, tuple(internal), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
