"""--amp: mixed precision for the gradient stages (V, M, the actor-critic).

bf16 autocasts the forward pass and needs nothing else (its range matches float32); fp16
also scales the loss so that small gradients do not underflow, and skips a step whose
gradients overflowed. auto is bf16 on GPUs and on CPUs that compute bf16 in hardware, and
float32 elsewhere, so one recipe is fast on every machine. Weights, optimizer state and
checkpoints stay float32 either way.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from utils.cli import UserError

AMP = ("none", "bf16", "fp16", "auto")


def native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware. Elsewhere (AVX2-only x86)
    oneDNN emulates them: V's step at batch 128 ran at 8 frames/s against 335 in float32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


class Precision:
    def __init__(self, mode: str, device: torch.device) -> None:
        if mode not in AMP:
            raise UserError(f"--amp {mode}: choose from {AMP}")
        if mode == "fp16" and device.type == "cpu":  # oneDNN has no fp16 LSTM, and CPUs gain nothing from it
            raise UserError("--amp fp16 is for GPUs; on a CPU use --amp auto (bf16 where the CPU has it)")
        if mode == "auto":
            mode = "bf16" if device.type != "cpu" or native_bf16() else "none"
        elif mode == "bf16" and device.type == "cpu" and not native_bf16():
            print("--amp bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), so autocast is emulated and "
                  "V trains about 40x slower than in float32; --amp auto uses bf16 only where it is native",
                  flush=True)
        self.mode, self.device = mode, device
        self.scaler = torch.amp.GradScaler(device.type) if mode == "fp16" else None

    def autocast(self) -> AbstractContextManager:
        if self.mode == "none":
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if self.mode == "bf16" else torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Before gradient clipping: clip the true gradients, not the scaled ones."""
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Once per iteration, after every optimizer's step."""
        if self.scaler:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
