"""Every CUDA path of the pipeline, run as a user types it, with one PASS/FAIL/SKIP line each.

    python bench/gpu_check.py                          # on a GPU: under 8 minutes
    python bench/gpu_check.py --device cpu             # the CI smoke test: about a minute on 2 cores
    python bench/gpu_check.py --json gpu_check.json --keep --workdir /tmp/gpu_check

The stage scripts run as subprocesses on a tiny dataset of the built-in GridWorld that the
first check generates: V with --amp bf16 and fp16, each M (MDN-RNN, RSSM, TSSM) with both,
the actor-critic in imagination with both, CMA-ES in M's dream, and V data-parallel under
torchrun. Each chain of an --amp mode has its own logdir, so an fp16 failure cannot hide
behind a bf16 checkpoint; a check whose prerequisite failed is reported as failed, not run.

On a GPU it also runs the paths that place worker processes on GPUs (CMA-ES in the real
env with one worker, test_controller.py with one worker). On --device cpu the fp16 checks
are skipped (utils/precision.py refuses fp16 on a CPU), the actor-critic and the dream
run on one M each, and torchrun starts 2 gloo ranks (with 1 rank no process group forms);
--all runs the GPU's whole matrix on the CPU too. The exit status is 1 if any check
failed, 2 if the device is not there.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = "GridWorldFixed-v0"
DYNAMICS = ("mdrnn", "rssm", "tssm")
AMPS = ("bf16", "fp16")
FP16_SKIP = "fp16 is GPU-only"

# GridWorld's flat colours, as quickstart.py trains V, but narrow and for one epoch
V_FLAGS = ("--epochs", "1", "--width", "16", "--recon", "bce", "--kl-tolerance", "2")
# tiny M of each kind: the point is that every layer runs forward and backward under --amp
M_FLAGS = {
    "mdrnn": ("--hidden-size", "32", "--gaussians", "3"),
    "rssm": ("--deter", "32", "--stoch", "8", "--classes", "8", "--hidden-size", "32"),
    "tssm": ("--layers", "1", "--heads", "2", "--hidden-size", "32", "--context", "8", "--dropout", "0"),
}
M_COMMON = ("--epochs", "2", "--seq-len", "8", "--batch-size", "16")
AC_COMMON = ("--batch-size", "4", "--seq-len", "8", "--horizon", "5", "--units", "32", "--gamma", "0.9",
             "--max-workers", "0")


@dataclass(frozen=True)
class Scale:
    """How much work each check does on a device: the GPU gets enough data for real kernels,
    the CPU only enough for every code path to run once (bf16 convolutions are slow there)."""

    rollouts: int
    quiet: tuple[str, ...]  # V's sample PNG and M's dream GIF cost seconds on a CPU
    ac: tuple[str, ...]
    cmaes: tuple[str, ...]
    timeout: float  # seconds one check may take


SCALES = {
    "cpu": Scale(6, ("--nosamples",), ("--updates", "2", "--eval-every", "2", "--eval-episodes", "4"),
                 ("--pop-size", "4", "--n-samples", "2", "--generations", "2", "--eval-every", "2",
                  "--eval-episodes", "4"), 180.0),
    "cuda": Scale(200, (), ("--updates", "10", "--eval-every", "5", "--eval-episodes", "8"),
                  ("--pop-size", "8", "--n-samples", "4", "--generations", "3", "--eval-every", "3",
                   "--eval-episodes", "8"), 240.0),
}
# the CPU smoke test runs C on one M each, so every M is used downstream once
CPU_AC, CPU_DREAM = ("rssm",), ("tssm",)


@dataclass(frozen=True)
class Check:
    """One command line: argv follows the interpreter; needs names checks that must pass first."""

    name: str
    stage: str
    argv: tuple[str, ...]
    amp: str | None = None
    needs: tuple[str, ...] = ()
    skip: str | None = None


@dataclass
class Result:
    """One line of the report, and one record of --json."""

    name: str
    stage: str
    amp: str | None
    status: str  # pass, fail or skip
    seconds: float
    detail: str  # why it was skipped, or the tail of its stderr
    command: str
    device: str
    torch: str


def plan(device: str, work: Path, full: bool, nproc: int) -> list[Check]:
    """The checks in running order; each --amp mode trains V, M and C in its own logdir."""
    s = SCALES[device]
    data = str(work / "data")
    dev = ("--device", device)
    checks = [Check(f"data {ENV} x{s.rollouts}", "data",
                    ("generation_script.py", "--env", ENV, "--rollouts", str(s.rollouts), "--rootdir", data,
                     "--threads", "0"))]
    data_check = checks[0].name
    skip = {amp: FP16_SKIP if amp == "fp16" and device == "cpu" else None for amp in AMPS}
    for amp in AMPS:
        checks.append(Check(f"V --amp {amp}", "V",
                            ("trainvae.py", "--logdir", str(work / amp), "--dataset", data, *V_FLAGS, *s.quiet,
                             "--noreload", *dev, "--amp", amp), amp, (data_check,), skip[amp]))
    for model in DYNAMICS:
        for amp in AMPS:
            quiet = ("--nodreams",) if s.quiet else ()
            checks.append(Check(f"M {model} --amp {amp}", "M",
                                ("traindynamics.py", "--model", model, "--logdir", str(work / amp), "--dataset", data,
                                 *M_COMMON, *M_FLAGS[model], *quiet, "--noreload", *dev, "--amp", amp),
                                amp, (f"V --amp {amp}",), skip[amp]))
    for model in DYNAMICS if full else CPU_AC:
        for amp in AMPS:
            checks.append(Check(f"C ac on {model} --amp {amp}", "C",
                                ("trainagent.py", "--method", "ac", "--logdir", str(work / amp), "--dynamics", model,
                                 *AC_COMMON, *s.ac, "--noreload", *dev, "--amp", amp),
                                amp, (f"M {model} --amp {amp}",), skip[amp]))
    for model in DYNAMICS if full else CPU_DREAM:
        checks.append(Check(f"C cmaes --dream on {model}", "C",
                            ("trainagent.py", "--method", "cmaes", "--dream", "--logdir", str(work / "bf16"),
                             "--dynamics", model, *s.cmaes, "--noreload", *dev),
                            None, (f"M {model} --amp bf16",)))
    if full:  # worker processes that take a GPU each (utils/device.py worker_device)
        checks.append(Check("C cmaes real env, 1 worker, on mdrnn", "C",
                            ("trainagent.py", "--method", "cmaes", "--logdir", str(work / "bf16"), "--dynamics",
                             "mdrnn", "--pop-size", "4", "--n-samples", "1", "--generations", "1", "--eval-every",
                             "1", "--eval-episodes", "2", "--max-workers", "1", "--envs-per-worker", "4",
                             "--noreload", *dev),
                            None, ("M mdrnn --amp bf16",)))
        checks.append(Check("eval test_controller ac on rssm, 1 worker", "eval",
                            ("test_controller.py", "--logdir", str(work / "bf16"), "--dynamics", "rssm", "--method",
                             "ac", "--episodes", "4", "--workers", "1", *dev),
                            None, ("C ac on rssm --amp bf16",)))
    # one rank forms no process group (WORLD_SIZE 1), so only 2+ ranks reach gloo or nccl
    backend = ("nccl" if device == "cuda" else "gloo") if nproc > 1 else "no process group"
    amp = "bf16" if device == "cuda" else "none"  # bf16 convolutions on a CPU cost minutes
    checks.append(Check(f"torchrun V nproc {nproc} ({backend})", "torchrun",
                        ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
                         "trainvae.py", "--logdir", str(work / "ddp"), "--dataset", data, *V_FLAGS, *s.quiet,
                         "--noreload", *dev, "--amp", amp),
                        None if amp == "none" else amp, (data_check,)))
    return checks


def select(checks: list[Check], only: list[str]) -> list[Check]:
    """The checks whose name contains one of the --only strings, with their prerequisites."""
    if not only:
        return checks
    by_name = {c.name: c for c in checks}
    keep: set[str] = set()
    todo = [c.name for c in checks if any(o.lower() in c.name.lower() for o in only)]
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(by_name[name].needs)
    return [c for c in checks if c.name in keep]


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def tail(path: Path, n: int = 8) -> str:
    """The last lines a process wrote, with tqdm's carriage-return redraws split apart."""
    lines = [ln.rstrip() for ln in path.read_text(errors="replace").replace("\r", "\n").splitlines()]
    return "\n".join([ln for ln in lines if ln.strip()][-n:])


def _ps() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, start time) of every process, from /proc (empty where there is none)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        table[int(stat.parent.name)] = (int(fields[1]), fields[19])
    return table


def descendants(pid: int) -> dict[int, str]:
    """Every process below pid with its start time: torchrun starts its ranks in sessions of
    their own, out of reach of a signal to the check's process group."""
    table = _ps()
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, (ppid, started) in table.items():
            if ppid == parent and child not in found:
                found[child] = started
                todo.append(child)
    return found


def stop(proc: subprocess.Popen) -> None:
    """End a check and everything it started: SIGTERM first (torchrun passes it on to its
    ranks), then SIGKILL to whatever is left of the processes it had started."""
    family = descendants(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    alive = _ps()
    for pid, started in family.items():
        if pid in alive and alive[pid][1] == started:  # the same process, not a reused pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def execute(check: Check, logs: Path, timeout: float) -> tuple[str, float, str]:
    """Run one check in its own process group, so a timeout ends its children too."""
    out, err = logs / f"{slug(check.name)}.out", logs / f"{slug(check.name)}.err"
    start = time.perf_counter()
    with out.open("w") as fo, err.open("w") as fe:
        proc = subprocess.Popen([sys.executable, *check.argv], cwd=ROOT, stdout=fo, stderr=fe,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(proc)
            rc = None
        except BaseException:  # Ctrl-C: leave no stage running behind us
            stop(proc)
            raise
    seconds = time.perf_counter() - start
    if rc == 0:
        return "pass", seconds, ""
    why = f"timed out after {timeout:.0f} s" if rc is None else f"exit status {rc}"
    return "fail", seconds, f"{why}\n{tail(err) or tail(out)}"


def report(r: Result) -> None:
    label = f"{r.name} ({r.device})"
    if r.status == "skip":
        print(f"SKIP  {label:<48} skipped ({r.detail})", flush=True)
        return
    print(f"{r.status.upper():<5} {label:<48} {r.seconds:6.1f} s", flush=True)
    if r.status == "fail":
        if not r.detail.startswith("not run"):
            print(f"      $ {r.command}")
        for line in r.detail.splitlines():
            print(f"      | {line}")
        sys.stdout.flush()


def run_all(checks: list[Check], device: str, torch_version: str, work: Path, time_limit: float,
            timeout: float) -> list[Result]:
    """Run the checks in order; a check whose prerequisite failed or was skipped does not run."""
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + time_limit
    results: dict[str, Result] = {}
    for c in checks:
        status, seconds, detail = "skip", 0.0, c.skip or ""
        failed = [n for n in c.needs if results[n].status == "fail"]
        skipped = [n for n in c.needs if results[n].status == "skip"]
        left = deadline - time.perf_counter()
        if c.skip:
            pass
        elif failed:
            status, detail = "fail", f"not run: it needs '{failed[0]}', which failed"
        elif skipped:
            detail = results[skipped[0]].detail
        elif left < 5:
            status, detail = "fail", f"not run: --time-limit {time_limit:.0f} s was spent"
        else:
            status, seconds, detail = execute(c, logs, min(timeout, left))
        command = shlex.join(["python", *c.argv])
        results[c.name] = Result(c.name, c.stage, c.amp, status, round(seconds, 2), detail, command, device,
                                 torch_version)
        report(results[c.name])
    return list(results.values())


def cuda_or_exit(device: str) -> tuple[str, str]:
    """torch's version, and the GPU's name; without the device one line and exit status 2."""
    if device == "cpu":  # importing torch here would cost seconds of the CPU smoke test
        return metadata.version("torch"), "cpu"
    import torch

    if not torch.cuda.is_available():
        print(f"gpu_check: --device cuda, but torch {torch.__version__} sees no GPU "
              "(torch.cuda.is_available() is False); use --device cpu for the CPU smoke test", file=sys.stderr)
        sys.exit(2)
    return torch.__version__, torch.cuda.get_device_name(0)


def default_nproc(device: str) -> int:
    """2 gloo ranks on a CPU; on GPUs one rank per GPU, at most 2 (NCCL refuses two ranks on one GPU)."""
    if device == "cpu":
        return 2
    import torch

    return max(1, min(2, torch.cuda.device_count()))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--workdir", type=Path, help="where the dataset, logdirs and logs go (default: a fresh temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the temp workdir (a given --workdir is always kept)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--all", action="store_true", help="on --device cpu, run the GPU's whole matrix too")
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="run only the checks whose name contains TEXT (and what they need); repeatable")
    p.add_argument("--nproc", type=int, help="torchrun ranks (default: 2 on cpu, one per GPU up to 2)")
    p.add_argument("--timeout", type=float, help="seconds one check may run (default: 180 cpu, 240 cuda)")
    p.add_argument("--time-limit", type=float, default=470.0, help="seconds for all checks together")
    a = p.parse_args()
    started = time.perf_counter()
    torch_version, device_name = cuda_or_exit(a.device)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    checks = select(plan(a.device, work, a.all or a.device == "cuda", a.nproc or default_nproc(a.device)), a.only)
    print(f"gpu_check: {len(checks)} checks on {a.device}, workdir {work}", flush=True)
    try:
        results = run_all(checks, a.device, torch_version, work, a.time_limit, a.timeout or SCALES[a.device].timeout)
    finally:
        if a.workdir is None and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    total = time.perf_counter() - started
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    where = a.device if a.device == "cpu" else f"{a.device} ({device_name})"
    print(f"gpu_check: {counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped in {total:.1f} s "
          f"on {where}, torch {torch_version}", flush=True)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({
            "device": a.device, "device_name": device_name, "torch": torch_version, "seconds": round(total, 2),
            "passed": counts["fail"] == 0, "counts": counts, "checks": [asdict(r) for r in results],
        }, indent=2) + "\n")
    sys.exit(1 if counts["fail"] else 0)


if __name__ == "__main__":
    main()
