"""Where a round's time goes: rounds.py's own timings of each step, as shares of the round.

    python bench/rounds.py --logdir exp/plan_random

Reads <logdir>/rounds/metrics.jsonl, where rounds.py records the wall seconds of each step:
collection (C playing into the dataset), encoding (V on the new episodes, with M's latent
error on them), M, C, --keep-best's selection episodes and evaluation. Prints one line per
round and the shares over all rounds after round 0, which is unlike the others (it trains M
and C from nothing, or finds them trained).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

STEPS = {"collect": "collection", "error": "encoding", "dynamics": "M", "controller": "C", "keep": "keep-best",
         "evaluate": "evaluation"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", type=Path, required=True)
    a = p.parse_args()
    path = a.logdir / "rounds" / "metrics.jsonl"
    if not path.exists():
        raise SystemExit(f"{path} does not exist: run rounds.py --logdir {a.logdir} first")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line]
    print("round  " + "  ".join(f"{name:>12s}" for name in STEPS.values()) + "       total")
    for r in rows:
        cells = [f"{r.get(f'seconds_{k}', 0.0):10.0f} s" for k in STEPS]
        print(f"{r['step']:5d}  " + "  ".join(cells) + f"  {r['seconds']:8.0f} s")
    later = rows[1:]
    if later:
        total = sum(r["seconds"] for r in later)
        shares = [sum(r.get(f"seconds_{k}", 0.0) for r in later) / total for k in STEPS]
        print("share  " + "  ".join(f"{100 * s:11.1f}%" for s in shares) + f"  (rounds 1-{later[-1]['step']})")


if __name__ == "__main__":
    main()
