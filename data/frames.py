"""Every frame of a rollout dataset, for V: one uint8 memory-mapped array, built once.

Decompressing .npz files every epoch would make the data path the bottleneck, and
loading them all would not fit in RAM for large datasets. So the frames are copied once,
episode by episode, into datasets/<env>/cache/frames.npy; training then gathers random
batches from the memory map with one fancy-indexing call per batch (no per-frame loop).
"""

from __future__ import annotations

import json
import mmap
import os
import queue
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data.dataset import fingerprint
from data.envs import FRAME_SIZE, resize_frame
from data.rollouts import load_rollout, rollout_length
from utils.io import atomic_open, write_json

CACHE_DIR = "cache"
RELEASE_EVERY = 16  # batches between dropping mapped pages (bounds resident memory)
SWITCH_INTERVAL_S = 2e-4  # while a prefetch thread runs (see prefetch)


def _advise(frames: np.ndarray, advice: int) -> None:
    """madvise the memory map behind `frames` (a no-op for in-memory arrays)."""
    mm = getattr(frames, "_mmap", None)
    if mm is not None:
        mm.madvise(advice)


def _open_frames(npy: Path) -> np.ndarray:
    """Random access: no read-ahead, which would pull ~10x more of the file than used."""
    frames = np.load(npy, mmap_mode="r")
    _advise(frames, mmap.MADV_RANDOM)
    return frames


def frame_cache(root: str | os.PathLike, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(frames memmap (N, 64, 64, 3) uint8, episode start offsets (E + 1,)), built if stale."""
    cache = Path(root) / CACHE_DIR
    npy, meta = cache / "frames.npy", cache / "frames.json"
    fp = fingerprint(files)
    if meta.exists() and npy.exists():
        info = json.loads(meta.read_text())
        if info["files"] == fp:
            return _open_frames(npy), np.asarray(info["offsets"], np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    lengths = [rollout_length(p) for p in files]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    shape = (int(offsets[-1]), FRAME_SIZE, FRAME_SIZE, 3)
    with atomic_open(npy) as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
        for p in tqdm(files, desc="caching frames", unit="ep", leave=False):
            obs = load_rollout(p)["observations"]
            if obs.shape[1:] != (FRAME_SIZE, FRAME_SIZE, 3):  # datasets from other tools
                obs = np.stack([resize_frame(o) for o in obs])
            f.write(np.ascontiguousarray(obs).tobytes())
    write_json(meta, {"files": fp, "offsets": offsets.tolist()})
    return _open_frames(npy), offsets


class FrameBatches:
    """Shuffled uint8 batches of the frames of some episodes; the order of epoch e depends
    only on (seed, e), so a resumed run can skip the batches it already trained on."""

    def __init__(
        self, frames: np.ndarray, offsets: np.ndarray, episodes: list[int], batch_size: int, seed: int
    ) -> None:
        self.frames = frames
        self.index = np.concatenate(
            [np.arange(offsets[e], offsets[e + 1]) for e in episodes] or [np.zeros(0, np.int64)]
        )
        self.batch_size, self.seed = batch_size, seed

    def __len__(self) -> int:
        return -(-len(self.index) // self.batch_size)

    def epoch(self, epoch: int, start: int = 0, shuffle: bool = True) -> Iterator[np.ndarray]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.index) if shuffle else self.index
        for b in range(start, len(self)):
            idx = np.sort(order[b * self.batch_size : (b + 1) * self.batch_size])  # sorted: sequential reads
            yield self.frames[idx]
            if b % RELEASE_EVERY == RELEASE_EVERY - 1:
                # pages we read stay mapped (and counted as ours) until released; the
                # kernel's page cache keeps them, so re-reading them stays cheap
                _advise(self.frames, mmap.MADV_DONTNEED)


def prefetch(it: Iterator, depth: int) -> Iterator:
    """Run `it` in a background thread, `depth` items ahead (disk reads overlap compute)."""
    if depth <= 0:
        yield from it
        return
    q: queue.Queue = queue.Queue(depth)
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            for item in it:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as e:  # surfaced in the consumer
            q.put(e)
        q.put(done)

    t = threading.Thread(target=work, daemon=True)
    # Once the producer holds the GIL, the training loop waits up to a switch interval
    # (5 ms by default) for each of its many small torch calls to get it back: that cost
    # the RSSM's python-heavy training step 10-15% of its speed (bench/dynamics.py).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
    t.start()
    try:
        while (item := q.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        while not q.empty():  # unblock the producer so the thread can end
            q.get_nowait()
