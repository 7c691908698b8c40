"""One episode per compressed .npz file (DESIGN section 4).

observations[t] is the frame the policy saw when it chose actions[t]; rewards[t],
terminals[t] and truncations[t] follow that action. Keys match the widely used World
Models PyTorch datasets (observations, actions, rewards, terminals); `truncations` is
ours and defaults to all-false when a file lacks it.
"""

from __future__ import annotations

import io
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from utils.cli import UserError
from utils.io import atomic_open

KEYS = ("observations", "actions", "rewards", "terminals", "truncations")
Rollout = dict[str, np.ndarray]


class RolloutError(UserError):
    """A rollout file is missing, corrupt, truncated or inconsistent (the message names it)."""


def check_rollout(r: Rollout, name: str = "rollout") -> Rollout:
    """Validate shapes and dtypes; return the rollout with canonical dtypes."""
    obs = r["observations"]
    if obs.dtype != np.uint8 or obs.ndim != 4 or obs.shape[-1] != 3:
        raise RolloutError(f"{name}: observations must be uint8 (T, H, W, 3), got {obs.dtype} {obs.shape}")
    T = len(obs)
    if T == 0:
        raise RolloutError(f"{name}: empty episode")
    actions = r["actions"]
    if actions.ndim not in (1, 2):
        raise RolloutError(f"{name}: actions must be (T,) or (T, A), got {actions.shape}")
    out = {
        "observations": obs,
        "actions": actions.astype(np.int64 if actions.ndim == 1 else np.float32, copy=False),
        "rewards": r["rewards"].astype(np.float32, copy=False),
        "terminals": r["terminals"].astype(bool, copy=False),
        "truncations": r.get("truncations", np.zeros(T, bool)).astype(bool, copy=False),
    }
    for k, v in out.items():
        if len(v) != T:
            raise RolloutError(f"{name}: {k} has {len(v)} steps but observations has {T}")
    return out


def encode_rollout(r: Rollout, name: str = "rollout") -> bytes:
    """The compressed .npz file's bytes: workers compress, so only small payloads travel
    to the process (or, on Ray, the node) that writes the dataset."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **check_rollout(r, name))
    return buf.getvalue()


def write_rollout_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write atomically: a killed writer leaves no file under `path`."""
    with atomic_open(path) as f:
        f.write(data)


def save_rollout(path: str | os.PathLike, r: Rollout) -> None:
    write_rollout_bytes(path, encode_rollout(r, str(path)))


@contextmanager
def _reading(path: Path) -> Iterator[np.lib.npyio.NpzFile]:
    """Open an .npz for reading; any damage becomes a RolloutError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except RolloutError:
        raise
    except FileNotFoundError as e:
        raise RolloutError(f"{path}: no such rollout file") from e
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as e:
        raise RolloutError(f"{path}: corrupt or truncated rollout file ({e})") from e


def load_rollout(path: str | os.PathLike) -> Rollout:
    """Read and validate every key; any damage is reported with the file's name."""
    path = Path(path)
    with _reading(path) as z:
        missing = [k for k in KEYS[:4] if k not in z.files]
        if missing:
            raise RolloutError(f"{path}: missing keys {missing}")
        r = {k: z[k] for k in KEYS if k in z.files}
    return check_rollout(r, str(path))


def rollout_length(path: str | os.PathLike) -> int:
    """Episode length, reading only the small rewards array."""
    with _reading(Path(path)) as z:
        return len(z["rewards"])
