"""Trackers through Lightning's loggers, read back with the trackers' own readers."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.core.errors import SettingsError, report
from harness.io.report_page import find_pictures
from harness.settings import LoggerSettings, Settings
from harness.training import loggers
from harness.training.fit import run

MakeSettings = Callable[..., Settings]

PICTURES = ("confusion_matrix", "samples", "plots", "trackers")


def history(run_dir: Path) -> list[dict[str, str]]:
    return list(csv.DictReader((run_dir / "plots" / "history.csv").open()))


@pytest.mark.slow
def test_tensorboard_scalars_match_the_history_and_its_images_hold_the_latest_matrix(
    make_settings: MakeSettings,
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    settings = make_settings(*PICTURES, "trainer.max_epochs=2", 'logger.kinds=["csv", "tensorboard"]')
    result = run(settings)
    run_dir = result.run_dir
    assert result.summary.status == "completed" and result.summary.failures == ()
    assert (run_dir / "logs" / "version_0" / "metrics.csv").is_file(), "csv goes on beside tensorboard"

    events = EventAccumulator(str(run_dir / "tensorboard" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    rows = history(run_dir)
    assert len(rows) == 2
    # TensorBoard has Lightning's names; the history, the events' stable ones.
    for name, ours in (("val/acc_top1", "val/acc_top1"), ("val/loss", "val/loss"), ("lr-AdamW", "lr")):
        logged = [scalar.value for scalar in events.Scalars(name)]
        assert logged == pytest.approx([float(row[ours]) for row in rows], rel=1e-6), name
    losses = [scalar.value for scalar in events.Scalars("train/loss_epoch")]
    assert losses == pytest.approx([float(row["train/loss"]) for row in rows], rel=1e-6)

    tags = events.Tags()["images"]
    assert {"confusion_matrix/latest", "samples/latest", "plots/losses", "plots/accuracy"} <= set(tags)
    matrices = events.Images("confusion_matrix/latest")
    assert [image.step for image in matrices] == [
        result.summary.global_step // 2,
        result.summary.global_step,
    ]
    last = np.asarray(Image.open(io.BytesIO(matrices[-1].encoded_image_string)).convert("RGB"))
    on_disk = np.asarray(Image.open(run_dir / "confusion_matrix" / "latest.png").convert("RGB"))
    assert np.array_equal(last, on_disk), "the last matrix logged is the latest one drawn"
    assert "summary.json/text_summary" in events.Tags()["tensors"]
    assert result.summary.artifacts["tensorboard"] == "tensorboard/version_0"


@pytest.mark.slow
def test_a_plugins_picture_reaches_the_report_and_tensorboard_at_the_epoch_it_was_drawn(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plugins attach after the built-ins (the trackers and the report among them): order-free."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.syspath_prepend(str(Path(__file__).parents[2] / "plugins"))
    settings = make_settings(
        "confusion_matrix",
        "trackers",
        "report",
        "trainer.max_epochs=2",
        'logger.kinds=["csv", "tensorboard"]',
        "run.plugins=['late_pictures:SPEC', 'late_pictures:FIRST_PAGE']",
    )
    result = run(settings)
    assert result.summary.status == "completed" and result.summary.failures == ()

    page = (result.run_dir / "report_after_epoch_0.html").read_text()
    assert "late_pictures/epoch_000.png" in page, "the plugin's picture of epoch 0 in that epoch's page"
    assert "confusion_matrix/latest.png" in page
    events = EventAccumulator(str(result.run_dir / "tensorboard" / "version_0"), size_guidance={"images": 0})
    events.Reload()
    matrix_steps = [image.step for image in events.Images("confusion_matrix/latest")]
    plugin_steps = [image.step for image in events.Images("late_pictures/latest")]
    assert plugin_steps == matrix_steps == [result.summary.global_step // 2, result.summary.global_step]


@pytest.mark.slow
def test_mlflow_holds_the_metrics_parameters_pictures_and_summary(make_settings: MakeSettings) -> None:
    from mlflow.tracking import MlflowClient

    settings = make_settings(*PICTURES, "trainer.max_epochs=2", 'logger.kinds=["mlflow"]')
    result = run(settings)
    run_dir = result.run_dir
    assert result.summary.failures == ()
    assert not (run_dir / "logs").exists(), "only the kinds asked for"

    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("digits")
    assert experiment is not None
    (found,) = client.search_runs([experiment.experiment_id])
    run_id = found.info.run_id
    rows = history(run_dir)
    top1 = [metric.value for metric in client.get_metric_history(run_id, "val/acc_top1")]
    assert top1 == pytest.approx([float(row["val/acc_top1"]) for row in rows], rel=1e-6)
    assert found.data.params["model.lr"] == "0.001"
    assert found.data.params["trainer.max_epochs"] == "2"
    artifacts = {artifact.path for artifact in client.list_artifacts(run_id)}
    assert {"summary.json", "settings.toml", "images"} <= artifacts
    images = [artifact.path for artifact in client.list_artifacts(run_id, "images")]
    assert any(path.startswith("images/confusion_matrix~latest+step+") for path in images)
    shown = {path.relative_to(run_dir).parts[0] for path in find_pictures(run_dir)}
    assert "mlflow" not in shown, "MLflow's copies are not the run's pictures (nor logged again)"


def test_a_missing_extra_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(loggers._EXTRAS, "tensorboard", "no_such_package_for_harness_tests")
    with pytest.raises(SettingsError) as raised:
        loggers.build_loggers(LoggerSettings(kinds=("csv", "tensorboard")), tmp_path, "digits")
    assert 'pip install -e ".[tensorboard]"' in str(raised.value)
    assert report(raised.value) == 2
    assert not (tmp_path / "logs").exists(), "nothing is made before every kind is available"
