"""A rollout dataset directory: datasets/<env>/rollout_NNNNNN.npz plus dataset.json."""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

from data.rollouts import load_rollout
from utils.cli import UserError
from utils.io import TMP_MARK, write_json

META = "dataset.json"
_NAME = re.compile(r"rollout_(\d+)\.npz$")


class DatasetError(UserError):
    """The dataset directory is missing, empty, or inconsistent with the request."""


def rollout_path(root: str | os.PathLike, index: int) -> Path:
    return Path(root) / f"rollout_{index:06d}.npz"


def rollout_index(path: Path) -> int | None:
    m = _NAME.search(path.name)
    return int(m.group(1)) if m else None


def list_rollouts(root: str | os.PathLike) -> list[Path]:
    """All finished rollout files, recursively (datasets split in thread_*/ folders load too)."""
    return sorted(
        p for p in Path(root).rglob("*.npz") if TMP_MARK not in p.name and not p.name.startswith(".")
    )


def read_meta(root: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(root) / META
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: corrupt dataset.json ({e}); delete it to rebuild it") from e


def write_meta(root: str | os.PathLike, meta: dict[str, Any]) -> None:
    write_json(Path(root) / META, meta)


def fingerprint(files: list[Path]) -> list[list]:
    """Name, size and mtime of each file: caches built from the dataset compare against it."""
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def episode_stats(path: Path) -> dict[str, float]:
    """Length and return of one file (used for files that dataset.json does not list yet)."""
    r = load_rollout(path)
    return {"frames": len(r["rewards"]), "return": float(r["rewards"].sum())}


def open_dataset(root: str | os.PathLike) -> list[Path]:
    """The rollout files of a dataset, or a DatasetError saying what to do."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset {root} does not exist: run generation_script.py first")
    files = list_rollouts(root)
    if not files:
        raise DatasetError(f"dataset {root} holds no rollout_*.npz files: run generation_script.py")
    return files



def relative_names(files: list[Path]) -> list[str]:
    """Paths below the dataset's top folder: a flat dataset's file names, and for episodes in
    subfolders (controller rollouts) 'controller_<id>/rollout_000001.npz', which stay unique."""
    if not files:
        return []
    top = Path(os.path.commonpath([p.parent for p in files]))
    return [p.relative_to(top).as_posix() for p in files]


def episode_split(
    logdir: str | os.PathLike, files: list[Path], val_fraction: float = 0.1
) -> tuple[list[int], list[int]]:
    """Train and validation episodes (positions in `files`), fixed once per logdir.

    Stored in <logdir>/split.json so that V, M and C, and every resume, compare
    validation losses on the same episodes. Episodes added to the dataset later are
    assigned by a hash of their name, which keeps earlier assignments untouched.
    """
    path = Path(logdir) / "split.json"
    names = relative_names(files)
    stored = json.loads(path.read_text()) if path.exists() else {"val_fraction": val_fraction, "val": []}
    known = set(stored.get("train", [])) | set(stored["val"])
    val = set(stored["val"])
    frac = stored["val_fraction"]
    for n in names:
        if n not in known and zlib.crc32(n.encode()) % 1000 < frac * 1000:
            val.add(n)
    if not path.exists() and not val and len(names) > 1:
        val.add(names[-1])  # tiny datasets still get one validation episode
    if len(names) > 1 and val >= set(names):
        val.discard(names[0])
    write_json(path, {"val_fraction": frac, "val": sorted(val), "train": sorted(set(names) - val)})
    return [i for i, n in enumerate(names) if n not in val], [i for i, n in enumerate(names) if n in val]
