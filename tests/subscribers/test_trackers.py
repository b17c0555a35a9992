"""The tracker subscriber: settings as parameters, each changed picture once, the summary at the end."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

import attrs

from harness.core.bus import Bus
from harness.core.context import Job, Record
from harness.core.events import EpochJobsQueued, RunEnd
from harness.core.testing import make_context, scripted_run
from harness.core.tracking import Param
from harness.io.artifacts import write_bytes, write_text
from subscribers.confusion_matrix import ConfusionMatrix
from subscribers.plots import Plots
from subscribers.trackers import TrackerFiles, flatten


@attrs.define
class Logged:
    """A `harness.core.tracking.Trackers` that keeps what it was given."""

    images: list[tuple[str, str, int]] = attrs.Factory(list)
    params: dict[str, Param] = attrs.Factory(dict)
    artifacts: list[str] = attrs.Factory(list)

    def log_image(self, name: str, path: Path, step: int) -> None:
        assert path.is_file()
        self.images.append((name, path.name, step))

    def log_params(self, params: Mapping[str, Param]) -> None:
        self.params.update(params)

    def log_artifact(self, path: Path) -> None:
        self.artifacts.append(path.name)


def test_pictures_settings_and_summary_reach_the_trackers(tmp_path: Path) -> None:
    logged = Logged()
    context = attrs.evolve(make_context(tmp_path), trackers=logged)
    write_text(context.run_dir / "settings.toml", '[model]\nlr = 0.05\n[run]\nplugins = ["a:B"]\n')
    bus = Bus()
    bus.attach(ConfusionMatrix(context))
    bus.attach(Plots(context))
    bus.attach(TrackerFiles(context))
    scripted_run(bus, context, epochs=2, train_batches=2)
    (context.run_dir / "summary.json").write_text(json.dumps({"status": "completed"}))
    bus.publish(RunEnd(epoch=1, global_step=context.global_step, status="completed"))

    assert logged.params == {"model.lr": 0.05, "run.plugins": '["a:B"]'}
    assert logged.artifacts == ["settings.toml", "summary.json"]
    names = [name for name, _, _ in logged.images]
    # Each epoch redraws the current pictures: each is logged once per epoch, at its last step.
    assert names.count("confusion_matrix/latest") == 2
    assert names.count("plots/losses") == 2
    assert ("confusion_matrix/latest", "epoch_001.png", 4) in logged.images
    assert not any("epoch_" in name for name in names), "per-epoch copies are the same pictures"


@attrs.define
class Contents(Logged):
    """Keeps what each logged picture held when it was logged."""

    seen: list[tuple[str, bytes, int]] = attrs.Factory(list)

    def log_image(self, name: str, path: Path, step: int) -> None:
        self.seen.append((name, path.read_bytes(), step))


@attrs.define
class LateReplies:
    """A `JobRunner` whose jobs run at once but whose records arrive only on `deliver`.

    As the background writer's reply thread can: a job found ``latest.png``, and the next
    epoch redrew it before the record logged it.
    """

    records: list[tuple[Callable[..., None], str, Path]] = attrs.Factory(list)

    def submit(self, owner: str, job: Job, *, record: Record, step: int = -1) -> None:
        job(lambda name, path: self.records.append((record, name, path)))

    def deliver(self) -> None:
        for record, name, path in self.records:
            record(name, path)
        self.records.clear()


def test_a_late_record_logs_the_epoch_it_was_found_in(tmp_path: Path) -> None:
    contents = Contents()
    runner = LateReplies()
    context = attrs.evolve(make_context(tmp_path, background=runner), trackers=contents)
    bus = Bus()
    bus.attach(TrackerFiles(context))
    matrices = context.run_dir / "confusion_matrix"
    for epoch, step in ((0, 4), (1, 8)):
        picture = f"matrix of epoch {epoch}".encode()
        write_bytes(matrices / f"epoch_{epoch:03d}.png", picture)
        write_bytes(matrices / "latest.png", picture)
        bus.publish(EpochJobsQueued(epoch=epoch, global_step=step))
    runner.deliver()
    bus.publish(RunEnd(epoch=1, global_step=8, status="completed"))

    assert contents.seen == [
        ("confusion_matrix/latest", b"matrix of epoch 0", 4),
        ("confusion_matrix/latest", b"matrix of epoch 1", 8),
    ], "each step shows its own epoch's picture, once, and the last step the latest"


def test_without_trackers_it_does_nothing(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    bus = Bus()
    bus.attach(Plots(context))
    subscriber = bus.attach(TrackerFiles(context))
    scripted_run(bus, context, epochs=1)
    bus.publish(RunEnd(epoch=0, global_step=context.global_step, status="completed"))
    assert subscriber.logged == {}


def test_settings_flatten_to_dotted_keys() -> None:
    tree = {"a": {"b": 1, "c": {"d": True}}, "e": [1, 2], "f": "x"}
    assert flatten(tree) == {"a.b": 1, "a.c.d": True, "e": "[1, 2]", "f": "x"}
