"""The contract every built-in subscriber keeps, checked over all of them.

Each one constructs from defaults, lists its subscriptions in `connect`, survives a whole
run and an event stream it did not expect, and (when stateful) round-trips its state
through `torch.save` / `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import importlib
import inspect
import io
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
import torch

from harness.core.bus import Bus, Stateful
from harness.core.events import (
    CheckpointSaving,
    EpochJobsQueued,
    FitEnd,
    TrainEnd,
    TrainEpochEnd,
    TrainLoopEnd,
    ValidationEpochEnd,
    ValidationSwapIn,
    ValidationSwapOut,
)
from harness.core.options import help_of
from harness.core.testing import batch_end, make_context, scripted_run, tiny_model
from harness.settings import builtin_specs
from subscribers import BUILTIN

SPECS = {spec.name: spec for spec in BUILTIN}
NAMES = list(SPECS)


def build(name: str, tmp_path: Path) -> tuple[Any, Any]:
    context = make_context(tmp_path, num_classes=3, image_size=16, model=tiny_model(num_classes=3))
    spec = SPECS[name]
    return spec.build(context, spec.settings()), context


def state_equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(state_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(state_equal, a, b))
    return bool(a == b)


def test_the_installed_entry_point_lists_the_built_ins_in_attach_order() -> None:
    assert builtin_specs() == BUILTIN


@pytest.mark.parametrize("name", NAMES)
def test_is_one_module_with_its_class_settings_and_spec(name: str, tmp_path: Path) -> None:
    spec = SPECS[name]
    module = importlib.import_module(f"subscribers.{name}")
    assert module.SPEC is spec, "a built-in's table name is its module's name"
    subscriber, _ = build(name, tmp_path)
    public = {module.__dict__[n] for n in module.__all__} - {spec}
    assert public == {type(subscriber), spec.settings}, "one subscriber class and its settings class"
    assert module.__doc__ and module.__doc__.strip()
    for field in attrs.fields(spec.settings):
        assert help_of(field), f"[subscribers.{name}].{field.name} has a one-line help"
    imports = [
        line for line in inspect.getsource(module).splitlines() if line.startswith(("import ", "from "))
    ]
    assert not [line for line in imports if "lightning" in line], "subscribers never import Lightning"


@pytest.mark.parametrize("name", NAMES)
def test_survives_a_whole_run_and_round_trips_its_state(name: str, tmp_path: Path) -> None:
    subscriber, context = build(name, tmp_path)
    bus = Bus()
    bus.attach(subscriber)
    assert bus.subscriptions(), "connect() subscribes to something"
    scripted_run(bus, context, epochs=2, train_batches=2, val_batches=2, sanity_check=True)
    if not isinstance(subscriber, Stateful):
        return
    buffer = io.BytesIO()
    torch.save(subscriber.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh, _ = build(name, tmp_path / "fresh")
    fresh.load_state_dict(state)
    assert state_equal(fresh.state_dict(), subscriber.state_dict())


@pytest.mark.parametrize("name", NAMES)
def test_survives_events_it_did_not_expect(name: str, tmp_path: Path) -> None:
    """Events out of order or missing their predecessors: no crash, whatever it writes is whole."""
    subscriber, context = build(name, tmp_path)
    bus = Bus()
    bus.attach(subscriber)
    for event in (
        ValidationSwapOut(epoch=0, global_step=0),
        batch_end(stage="validate", num_classes=3, image_size=16),
        ValidationEpochEnd(epoch=0, global_step=0, metrics={}),
        batch_end(stage="test", num_classes=3, image_size=16),
        TrainEpochEnd(epoch=3, global_step=5, metrics={"unknown/metric": 1.0}),
        EpochJobsQueued(epoch=3, global_step=5),
        ValidationSwapIn(epoch=3, global_step=5),
        ValidationSwapIn(epoch=3, global_step=5),
        ValidationSwapOut(epoch=3, global_step=5),
        CheckpointSaving(epoch=3, global_step=5, model_state={}),
        TrainLoopEnd(epoch=3, global_step=5),
        TrainEnd(epoch=3, global_step=5, metrics={}),
        FitEnd(epoch=3, global_step=5),
    ):
        bus.publish(event)
    for path in context.run_dir.rglob("*"):
        assert not path.name.endswith(".tmp"), f"a temporary file was left behind: {path}"


def test_importing_the_built_ins_loads_no_drawing_or_onnx_library() -> None:
    """Heavy libraries load when a spec builds its subscriber: a disabled one costs nothing."""
    code = (
        "import sys, subscribers; "
        "heavy = ('matplotlib', 'onnx', 'onnxruntime', 'onnxscript', 'torchmetrics'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
