"""--device handling shared by every stage, and which GPU a worker process takes."""

from __future__ import annotations

import os

import torch

from utils.cli import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' means CUDA when present, else CPU; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
    return device


WORKER_ID = "WM_WORKER_ID"  # set by utils/parallel.py in each worker process


def worker_device(name: str) -> str:
    """A worker's device: plain 'cuda' becomes the visible GPU (worker id mod GPU count), so
    workers spread over the GPUs CUDA_VISIBLE_DEVICES leaves visible. Ray assigns GPUs itself
    by setting CUDA_VISIBLE_DEVICES per actor, where this picks the actor's only GPU."""
    if name != "cuda" or not torch.cuda.is_available():
        return name
    return f"cuda:{int(os.environ.get(WORKER_ID, 0)) % torch.cuda.device_count()}"


def to_device(x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """Host to device: through pinned memory with an asynchronous copy when going to a GPU,
    so the copy overlaps the previous step's kernels; unchanged on CPU."""
    if torch.device(device).type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)
