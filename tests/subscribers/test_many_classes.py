"""At 2,000 classes the per-class artifacts stay bounded: they grow with the images, not C squared."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from PIL import Image

from harness.core.bus import Bus
from harness.core.events import TrainEpochEnd, TrainEpochStart, ValidationEpochEnd
from harness.core.testing import batch_end, make_context
from harness.evaluation.pairs import MOST_CONFUSED
from harness.training.sampler import make_sampler
from subscribers._sampler_report import share_chart
from subscribers.confusion_matrix import ConfusionMatrix
from subscribers.sampler_tracking import SamplerTracking

CLASSES = 2000
BATCHES, BATCH = 4, 64


def test_two_thousand_classes_keep_the_confusion_matrix_small_and_its_counts_exact(tmp_path: Path) -> None:
    context = make_context(tmp_path, num_classes=CLASSES, samples_per_class=1)
    subscriber = ConfusionMatrix(context)
    bus = Bus()
    bus.attach(subscriber)
    generator = torch.Generator().manual_seed(0)
    pairs: list[tuple[int, int]] = []
    for index in range(BATCHES):
        targets = torch.randint(0, CLASSES, (BATCH,), generator=generator)
        wrong = torch.rand(BATCH, generator=generator) < 0.3
        predicted = torch.where(wrong, torch.randint(0, CLASSES, (BATCH,), generator=generator), targets)
        logits = torch.nn.functional.one_hot(predicted, CLASSES).float()
        bus.publish(batch_end(stage="validate", batch_idx=index, targets=targets, logits=logits))
        pairs += zip(targets.tolist(), predicted.tolist(), strict=True)
    # One code per image is kept, not 4,000,000 cells.
    assert sum(codes.numel() for codes in subscriber.metric.codes) == BATCHES * BATCH
    bus.publish(ValidationEpochEnd(epoch=0, global_step=1, metrics={}))

    folder = context.run_dir / "confusion_matrix"
    with (folder / "epoch_000.csv").open() as handle:
        header, *cells = list(csv.reader(handle))
    assert header == ["true", "predicted", "count"]
    counted = {(row[0], row[1]): int(row[2]) for row in cells}
    expected: dict[tuple[str, str], int] = {}
    for true, guess in pairs:
        key = (f"class_{true}", f"class_{guess}")
        expected[key] = expected.get(key, 0) + 1
    assert counted == expected, "every image counted once, in its own cell"
    assert (folder / "epoch_000.csv").stat().st_size < 20_000

    with (folder / "most_confused" / "latest.csv").open() as handle:
        confused = list(csv.DictReader(handle))
    mistakes = sorted((count for (t, p), count in expected.items() if t != p), reverse=True)
    assert [int(row["count"]) for row in confused] == mistakes[:MOST_CONFUSED]

    with (folder / "per_class" / "latest.csv").open() as handle:
        assert sum(1 for _ in handle) == 1 + CLASSES, "one row per class"
    with Image.open(folder / "latest.png") as picture:
        assert max(picture.size) < 2000, "the most mistaken classes, drawn large enough to read"


def test_the_sampler_chart_draws_the_classes_furthest_from_their_share(tmp_path: Path) -> None:
    context = make_context(tmp_path, num_classes=CLASSES, samples_per_class=1)
    assert context.data is not None
    sampler = make_sampler(context.data.train_targets, balanced=True, seed=0)
    context.train_sampler = sampler
    bus = Bus()
    bus.attach(SamplerTracking(context))
    bus.publish(TrainEpochStart(epoch=0, global_step=0))
    list(sampler)
    bus.publish(batch_end(stage="train", batch_size=BATCH, targets=torch.arange(BATCH), num_classes=CLASSES))
    bus.publish(TrainEpochEnd(epoch=0, global_step=1, metrics={}))
    assert (context.run_dir / "sampler_tracking" / "draws.png").is_file()

    drawn = [[0] * CLASSES]
    drawn[0][7] = 50  # class 7 drawn far above its share
    chart = share_chart([0], drawn, [1 / CLASSES] * CLASSES, [f"class_{i}" for i in range(CLASSES)])
    assert len(chart.series) == 20 and "class_7" in [series.name for series in chart.series]
    assert "of 2,000 classes" in chart.title
