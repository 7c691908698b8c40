"""Write RESULTS.md from the ledger files under results/ and the findings in docs/findings.md.

    python tools/results_md.py            # rewrite RESULTS.md
    python tools/results_md.py --check    # exit 1 if RESULTS.md is not what results/ says

One table per env with every run (a file each, written by test_controller.py --results):
its M, its C, where C learned, the seeds, mean +/- std over its episodes and the anchor's
figure beside it; runs that differ only in their seed (files named <recipe>_seed<S>.json)
also get a row with the mean +/- std over seeds. Each recipe's commands follow its table.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# figures from the papers, beside ours; envs without one are judged against the random policy
ANCHORS = {
    "CarRacing-v3": "906 +/- 21 (Ha & Schmidhuber 2018, 100 tracks)",
    "VizdoomTakeCover-v1": "1092 +/- 556 (Ha & Schmidhuber 2018, C trained in the dream at tau 1.15)",
    "dm_control/cartpole-swingup-v0": "821 (PlaNet, Hafner et al. 2019, after 10^6 env steps, action repeat 8)",
}
KEYS = ("env", "dynamics", "controller", "dream_only", "returns", "mean", "std", "seed", "commands", "seconds",
        "commit", "evaluation")
SEED = re.compile(r"_seed\d+$")
STAGES = ("data", "vae", "dynamics", "controller", "rounds", "eval")  # the pipeline's order, for the commands


def load(folder: Path) -> list[tuple[str, dict]]:
    """(file name relative to the repository, record) for every ledger file, sorted by name."""
    out = []
    for path in sorted(folder.rglob("*.json")):
        record = json.loads(path.read_text())
        missing = [k for k in KEYS if k not in record]
        if missing:
            raise SystemExit(f"{path}: not a ledger file (no {', '.join(missing)}); write it with "
                             "test_controller.py --results")
        out.append((path.relative_to(folder.parent).as_posix(), record))
    return out


def score(r: dict) -> str:
    text = f"{r['mean']:.4g} +/- {r['std']:.3g}"
    return text + (f", {100 * r['success_rate']:.1f}% success" if "success_rate" in r else "")


def where(r: dict) -> str:
    if r["controller"] == "random":
        return "-"
    if r["controller"] == "plan":
        c = r["evaluation"]["planner"]
        extra = (f", tau {c['temperature']}" if c["temperature"] != 1 else "") + (", survival" if c["survival"] else "")
        return f"plans in M (H {c['horizon']}, I {c['iterations']}, J {c['candidates']}, K {c['top_k']}{extra})"
    if r["dream_only"]:
        return "dream only"
    dreamt = r["controller"] == "ac" or "--dream" in shlex.split(r["commands"].get("controller", [""])[-1])
    kept = r["evaluation"].get("kept")  # rounds.py --keep-best: the round whose C won the real selection
    return ("dream, real selection" if dreamt else "real env") + (f" (round {kept['round']}'s C kept)" if kept else "")


def anchor(env: str, records: list[tuple[str, dict]]) -> str:
    if env in ANCHORS:
        return ANCHORS[env]
    rand = [r for _, r in records if r["controller"] == "random"]
    return f"random policy: {score(rand[0])}" if rand else "-"


def over_seeds(group: list[dict]) -> str:
    means = np.array([r["mean"] for r in group])
    text = f"{means.mean():.4g} +/- {means.std():.3g} over {len(group)} seeds"
    if all("success_rate" in r for r in group):
        rates = 100 * np.array([r["success_rate"] for r in group])
        text += f", {rates.mean():.1f} +/- {rates.std():.1f}% success"
    return text


def env_section(env: str, records: list[tuple[str, dict]]) -> list[str]:
    ref = anchor(env, records)
    lines = [f"## {env}", "", f"Anchor: {ref}.", "",
             "| run | M | C | C learned in | seeds (data, V, M, C) | episodes | mean +/- std over episodes | anchor |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for name, r in records:
        groups[SEED.sub("", Path(name).stem)].append((name, r))
    for recipe, members in groups.items():
        for name, r in members:
            s = r["seed"]
            seeds = ", ".join(str(s.get(k, "-")) for k in ("data", "vae", "dynamics", "controller"))
            beside = "-" if r["controller"] == "random" else ref
            lines.append(f"| [{Path(name).stem}]({name}) | {r['dynamics'] or '-'} | {r['controller']} | {where(r)} "
                         f"| {seeds} | {len(r['returns'])} | {score(r)} | {beside} |")
        if len(members) > 1:
            lines.append(f"| **{recipe}** | | | | | | **{over_seeds([r for _, r in members])}** | |")
    lines.append("")
    for recipe, members in groups.items():
        name, r = members[0]
        order = [k for k in STAGES if k in r["commands"]]
        secs = ", ".join(f"{k} {r['seconds'][k]:.0f} s" for k in order)
        lines += [f"`{recipe}`, as run for {Path(name).stem} (commit {r['commit'][:10]}, torch {r['torch']}, "
                  f"{r['cpus']} CPUs, {r['device']}; {secs}):", "", "```bash"]
        lines += [c for k in order for c in r["commands"][k]] + ["```", ""]
    return lines


def render(results: Path, findings: Path) -> str:
    records = load(results)
    by_env: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for name, r in records:
        by_env[r["env"]].append((name, r))
    lines = ["# Results", "",
             "Generated by `python tools/results_md.py` from the ledger files in `results/`, each written by "
             "`test_controller.py --results` with every episode's return, every stage's seed, command and wall "
             "time, and the commit. Test episodes use seeds from 2^30 upward, which training never uses. "
             "Findings, and older figures without a ledger file (marked as unchecked), follow the tables.", ""]
    for env in sorted(by_env):
        lines += env_section(env, by_env[env])
    text = "\n".join(lines)
    if findings.exists():
        text += "\n" + findings.read_text()
    return text.rstrip("\n") + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=ROOT / "results")
    p.add_argument("--findings", type=Path, default=ROOT / "docs" / "findings.md")
    p.add_argument("--out", type=Path, default=ROOT / "RESULTS.md")
    p.add_argument("--check", action="store_true", help="exit 1 if --out differs from what would be written")
    a = p.parse_args()
    text = render(a.results, a.findings)
    if a.check:
        if not a.out.exists() or a.out.read_text() != text:
            sys.exit(f"{a.out} is out of date: run python tools/results_md.py")
        return
    a.out.write_text(text)
    print(f"wrote {a.out} from {len(load(a.results))} ledger files")


if __name__ == "__main__":
    main()
