"""Atomic file writes: a file either appears whole under its final name or not at all."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_MARK = ".tmp-"


def tmp_name(path: Path) -> Path:
    """Hidden temporary sibling of `path`; the pid keeps concurrent writers apart."""
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file that is renamed onto `path` only if the block succeeds.

    A crash or kill mid-write leaves at most a hidden temp file (see `remove_stale_tmp`),
    never a truncated file under the real name.
    """
    path = Path(path)
    tmp = tmp_name(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically, pretty-printed so humans can read config and summaries."""
    with atomic_open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def remove_stale_tmp(directory: str | os.PathLike) -> int:
    """Delete temp files left by killed writers; returns how many were removed."""
    n = 0
    for p in Path(directory).glob(f".*{TMP_MARK}*"):
        p.unlink(missing_ok=True)
        n += 1
    return n
