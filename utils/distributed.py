"""Data-parallel training under torchrun: one process per device, one shared logdir.

`torchrun --nproc-per-node N trainvae.py ...` (likewise traindynamics.py and trainagent.py
--method ac) starts N ranks. Each rank takes a disjoint shard of every global batch
(--batch-size stays the global batch), and after each backward pass the gradients are
averaged over ranks in one coalesced all-reduce, so every rank takes the same optimizer
step as one process on the whole batch would. Every rank runs the same RNG stream (the
same seed, resumed from rank 0's state), so whatever is drawn for the global batch agrees
across ranks; only rank 0 writes checkpoints, metrics, TensorBoard files and prints.
Without torchrun all of this reduces to a single process and nothing changes.

Why not the DistributedDataParallel wrapper: the losses here are model methods (vae.loss,
m.loss) and the actor runs H times per update before one backward pass, which DDP's
forward hook does not fit. The averaged gradient is the same; what is lost is overlapping
communication with the backward pass, which at these model sizes is small.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from utils.cli import UserError
from utils.device import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def split(self, n: int) -> tuple[slice, float]:
        """This rank's rows of a global batch of n, and the factor that makes the average of
        the ranks' mean losses equal the global mean. A batch smaller than the world is
        used whole by every rank (the average of equal gradients is that gradient)."""
        if self.size == 1 or n < self.size:
            return slice(None), 1.0
        local = len(range(self.rank, n, self.size))
        return slice(self.rank, None, self.size), local * self.size / n


_world = World()


def world() -> World:
    return _world


def init_world(device_flag: str) -> torch.device:
    """Join the torchrun group if there is one (gloo on CPU, nccl on GPU) and pick this
    rank's device: with CUDA, the GPU of its LOCAL_RANK."""
    global _world
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return resolve_device(device_flag)
    device = resolve_device(device_flag)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _world = World(dist.get_rank(), dist.get_world_size())
    if not _world.main:
        sys.stdout = open(os.devnull, "w")  # rank 0 speaks for all; errors still reach stderr
    return device


def barrier() -> None:
    if _world.size > 1:
        dist.barrier()


def main_first(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) on rank 0, then on the others: rank 0 builds a cache (latents, frames, the
    split) that the others then only read."""
    if not _world.main:
        barrier()
    out = fn(*args)
    if _world.main:
        barrier()
    return out


def average_gradients(params: Iterable[torch.nn.Parameter]) -> None:
    """Every rank's gradients become the mean over ranks (one all-reduce for all of them)."""
    if _world.size == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= _world.size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Scalar metrics averaged over ranks, for logging what the whole global batch saw."""
    if _world.size == 1 or not values:
        return values
    keys = sorted(values)
    flat = torch.stack([values[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(flat)
    return dict(zip(keys, flat / _world.size, strict=True))


def count_per_rank(mask: torch.Tensor) -> torch.Tensor:
    """mask.sum() averaged over ranks (at least 1), the denominator of a masked mean: each
    rank divides its masked sum by it, and the average over ranks of those losses is then
    exactly the masked mean over the global batch, however the valid steps fall. M's losses
    take it as their `count` (models/ imports nothing from here; its default is local)."""
    n = mask.sum().detach().float()
    if _world.size > 1:
        dist.all_reduce(n)
        n = n / _world.size
    return n.clamp(min=1)


def total_over_ranks(n: int) -> int:
    """The sum of n over ranks (n itself without torchrun)."""
    if _world.size == 1:
        return n
    box = torch.tensor(n, dtype=torch.long)
    dist.all_reduce(box)
    return int(box)


def broadcast(value: float) -> float:
    """Rank 0's value on every rank (what only rank 0 measured, such as a real-env score)."""
    if _world.size == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_batch(batch_size: int, flag: str = "--batch-size") -> None:
    if batch_size < _world.size:
        raise UserError(f"{flag} {batch_size} is the global batch: it must be at least the {_world.size} ranks")


def finish() -> None:
    """Tear the process group down together: a rank that destroys it while its peer is
    still writing checkpoints can make gloo abort the peer at exit. Ranks other than 0 have
    nothing left to write (logs, checkpoints and runs.jsonl are rank 0's), and they leave at
    once: their interpreter teardown still aborted now and then with "terminate called
    without an active exception", which made torchrun stop rank 0 too."""
    if dist.is_initialized():
        dist.barrier()
        if not world().main:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        dist.destroy_process_group()
