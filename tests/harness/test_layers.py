"""The layout is the architecture: which package may import which, checked on the source."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
HARNESS = ROOT / "harness"


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def modules(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.py"))


@pytest.mark.parametrize("path", modules(HARNESS), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_of_the_harness_imports_a_subscriber(path: Path) -> None:
    assert not {m for m in imports_of(path) if m == "subscribers" or m.startswith("subscribers.")}


@pytest.mark.parametrize("path", modules(HARNESS / "core"), ids=lambda p: p.name)
def test_the_core_imports_no_lightning_and_no_other_layer(path: Path) -> None:
    outside = {
        m
        for m in imports_of(path)
        if m.split(".")[0] == "lightning" or (m.startswith("harness.") and not m.startswith("harness.core"))
    }
    assert not outside


@pytest.mark.parametrize("layer", ["evaluation", "io", "onnx", "pictures", "settings"])
def test_lower_layers_never_import_the_lightning_side_or_the_tools(layer: str) -> None:
    tools = {p.stem for p in HARNESS.glob("*.py") if p.stem != "__init__"}
    for path in modules(HARNESS / layer):
        bad = {
            m
            for m in imports_of(path)
            if m.split(".")[0] == "lightning"
            or m.startswith("harness.training")
            or m.split(".")[:2] in [["harness", tool] for tool in tools]
        }
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


@pytest.mark.parametrize("path", modules(HARNESS / "pictures"), ids=lambda p: p.name)
def test_the_pictures_import_only_the_io_and_the_core_of_the_harness(path: Path) -> None:
    allowed = ("harness.core", "harness.io", "harness.pictures")
    outside = {m for m in imports_of(path) if m.startswith("harness.") and not m.startswith(allowed)}
    assert not outside, f"{path.relative_to(ROOT)} imports {outside}"


def test_the_pictures_load_no_torch_and_no_drawing_library_but_pillow() -> None:
    code = (
        "import sys, harness.pictures.chart, harness.pictures.confusion, harness.pictures.mosaic; "
        "heavy = ('torch', 'lightning', 'torchmetrics', 'matplotlib', 'onnxruntime'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_private_module_is_used_only_by_its_neighbours() -> None:
    for path in [*modules(HARNESS), *modules(ROOT / "subscribers")]:
        package = ".".join(path.relative_to(ROOT).parent.parts)
        for name in imports_of(path):
            parts = name.split(".")
            private = [i for i, part in enumerate(parts) if part.startswith("_") and part != "__future__"]
            if private:
                owner = ".".join(parts[: private[0]])
                assert owner == package, f"{path.relative_to(ROOT)} imports {name}, private to {owner}"


def test_every_package_states_its_public_names() -> None:
    for init in HARNESS.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        names = [
            t.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        ]
        assert "__all__" in names, f"{init.relative_to(ROOT)} has no __all__"


def test_prediction_and_the_model_card_load_without_torch() -> None:
    code = (
        "import sys, harness.predict, harness.onnx.card, harness.core.errors, harness.core.preprocessing; "
        "import harness.evaluate, harness.evaluation.folder, harness.onnx.session; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
