"""--device handling shared by every stage."""

from __future__ import annotations

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
