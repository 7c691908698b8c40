"""Online rounds (DESIGN section 11): play with C, update M on all the data, update C, repeat.

    python rounds.py --logdir exp --dataset datasets/GridWorld-v0 --rounds 3 --collect 200 \\
        --m-args="--epochs 10 --seq-len 16" --c-args="--dream --pop-size 32 --n-samples 8 --generations 20"

The logdir needs V (trainvae.py). Round 0 trains M on --dataset and C on M, as the stage
scripts do alone (nothing is redone if they already ran). Every later round runs the same
scripts again, each one continuing rather than restarting:
  1. generation_script.py --policy controller: --collect episodes of the current C, with
     exploration noise, into a new folder inside --dataset;
  2. V encodes the new episodes into the latent cache, and M's open-loop latent error on
     them is measured before M trains on them;
  3. traindynamics.py: M continues from its weights on all the data for its --epochs
     (--m-args-later can give it fewer than round 0's);
  4. trainagent.py: C continues in the updated M (CMA-ES around its best with
     --round-sigma, the actor-critic with its actor, critic and optimizers; --c-args-later
     adds flags for these rounds);
  5. with --keep-best N, C plays N real selection episodes (the same every round, never test
     episodes) and, if it beats every earlier round's C there, is copied with its V and M into
     <logdir>/kept/, a logdir for test_controller.py (agent/keep.py);
  6. test_controller.py: the real score over --eval-episodes held-out episodes and C's score
     in M's dream; their gap is the sign of a hole in the dream.
With --method plan, PlaNet's loop: the planner (its --plan-* flags) collects and is
evaluated in the real env, and there is no C to train (step 4), keep (5) or dream with.
Each round appends one line to <logdir>/rounds/metrics.jsonl, TensorBoard scalars to
<logdir>/tb/rounds and redraws <logdir>/rounds/rounds.png; seconds_<step> splits a round's
wall time into collection, encoding with the latent error, M, C, keeping and evaluation. Rerunning
the command after a kill resumes at the step it stopped in (each script resumes itself);
more --rounds adds rounds.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from agent.keep import KEPT, copy_rounds_record, judge, judge_seeds, keep_if_better, read_kept
from agent.plan_flags import METHODS, planner_arguments, planner_flags, planner_settings
from data.dataset import open_dataset, read_meta, relative_names
from data.latents import latent_cache
from utils.cli import UserError, run_main
from utils.dreams import mean_latent_errors
from utils.io import write_json
from utils.logdir import StageDir
from utils.plot import line_plot
from utils.upstream import DYNAMICS, load_dynamics, load_vae

ROOT = Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--logdir", type=Path, required=True)
    p.add_argument("--dataset", type=Path, required=True, help="M's dataset; each round adds a folder to it")
    p.add_argument("--dynamics", choices=list(DYNAMICS), default="mdrnn")
    p.add_argument("--method", choices=METHODS, default="cmaes", help="C, or PlaNet's planner (plan)")
    p.add_argument("--rounds", type=int, default=3, help="rounds after round 0 (M and C from the dataset)")
    p.add_argument("--collect", type=int, default=100, help="episodes C plays into the dataset per round")
    p.add_argument("--noise", type=float, default=0.1, help="C's exploration noise when collecting")
    p.add_argument("--m-args", default="", help="traindynamics.py flags (the same every round)")
    p.add_argument("--c-args", default="", help="trainagent.py flags (the same every round)")
    p.add_argument("--m-args-later", default="",
                   help="traindynamics.py flags added after --m-args in rounds 1 on, where M continues and needs "
                        "fewer epochs than from nothing: --epochs 3 (the last of a repeated flag wins)")
    p.add_argument("--c-args-later", default="", help="trainagent.py flags added after --c-args in rounds 1 on")
    p.add_argument("--eval-episodes", type=int, default=100, help="held-out real episodes (and dreams) per round")
    p.add_argument("--horizon", type=int, default=10, help="steps ahead of M's open-loop latent error")
    p.add_argument("--threads", type=int, default=2, help="worker processes for collection and evaluation")
    p.add_argument("--seed", type=int, default=0, help="seed of the collection rounds")
    p.add_argument("--keep-best", type=int, default=0, metavar="N",
                   help="judge each round's C on N real selection episodes and keep the best in <logdir>/kept/")
    planner_arguments(p)
    a = p.parse_args()
    settings = planner_settings(a)
    a.plan_flags = planner_flags(settings) if settings is not None else []
    if min(a.rounds + 1, a.collect, a.eval_episodes, a.horizon, a.threads + 1, a.keep_best + 1) < 1 or \
            not 0 <= a.noise <= 1:
        p.error("--collect, --eval-episodes and --horizon must be >= 1, --rounds, --threads and --keep-best >= 0, "
                "--noise in [0, 1]")
    c_flags = shlex.split(a.c_args) + shlex.split(a.c_args_later)
    if not a.keep_best and any(c_flags[i] == "--round-from=kept" or c_flags[i : i + 2] == ["--round-from", "kept"]
                               for i in range(len(c_flags))):
        p.error("--round-from kept in the C flags needs --keep-best N: no C would ever be kept to start from")
    if a.keep_best and a.method == "plan":
        p.error("--keep-best keeps a trained C; the planner has none")
    return a


class Rounds:
    """<logdir>/rounds/: state.json (the round in progress and its finished steps) and the metrics."""

    def __init__(self, a: argparse.Namespace) -> None:
        self.a = a
        self.stage = StageDir(a.logdir, "rounds")
        self.stage.start(noreload=False)
        self.state_path = self.stage.path / "state.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.exists() else \
            {"round": 0, "done": [], "values": {}}

    def run(self, script: str, *args: str) -> None:
        cmd = [sys.executable, script, *args]
        print(f"\n$ python {script} {shlex.join(args)}", flush=True)
        if subprocess.run(cmd, cwd=ROOT).returncode != 0:
            raise UserError(f"{script} failed in round {self.state['round']}; fix the error above and rerun to resume")

    def step(self, name: str, work) -> None:
        """Run a step of the current round unless it already finished; record what it measured."""
        if name in self.state["done"]:
            return
        t0 = time.monotonic()
        values = work() or {}
        seconds = time.monotonic() - t0
        self.state["values"].update(values, **{f"seconds_{name}": seconds})
        self.state["values"]["seconds"] = self.state["values"].get("seconds", 0.0) + seconds
        self.state["done"].append(name)
        write_json(self.state_path, self.state)

    def finish_round(self) -> None:
        r = self.state["round"]
        values = {k: v for k, v in self.state["values"].items() if not isinstance(v, str)}
        seconds = values["seconds"]
        self.stage.trim_metrics(r - 1)  # a kill after this line and before state.json moves on logs r again
        self.stage.log(r, values)
        self.state = {"round": r + 1, "done": [], "values": {}}
        write_json(self.state_path, self.state)
        self.plot()
        dream = (f", in M's dream {values['dream_mean']:.4g} (gap {values['dream_mean'] - values['real_mean']:+.4g})"
                 if "dream_mean" in values else "")
        print(f"\nround {r}: real {values['real_mean']:.4g} +/- {values['real_std']:.3g}{dream}" +
              (f", M's {self.a.horizon}-step latent error on C's new episodes {values['latent_error']:.4g}"
               if "latent_error" in values else "") + f", {values['real_frames']:,} real frames, {seconds:.0f} s" +
              (f"; kept C: round {values['kept_round']}'s ({values['kept_mean']:.4g} on the selection episodes, "
               f"this round's {values['keep_mean']:.4g})" if "kept_round" in values else ""))

    def plot(self) -> None:
        rows = [json.loads(ln) for ln in self.stage.metrics.read_text().splitlines()]
        x = [r["real_frames"] for r in rows]
        curves = {"real": [r["real_mean"] for r in rows]}
        if all("dream_mean" in r for r in rows):
            curves["in M's dream"] = [r["dream_mean"] for r in rows]
        line_plot(self.stage.path / "rounds.png", x, curves,
                  "real frames", f"return ({self.a.dynamics}, {self.a.method})")


def main() -> None:
    started = time.monotonic()
    a = parse_args()
    rounds = Rounds(a)
    rounds.stage.write_config({**vars(a), "logdir": str(a.logdir), "dataset": str(a.dataset)})
    m_args = ["--logdir", str(a.logdir), "--dataset", str(a.dataset), "--model", a.dynamics, *shlex.split(a.m_args)]
    c_args = ["--logdir", str(a.logdir), "--dynamics", a.dynamics, "--method", a.method, *shlex.split(a.c_args)]
    which = ["--logdir", str(a.logdir), "--dynamics", a.dynamics, "--method", a.method, *a.plan_flags]
    eval_dir = a.logdir / "eval"
    tag = f"{a.dynamics}_{a.method}"
    while rounds.state["round"] <= a.rounds:
        r = rounds.state["round"]
        print(f"\n=== round {r} of {a.rounds} ===")
        if r > 0:
            rounds.step("collect", lambda: collect(rounds, a))
            rounds.step("error", lambda: newest_error(a, rounds.state["values"]["new_folder"]))
        m_now = m_args + (shlex.split(a.m_args_later) if r > 0 else [])
        c_now = c_args + (shlex.split(a.c_args_later) if r > 0 else [])
        rounds.step("dynamics", lambda: rounds.run("traindynamics.py", *m_now))  # noqa: B023 (called at once)
        if a.method != "plan":
            rounds.step("controller", lambda: rounds.run("trainagent.py", *c_now))  # noqa: B023

        def evaluate() -> dict[str, float]:
            common = ["--episodes", str(a.eval_episodes), "--workers", str(a.threads)]
            rounds.run("test_controller.py", *which, *common)
            real = json.loads((eval_dir / f"{tag}.json").read_text())
            out = {"real_mean": real["mean"], "real_std": real["std"], "real_frames": real_frames(a)}
            if a.method != "plan":  # the planner has no dream score of its own
                rounds.run("test_controller.py", *which, *common, "--dream")
                dream = json.loads((eval_dir / f"{tag}_dream.json").read_text())
                out.update(dream_mean=dream["mean"], dream_std=dream["std"])
            if "success_rate" in real:
                out["real_success"] = real["success_rate"]
            return out

        if a.keep_best:
            rounds.step("keep", lambda: keep(a, rounds.state["round"]))
        rounds.step("evaluate", evaluate)
        rounds.finish_round()
    rounds.stage.record_run(started)
    copy_rounds_record(a.logdir)


def keep(a: argparse.Namespace, round_: int) -> dict[str, float | int]:
    """Judge the round's C on the real selection episodes; keep it in <logdir>/kept/ if best so far."""
    seeds = judge_seeds(a.seed, a.keep_best)
    judged = judge(a.logdir, a.dynamics, a.method, seeds, a.threads)
    kept = keep_if_better(a.logdir, a.dynamics, a.method, round_, seeds, judged)
    print(f"round {round_}'s C: {judged['mean']:.4g} +/- {judged['std']:.3g} over {len(seeds)} real selection "
          f"episodes; kept: round {kept['round']}'s ({kept['mean']:.4g})")
    return {"keep_mean": judged["mean"], "kept_round": kept["round"], "kept_mean": kept["mean"]}


def collect(rounds: Rounds, a: argparse.Namespace) -> dict[str, float]:
    """C's episodes into a new folder of the dataset; names it for the error step. The name
    comes from the logdir and the round, never from a checkpoint's random id, so that a rerun
    of the same command builds the same dataset (and the same train/validation split)."""
    folder = a.dataset / f"{a.logdir.resolve().name}_round{rounds.state['round']:02d}"
    rounds.run("generation_script.py", "--policy", "controller", "--logdir", str(a.logdir), "--dynamics",
               a.dynamics, "--method", a.method, *a.plan_flags, "--rollouts", str(a.collect), "--noise", str(a.noise),
               "--rootdir", str(folder), "--threads", str(a.threads),
               "--seed", str(a.seed * 1000 + rounds.state["round"]))
    return {"new_folder": folder.name}


def newest_error(a: argparse.Namespace, new_folder: str) -> dict[str, float]:
    """M's open-loop latent error on the round's new episodes, against copying the last z, before
    M trains on them: large where C goes and M has not been."""
    cpu = torch.device("cpu")
    vae, vae_id = load_vae(a.logdir, cpu)
    files = open_dataset(a.dataset)
    lat = latent_cache(a.logdir, a.dataset, files, vae, vae_id, cpu)  # encodes only the new episodes
    m, _ = load_dynamics(a.logdir, a.dynamics, vae, vae_id, cpu)
    new = [i for i, n in enumerate(relative_names(files)) if n.startswith(new_folder + "/")]
    errors = mean_latent_errors(m, vae, lat, new, a.horizon, 300)
    if errors is None:
        return {}
    err, copy = errors
    return {"latent_error": float(err[-1]), "latent_error_copy": float(copy[-1])}


def real_frames(a: argparse.Namespace) -> int:
    """Env steps in M's dataset (random and C's episodes) plus C's own real-env steps: all of
    its training in the real env, or its real selection episodes when it evolves in the dream,
    and the rounds' --keep-best selection episodes."""
    metas = [read_meta(meta.parent) or {} for meta in a.dataset.rglob("dataset.json")]
    frames = sum(m.get("frames", 0) * m.get("action_repeat", 1) for m in metas)  # agent steps times the repeat
    if a.method == "plan":
        return frames
    kept = read_kept(a.logdir / KEPT) or {}
    steps = sum(j["frames"] for j in kept.get("judged", []))  # --keep-best's real selection episodes
    metrics = a.logdir / "agent" / a.dynamics / a.method / "metrics.jsonl"
    config = json.loads((metrics.parent / "config.json").read_text())
    rows = [json.loads(ln) for ln in metrics.read_text().splitlines()]
    if a.method == "cmaes" and not config.get("dream"):
        steps += int(rows[-1]["frames"]) if rows else 0
    elif config.get("select") == "real":
        steps += int(rows[-1].get("select_frames", 0)) if rows else 0
    return frames + steps * int((read_meta(a.dataset) or {}).get("action_repeat", 1))  # C acts at M's data's rate


if __name__ == "__main__":
    run_main(main)
