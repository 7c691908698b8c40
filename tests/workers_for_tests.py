"""Module-level worker functions for WorkerPool tests (spawned workers import them by name)."""

from __future__ import annotations

import os
import time


def init_offset(offset: int) -> int:
    return offset


def add(state: int, task: int) -> int:
    return state + task


def misbehave(state: int, task: str) -> str:
    """'ok' returns, 'raise' raises, 'die' kills the worker, 'hang' never returns,
    'die-once:<file>' dies the first time only (the marker file remembers)."""
    if task == "raise":
        raise ValueError("task asked to fail")
    if task == "die":
        os._exit(7)
    if task == "hang":
        time.sleep(3600)
    if task.startswith("die-once:"):
        marker = task.split(":", 1)[1]
        if not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(9)
    return task


def init_slowly(seconds: float) -> int:
    """A start-up as slow as loading V and M on a busy machine."""
    time.sleep(seconds)
    return 0


def die_in_init(code: int) -> int:
    os._exit(code)
