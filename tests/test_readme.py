"""The README opens with the two set-up commands, and CI runs the second one verbatim."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", text, re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def test_readme_starts_with_main_job_and_test_commands() -> None:
    main_job, tests = readme_commands()
    assert "pip install -r requirements.txt" in main_job and "quickstart.py" in main_job
    assert "pip install -r requirements.txt -r requirements-distributed.txt -r requirements-dmc.txt" in tests
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert readme_commands()[1] in ci


def test_requirements_pin_every_package() -> None:
    reqs = [line for name in ("requirements.txt", "requirements-distributed.txt", "requirements-dmc.txt")
            for line in (ROOT / name).read_text().splitlines() if line and line[0] != "#"]
    assert "torch==2.13.0" in reqs and "ray==2.58.0" in reqs and "mujoco==3.17.0" in reqs
    assert all("==" in line for line in reqs)
    assert not any(line.startswith("pygame") for line in reqs)  # gymnasium[box2d] brings pygame-ce
