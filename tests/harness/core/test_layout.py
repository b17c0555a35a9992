"""The run directory's names live in `harness.core.layout` alone."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.core.layout import RUN_FILES, RunLayout

ROOT = Path(__file__).parents[3]
LAYOUT = ROOT / "harness" / "core" / "layout.py"
SOURCES = sorted(p for folder in ("harness", "subscribers", "bench") for p in (ROOT / folder).rglob("*.py"))


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


# torch hub keeps downloaded weights in its own folder named "checkpoints", not a run's.
ELSEWHERE = {("harness/training/networks.py", "checkpoints")}


def spelled_names(source: str) -> list[str]:
    """The run-directory names that `source` spells in a path.

    A file name (``summary.json``) counts in any string or part of a path string; a folder
    name (``attempts``, which is also a key of the summary) counts as an operand of ``/``
    or in a string holding a ``/``.
    """
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    joined = {
        id(side)
        for node in ast.walk(tree)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
        for side in (node.left, node.right)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            text = node.value.replace("\\", "/")
            in_path = "/" in text or id(node) in joined
            found += [p for p in text.split("/") if p in RUN_FILES and ("." in p or in_path)]
    return found


@pytest.mark.parametrize("path", [p for p in SOURCES if p != LAYOUT], ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_but_the_layout_spells_a_run_directory_name(path: Path) -> None:
    where = path.relative_to(ROOT).as_posix()
    spelled = [
        name for name in spelled_names(path.read_text(encoding="utf-8")) if (where, name) not in ELSEWHERE
    ]
    assert spelled == []


def test_the_check_sees_a_path_built_from_literals() -> None:
    assert spelled_names('p = run_dir / "summary.json"') == ["summary.json"]
    assert spelled_names('p = f"{run_dir}/onnx_export/model.onnx"') == ["onnx_export", "model.onnx"]
    assert spelled_names('folder = run_dir / "attempts"') == ["attempts"]
    assert spelled_names('"""Writes summary.json."""\nkey = "attempts"') == []


def test_the_layout_names_every_path_under_its_run_directory(tmp_path: Path) -> None:
    layout = RunLayout(tmp_path)
    assert layout.last_checkpoint.parent == layout.checkpoints
    assert layout.onnx_model.parent == layout.folder("onnx_export")
    assert layout.attempt(2).relative_to(tmp_path).as_posix() == "attempts/002"
    assert layout.table("model_info").parent == layout.folder("model_info")
    assert RunLayout.of_checkpoint(layout.last_checkpoint).run_dir == tmp_path.resolve()
    assert not layout.is_run_dir()
    layout.settings.write_text("")
    layout.labels.write_text("{}")
    assert layout.is_run_dir()
