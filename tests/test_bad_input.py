"""An env, dataset or logdir that cannot fit what is trained, or cannot be written, stops a
stage before any work with one line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import GRID_VAE, run_script


def refused(proc, *words: str) -> bool:
    line = proc.stderr.strip()
    return proc.returncode == 2 and "\n" not in line and line.startswith("error:") and all(w in line for w in words)


def test_an_env_with_other_actions_than_ms_data_is_refused(grid_world, tmp_path) -> None:
    logdir = Path(shutil.copytree(grid_world, tmp_path / "exp"))
    proc = run_script("trainagent.py", "--logdir", str(logdir), "--env", "GridWorldFixedContinuous-v0",
                      "--dream", "--device", "cpu", check=False)
    assert refused(proc, "GridWorldFixedContinuous-v0", "discrete"), proc.stderr
    assert not (logdir / "agent").exists()


def test_folders_that_cannot_be_written_are_refused(grid_data, tmp_path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    proc = run_script("trainvae.py", "--logdir", str(blocker / "exp"), "--dataset", str(grid_data), *GRID_VAE,
                      check=False)
    assert refused(proc, "cannot create", str(blocker / "exp")), proc.stderr
    proc = run_script("generation_script.py", "--rootdir", str(blocker / "data"), "--rollouts", "2", "--threads", "0",
                      check=False)
    assert refused(proc, "cannot create"), proc.stderr


def test_a_dataset_that_is_not_one_is_refused(tmp_path) -> None:
    empty = Path(tmp_path / "empty")
    empty.mkdir()
    proc = run_script("trainvae.py", "--logdir", str(tmp_path / "exp"), "--dataset", str(empty), *GRID_VAE,
                      check=False)
    assert refused(proc, str(empty)), proc.stderr


def test_a_logdir_whose_dataset_is_gone_is_refused(grid_world, tmp_path) -> None:
    """Every stage after M reads the env, actions and action repeat from M's dataset."""
    logdir = Path(shutil.copytree(grid_world, tmp_path / "exp"))
    meta = logdir / "latents" / "meta.json"
    gone = tmp_path / "deleted_dataset"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "dataset": str(gone)}))
    for script, *args in (("test_controller.py", "--episodes", "1", "--method", "plan", "--plan-light"),
                          ("test_controller.py", "--episodes", "1", "--random"),
                          ("trainagent.py", "--dream", "--generations", "1"),
                          ("generation_script.py", "--policy", "controller", "--method", "plan", "--rollouts", "1")):
        proc = run_script(script, "--logdir", str(logdir), *args, check=False)
        assert refused(proc, str(gone), "no longer exists"), (script, proc.stderr)
    assert not {"eval", "agent"} & {p.name for p in logdir.iterdir()}
