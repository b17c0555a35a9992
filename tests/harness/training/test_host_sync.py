"""No host synchronisation per training step in the harness's own code.

Every call that makes the host wait for the device (``item``, ``tolist``, ``cpu``,
``numpy``, ``bool``/``float``/``int`` of a tensor) is counted when its caller is a module
of ``harness/`` or ``subscribers/``. Two real fits that differ only in their number of
training steps must make the same count: whatever the harness reads back, it reads per
epoch, never per step. The divergence guard reads its flag every
`DIVERGENCE_CHECK_EVERY` steps, more than these runs take.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import harness
import subscribers
from harness.settings import Settings
from harness.training.fit import run
from harness.training.model import DIVERGENCE_CHECK_EVERY

MakeSettings = Callable[..., Settings]

SYNCING = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
OURS = tuple(str(Path(package.__file__).parent) for package in (harness, subscribers))
TORCH = str(Path(torch.__file__).parent)


def _caller() -> str | None:
    """The first caller outside torch, as ``file:line`` if it is the harness's code, else None."""
    frame = sys._getframe(2)  # 0: here, 1: the counting wrapper
    while frame is not None and frame.f_code.co_filename.startswith(TORCH):
        frame = frame.f_back
    if frame is None or not frame.f_code.co_filename.startswith(OURS):
        return None
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Device-to-host reads by the harness's code, by file and line."""
    counted: Counter[str] = Counter()
    for name in SYNCING:
        original = getattr(torch.Tensor, name)

        def counting(self: torch.Tensor, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            where = _caller()
            if where is not None:
                counted[where] += 1
            return __original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    yield counted


@pytest.mark.slow
def test_a_training_step_makes_no_host_sync_in_the_harness(
    make_settings: MakeSettings, syncs: Counter[str]
) -> None:
    every = ("ema", "sampler_tracking", "confusion_matrix", "samples", "epoch_line", "plots", "trackers")
    counts = []
    for steps in (2, 6):
        assert steps < DIVERGENCE_CHECK_EVERY
        syncs.clear()
        settings = make_settings(
            *every,
            "trainer.max_epochs=1",
            f"trainer.limit_train_batches={steps}",
            "trainer.limit_val_batches=1",
            "trainer.num_sanity_val_steps=0",
            "data.batch_size=4",
            "run.record_events=true",
        )
        assert run(settings).summary.global_step == steps
        counts.append(Counter(syncs))
    fewer, more = counts
    assert more == fewer, f"reads that grow with the steps: {dict(more - fewer)}"
    # the counter works: the epoch's end reads the divergence flag and the weights
    assert any(where.startswith("model.py") for where in more)


@pytest.mark.slow
def test_a_validation_batch_makes_no_host_sync_in_the_harness(
    make_settings: MakeSettings, syncs: Counter[str]
) -> None:
    every = ("ema", "sampler_tracking", "confusion_matrix", "samples", "epoch_line", "plots", "trackers")
    counts = []
    for batches in (1, 3):
        syncs.clear()
        settings = make_settings(
            *every,
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=1",
            f"trainer.limit_val_batches={batches}",
            "trainer.num_sanity_val_steps=0",
            "data.batch_size=4",
            "data.val_fraction=0.4",
            "run.record_events=true",
        )
        run(settings)
        counts.append(Counter(syncs))
    fewer, more = counts
    assert more == fewer, f"reads that grow with the validation batches: {dict(more - fewer)}"
    assert sum(more.values()) > 0
