"""The main job: the whole pipeline on the built-in GridWorld, at small scale, on a CPU.

    python quickstart.py

Each stage runs as its own command, exactly as a user would type it, so this file doubles
as a worked example. Rerunning resumes every stage from --logdir.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# GridWorld's flat colours: a narrow V, the BCE loss and 2 free nats per dimension
V_FLAGS = ("--epochs", "3", "--width", "16", "--recon", "bce", "--kl-tolerance", "2", "--lr", "2e-3")
# episodes last about 12 steps; rewards and endings are rare, so their losses weigh more
M_FLAGS = ("--model", "mdrnn", "--epochs", "40", "--seq-len", "16", "--hidden-size", "64", "--reward-weight", "5",
           "--done-weight", "5")


def stage(script: str, *args: str) -> None:
    cmd = [sys.executable, script, *args]
    print(f"\n$ python {script} {shlex.join(args)}", flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        sys.exit(f"quickstart: {script} failed; fix the error above and rerun to resume")


def score_line(eval_dir: Path) -> str:
    """The controller's score next to the random policy's, on the same 200 unseen episodes."""
    res = {k: json.loads((eval_dir / f"{k}.json").read_text()) for k in ("mdrnn_cmaes", "random")}

    def text(r: dict) -> str:
        success = f", success {100 * r['success_rate']:.1f}%" if "success_rate" in r else ""
        return f"{r['mean']:.3f} +/- {r['std']:.3f}{success}"
    return f"controller: {text(res['mdrnn_cmaes'])}   |   random policy: {text(res['random'])}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # the fixed map: random layouts (GridWorld-v0) are beyond what M learns from 1500 episodes
    p.add_argument("--env", default="GridWorldFixed-v0")
    p.add_argument("--logdir", default="exp/quickstart")
    p.add_argument("--rollouts", type=int, default=1500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="seed of every stage (the test episodes stay the same)")
    p.add_argument("--results", metavar="DIR",
                   help="also write the ledger files DIR/quickstart_seed<S>.json and DIR/random_policy.json")
    a = p.parse_args()
    dataset = f"datasets/{a.env}" + (f"-seed{a.seed}" if a.seed else "")
    seed = ("--seed", str(a.seed))
    stage("generation_script.py", "--env", a.env, "--rollouts", str(a.rollouts),
          "--rootdir", dataset, "--threads", str(a.threads), *seed)
    stage("trainvae.py", "--logdir", a.logdir, "--dataset", dataset, *V_FLAGS, *seed)
    stage("traindynamics.py", "--logdir", a.logdir, "--dataset", dataset, *M_FLAGS, *seed)
    # a small population in the real env; sampled actions start the search at the random policy
    stage("trainagent.py", "--method", "cmaes", "--logdir", a.logdir, "--pop-size", "32", "--n-samples", "8",
          "--generations", "80", "--eval-every", "5", "--eval-episodes", "100", "--discrete", "sample",
          "--max-workers", str(a.threads), *seed)
    ledger = (lambda name: ("--results", f"{a.results}/{name}.json")) if a.results else (lambda name: ())
    stage("test_controller.py", "--logdir", a.logdir, "--episodes", "200", "--random", *ledger("random_policy"))
    stage("test_controller.py", "--logdir", a.logdir, "--episodes", "200", "--video", "2", "--workers", str(a.threads),
          *ledger(f"quickstart_seed{a.seed}"))
    print(f"\nquickstart done: V's reconstructions in {a.logdir}/vae/samples/, M's dreams in "
          f"{a.logdir}/dynamics/mdrnn/dreams/, C's episodes in {a.logdir}/eval/videos/")
    print(score_line(Path(a.logdir) / "eval"))


if __name__ == "__main__":
    main()
