"""The layering of the code: the model layer (models/) never reaches up into the
infrastructure (utils/), so networks stay usable and testable without torchrun, devices or
logdirs; what a model needs from there is passed in by its caller."""

from __future__ import annotations

import ast

import pytest

from tests.conftest import ROOT

MODELS = sorted((ROOT / "models").glob("*.py"))


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of every import anywhere in the tree, function bodies included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.lineno, "." * node.level + (node.module or "")))
    return found


def test_the_check_sees_every_form_of_import() -> None:
    """The parser half of the test below: a check that saw nothing would always pass."""
    source = "import utils\nimport utils.device as d\nfrom utils.distributed import x\ndef f():\n from utils import y"
    found = [m for _, m in imported_modules(ast.parse(source))]
    assert found == ["utils", "utils.device", "utils.distributed", "utils"]


@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.name)
def test_models_import_nothing_from_utils(path) -> None:
    bad = [f"{path.name}:{line}: {module}" for line, module in imported_modules(ast.parse(path.read_text()))
           if module == "utils" or module.startswith("utils.")]
    assert not bad, "models/ must not import utils/ (pass what is needed in instead):\n" + "\n".join(bad)


def test_there_are_models_to_check() -> None:
    assert len(MODELS) > 5
