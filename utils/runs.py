"""runs.jsonl: every finished invocation of a stage, its exact command and wall time.

The results ledger (utils/ledger.py) reads these to say how a published figure was made.
A stage killed mid-way records nothing; its rerun (which resumes) records its own time.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RUNS = "runs.jsonl"


def command_line() -> str:
    """This process's command as a user would type it again."""
    return shlex.join(["python", *sys.argv])


def append_run(folder: str | Path, started: float) -> None:
    """Append this invocation (started: its time.monotonic() at start) to folder/runs.jsonl."""
    line = {"command": command_line(), "seconds": round(time.monotonic() - started, 2),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    with open(Path(folder) / RUNS, "a") as f:
        f.write(json.dumps(line) + "\n")


def read_runs(folder: str | Path) -> list[dict[str, Any]]:
    path = Path(folder) / RUNS
    if not path.exists():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
