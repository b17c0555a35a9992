"""One assembly: training, evaluation, replay and the epoch benchmark put a run together alike."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from harness.core.bus import Stateful
from harness.settings import load_settings
from harness.training.assembly import assemble
from harness.training.data import run_preprocessing

ROOT = Path(__file__).parents[3]
ASSEMBLY = ROOT / "harness" / "training" / "assembly.py"
USERS = ["harness/training/fit.py", "harness/training/evaluation.py", "harness/replay.py", "bench/epoch.py"]
SOURCES = sorted(p for folder in ("harness", "subscribers", "bench") for p in (ROOT / folder).rglob("*.py"))


def calls(path: Path) -> set[str]:
    """The names of the functions and methods `path` calls, and the names it imports."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            func = node.func
            found.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
        elif isinstance(node, ast.ImportFrom) and node.module == "harness.training.assembly":
            found.update(f"import:{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("user", USERS)
def test_each_entry_point_assembles_its_run_with_the_assembly(user: str) -> None:
    used = calls(ROOT / user)
    assert "import:assemble" in used and "assemble" in used


def test_no_module_but_the_assembly_builds_a_spec_or_a_run_context() -> None:
    testing = ROOT / "harness" / "core" / "testing.py"  # the test kit's make_context, for unit tests
    builders = {
        path.relative_to(ROOT).as_posix()
        for path in SOURCES
        if path not in (ASSEMBLY, testing) and {"build", "RunContext"} & calls(path)
    }
    assert builders == set()


def test_the_assembly_attaches_the_enabled_specs_then_the_extras_by_table_name(tmp_path: Path) -> None:
    settings = load_settings(None, ["subscribers.ema.enabled=false", "run.terminal='quiet'"])

    class Extra:
        def connect(self, bus: object) -> None:
            pass

    extra = Extra()
    assembly = assemble(
        settings, run_dir=tmp_path, class_names=("a", "b"), record_events=True, extras={"mine": extra}
    )
    names = list(assembly.subscribers)
    assert "ema" not in names and names[-1] == "mine" and assembly.subscribers["mine"] is extra
    assert assembly.event_log is not None
    assert assembly.stateful == [n for n, s in assembly.subscribers.items() if isinstance(s, Stateful)]
    assert assembly.context.preprocessing == run_preprocessing(settings)  # the weights' mean and std
    only = assemble(settings, run_dir=tmp_path, class_names=("a",), select=lambda name, spec: name == "plots")
    assert list(only.subscribers) == ["plots"]
    assembly.close()
