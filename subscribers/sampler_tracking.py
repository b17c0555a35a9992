"""Reports the sampler's draws per class each epoch; consumes TrainEpochStart, BatchEnd, TrainEpochEnd.

It publishes nothing. Two counts per class and epoch:

- drawn: the full draw that `harness.training.sampler.TrackingWeightedRandomSampler` recorded
  (found at ``context.train_sampler``, or inside Lightning's DDP wrapper), counted with
  ``context.data.train_targets``. Every rank seeds the sampler alike, so under DDP the
  full draw is the same on every rank.
- trained: the classes of the training batches this rank went through, from `BatchEnd`.
  Under DDP this is the rank's own share of the draw (Lightning hands each rank a
  shuffled ``1 / world_size`` of it); with ``limit_train_batches`` it is the part used.

Rank zero prints a table (images per class, the share the sampler's weights expect, the
shares drawn and trained) at the first epoch it reports, and again only when a class's
drawn share is further than ``drift_threshold`` from its expected share (every epoch
with ``[run].terminal = "verbose"``, never with ``"quiet"``). Each epoch it rewrites,
under ``run_dir/sampler_tracking/``,
``draws.csv`` and ``trained.csv`` (a row per epoch, a column per class) and
``draws.png`` (drawn share per class over epochs). Every rank keeps its history (its own
"trained"); it is part of `state_dict`, so a resumed run goes on with the epochs it
already reported. A sampler that does not track is reported once and otherwise ignored.
The files are written from a copy of the history on the run's background writer
(`RunContext.background`), inline without one; the table is printed at once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any

import attrs
import torch

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, TrainEpochEnd, TrainEpochStart
from harness.core.options import option, positive, within
from harness.core.spec import OnError, SubscriberSettings, SubscriberSpec, on_error_option
from harness.training.sampler import Draw, TrackingWeightedRandomSampler, class_counts, find_tracking_sampler
from subscribers._sampler_report import table_rows, write_history
from subscribers._tables import print_table

__all__ = ["SPEC", "SamplerTracking", "SamplerTrackingSettings"]

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class SamplerTrackingSettings(SubscriberSettings):
    """What the training sampler drew per class, every epoch, against what its weights expect."""

    on_error: OnError = on_error_option("isolate")

    max_table_rows: int = option(30, "classes shown in the terminal table", positive())
    drift_threshold: float = option(
        0.05,
        "print the table again when a class's drawn share is this far from its expected share",
        within(0, 1, closed="(]"),
    )


class SamplerTracking:
    """Per-class counts of every epoch's draw, against the data set and the sampler's weights.

    `history` holds one entry per epoch: ``epoch``, ``drawn`` (count of each class in the
    sampler's full draw) and ``trained`` (count of each class in this rank's batches).
    """

    def __init__(self, context: RunContext, settings: SamplerTrackingSettings | None = None) -> None:
        self.context = context
        self.settings = settings or SamplerTrackingSettings()
        self.history: list[dict[str, Any]] = []
        self._trained: torch.Tensor | None = None
        self._last_draw: Draw | None = None
        self._warned = False
        self._printed = False

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochStart, self.on_train_epoch_start)
        bus.subscribe(BatchEnd, self.on_batch_end, stage="train")
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end)

    def state_dict(self) -> dict[str, Any]:
        return {"history": [dict(entry) for entry in self.history]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.history = [
            {
                "epoch": int(entry["epoch"]),
                "drawn": [int(n) for n in entry["drawn"]],
                "trained": [int(n) for n in entry["trained"]],
            }
            for entry in state["history"]
        ]

    def on_train_epoch_start(self, event: TrainEpochStart) -> None:
        self._trained = None

    def on_batch_end(self, event: BatchEnd) -> None:
        if event.targets.is_floating_point():
            return  # soft targets (mixup, label distributions) name no single class to count
        # Counted on the targets' own device, by index_add_ rather than bincount (which reads
        # the largest target back to size its result): no host synchronisation per batch.
        targets = event.targets.flatten()
        if self._trained is None:
            self._trained = torch.zeros(self.context.num_classes, dtype=torch.int64, device=targets.device)
        self._trained.index_add_(0, targets, torch.ones_like(targets, dtype=torch.int64))

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        context = self.context
        sampler = find_tracking_sampler(context.train_sampler)
        if sampler is None or context.data is None:
            if context.data is None or context.data.stream is None:  # a stream is shuffled by litdata
                self._warn_once(sampler)
            return
        draw = sampler.last_draw
        if draw is None or draw is self._last_draw:
            log.warning("sampler_tracking: the training sampler drew nothing new in epoch %d", event.epoch)
            return
        self._last_draw = draw
        trained = [0] * context.num_classes if self._trained is None else self._trained.cpu().tolist()
        entry = {
            "epoch": event.epoch,
            "drawn": class_counts(draw.indices, context.data.train_targets, context.num_classes).tolist(),
            "trained": trained,
        }
        # A resumed run may replay an epoch: what is drawn now replaces what was recorded then.
        self.history = [e for e in self.history if e["epoch"] < event.epoch] + [entry]
        if context.is_rank_zero:
            self._report(sampler, context.data.train_targets, event.global_step)

    def _report(self, sampler: TrackingWeightedRandomSampler, targets: list[int], step: int) -> None:
        context = self.context
        names = context.class_names
        images = torch.bincount(torch.tensor(targets), minlength=len(names)).tolist()
        expected = sampler.expected_shares(targets, len(names)).tolist()
        latest = self.history[-1]
        if self._should_print(expected, latest["drawn"]):
            self._print(sampler, targets, images, expected, latest)
        history = [
            {"epoch": e["epoch"], "drawn": list(e["drawn"]), "trained": list(e["trained"])}
            for e in self.history
        ]
        job = functools.partial(write_history, context.run_dir, names, history, expected)
        context.submit(SPEC.name, job, step=step)

    def _should_print(self, expected: list[float], drawn: list[int]) -> bool:
        verbosity = self.context.verbosity
        if verbosity != "normal":
            return verbosity == "verbose"
        if not self._printed:
            return True
        total = max(sum(drawn), 1)
        return max(abs(n / total - share) for n, share in zip(drawn, expected, strict=True)) > (
            self.settings.drift_threshold
        )

    def _print(
        self,
        sampler: TrackingWeightedRandomSampler,
        targets: list[int],
        images: list[int],
        expected: list[float],
        latest: dict[str, Any],
    ) -> None:
        context = self.context
        names = context.class_names
        self._printed = True
        rows, note = table_rows(
            names, images, expected, latest["drawn"], latest["trained"], self.settings.max_table_rows
        )
        replacement = "with" if sampler.replacement else "without"
        caption = f"{sum(latest['drawn'])} draws from {len(targets)} images, {replacement} replacement"
        if context.world_size > 1:
            caption += f"; trained: rank 0's share of {context.world_size} ranks"
        print_table(
            f"Sampler draws, epoch {latest['epoch']}",
            ["class", "images", "data share", "expected", "drawn", "drawn share", "trained"],
            rows,
            caption=caption + (f"; {note}" if note else ""),
        )

    def _warn_once(self, sampler: TrackingWeightedRandomSampler | None) -> None:
        if self._warned:
            return
        self._warned = True
        if sampler is None:
            log.warning(
                "sampler_tracking: the training sampler is %s, not a TrackingWeightedRandomSampler "
                "(harness.training.sampler.make_sampler builds one); nothing to report",
                type(self.context.train_sampler).__name__,
            )
        else:
            log.warning("sampler_tracking: RunContext.data is not set; cannot count draws per class")


SPEC = SubscriberSpec(name="sampler_tracking", build=SamplerTracking, settings=SamplerTrackingSettings)
