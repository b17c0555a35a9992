"""subscribers.augment_preview: a grid of augmented training images at fit start."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from harness.core.bus import Bus
from harness.core.events import FitStart
from harness.core.testing import make_context
from subscribers.augment_preview import FILE, AugmentPreview, AugmentPreviewSettings


def test_fit_start_writes_the_grid_of_what_the_samples_function_gives(tmp_path: Path) -> None:
    asked: list[tuple[int, int]] = []

    def samples(count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        asked.append((count, seed))
        return torch.zeros(count, 3, 8, 8), torch.arange(count) % 3

    base = make_context(tmp_path)
    context = type(base)(
        run_dir=base.run_dir,
        class_names=base.class_names,
        preprocessing=base.preprocessing,
        augmented_samples=samples,
    )
    bus = Bus()
    bus.attach(AugmentPreview(context, AugmentPreviewSettings(count=5, seed=7)))
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    assert asked == [(5, 7)]
    with Image.open(context.run_dir / FILE) as picture:
        assert picture.size[0] > 0
    assert context.artifacts["augment_preview"] == FILE


def test_without_samples_or_on_resume_with_a_picture_it_writes_nothing(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    bus.attach(AugmentPreview(context))
    bus.publish(FitStart(epoch=0, global_step=0, max_epochs=1))
    assert not (context.run_dir / FILE).exists()
