"""Sweeps: the search space, the pruning reporter, the leaderboard, and real tiny sweeps."""

from __future__ import annotations

import csv
import gc
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harness.core.bus import Bus
from harness.core.errors import SettingsError, TrialPruned
from harness.core.events import ValidationEpochEnd
from harness.settings import Settings, load_settings, settings_to_toml
from harness.sweep import main
from harness.training.fit import run
from harness.tuning.leaderboard import TrialRow, rank
from harness.tuning.pruning import TrialReporter
from harness.tuning.space import load_space

MakeSettings = Callable[..., Settings]


class FakeTrial:
    """Optuna's trial as the reporter sees it: reports kept, pruned from `prune_at` on."""

    number = 7

    def __init__(self, prune_at: int | None) -> None:
        self.prune_at = prune_at
        self.reports: list[tuple[float, int]] = []

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.prune_at is not None and self.reports[-1][1] >= self.prune_at


def test_the_reporter_reports_each_validation_epoch_and_prunes_through_the_bus() -> None:
    trial = FakeTrial(prune_at=1)
    bus = Bus()
    bus.attach(TrialReporter(trial, "val/acc_top1"))
    bus.publish(ValidationEpochEnd(epoch=0, global_step=0, metrics={"val/acc_top1": 0.1}, sanity_check=True))
    bus.publish(ValidationEpochEnd(epoch=0, global_step=5, metrics={"val/acc_top1": 0.4}))
    with pytest.raises(TrialPruned, match="trial 7 pruned at epoch 1"):
        bus.publish(ValidationEpochEnd(epoch=1, global_step=10, metrics={"val/acc_top1": 0.3}))
    assert trial.reports == [(0.4, 0), (0.3, 1)]
    assert bus.failures == []  # a pruned trial is not a failed subscriber


def test_the_reporter_never_prunes_at_the_runs_last_epoch() -> None:
    trial = FakeTrial(prune_at=1)
    bus = Bus()
    bus.attach(TrialReporter(trial, "val/acc_top1", last_epoch=2))
    for epoch in (0, 2):  # the last epoch is reported, and the run goes on to complete
        bus.publish(ValidationEpochEnd(epoch=epoch, global_step=epoch, metrics={"val/acc_top1": 0.4}))
    assert trial.reports == [(0.4, 0), (0.4, 2)]
    with pytest.raises(TrialPruned, match="pruned at epoch 1"):
        bus.publish(ValidationEpochEnd(epoch=1, global_step=1, metrics={"val/acc_top1": 0.4}))


def test_a_space_is_checked_against_the_settings(tmp_path: Path) -> None:
    space = tmp_path / "space.toml"
    space.write_text('"model.lr" = {log_uniform = [1e-4, 1e-2]}\n"augment.hflip" = {choice = [0, 0.5]}\n')
    assert load_space(space, None, []).keys == ("model.lr", "augment.hflip")
    for text, message in [
        ('"model.lrr" = {uniform = [0.1, 0.2]}', "'model.lrr'.*did you mean 'lr'"),
        ('"augment.hflip" = {choice = [0, 1.5]}', "'augment.hflip' = 1.5.*hflip must be"),
        ('"model.lr" = {log_uniform = [0, 1]}', "needs low > 0"),
        ('"model.lr" = {normal = [0, 1]}', "unknown distribution 'normal'"),
    ]:
        space.write_text(text + "\n")
        with pytest.raises(SettingsError, match=message):
            load_space(space, None, [])
    space.write_text('"model.lr" = {uniform = [0.1, 0.2]}\n')
    with pytest.raises(SettingsError, match=r"also fixed by --set model\.lr=0\.1"):
        load_space(space, None, ["model.lr=0.1"])


def test_the_leaderboard_ranks_completed_then_pruned_then_the_rest() -> None:
    def row(number: int, status: str, value: float | None) -> TrialRow:
        return TrialRow(number=number, status=status, value=value, params={}, run_dir=None)

    rows = [
        row(0, "diverged", None),
        row(1, "completed", 0.5),
        row(2, "pruned", 0.9),
        row(3, "completed", 0.8),
    ]
    assert [r.number for r in rank(rows, "max")] == [3, 1, 2, 0]
    assert [r.number for r in rank(rows, "min")] == [1, 3, 2, 0]


def test_a_misspelt_key_in_the_space_is_exit_2_before_any_trial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    space = tmp_path / "space.toml"
    space.write_text('"model.lr" = {log_uniform = [1e-4, 1e-2]}\n"augment.hflipp" = {choice = [0, 0.5]}\n')
    runs = tmp_path / "runs"
    code = main(["--space", str(space), "--trials", "3", "--set", f"run.output_dir={str(runs)!r}"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "'augment.hflipp'" in err and str(space) in err
    assert not runs.exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_pruned_run_says_pruned_in_its_summary(make_settings: MakeSettings) -> None:
    # With loader workers: they outlive the pruned fit and once kept the background writer's close waiting.
    settings = make_settings(
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "data.num_workers=2",
    )
    trial = FakeTrial(prune_at=1)
    with pytest.raises(TrialPruned) as pruned:
        run(settings, extra_subscribers={"sweep_trial": TrialReporter(trial, "val/acc_top1")})
    # The traceback holds the loaders, whose workers ignore SIGTERM: freed here, they are shut down
    # (left to the interpreter's exit, multiprocessing's terminate-then-join would wait for ever).
    del pruned
    gc.collect()
    [summary_file] = Path(settings.run.output_dir).rglob("summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "pruned" and summary["epochs_completed"] == 1
    assert summary["failures"] == [] and "pruned at epoch 1" in summary["error"]


@pytest.mark.slow
def test_a_sweep_with_a_diverging_rate_ranks_the_others_and_resumes_after_a_stop(
    make_settings: MakeSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    settings_file = tmp_path / "settings.toml"
    settings_file.write_text(
        settings_to_toml(
            make_settings(
                "trainer.max_epochs=2",
                "trainer.limit_train_batches=2",
                "trainer.limit_val_batches=1",
                "trainer.num_sanity_val_steps=0",
                "data.num_workers=0",
                "model.optimizer='sgd'",
            )
        )
    )
    space = tmp_path / "space.toml"
    space.write_text('"model.lr" = {choice = [0.001, 1e6, 0.01]}\n')
    sweep = tmp_path / "sweep"
    args = [
        str(settings_file),
        "--space",
        str(space),
        "--sampler",
        "grid",
        "--dir",
        str(sweep),
        "--jobs",
        "2",
    ]

    assert main([*args, "--trials", "3"]) == 0

    with (sweep / "leaderboard.csv").open() as file:
        first = list(csv.DictReader(file))
    assert [r["status"] for r in first] == ["completed", "completed", "diverged"]
    assert first[2]["model.lr"] == "1000000.0"
    assert float(first[0]["val/acc_top1"]) >= float(first[1]["val/acc_top1"])
    best = load_settings(sweep / "best.toml")
    assert best.model.lr == float(first[0]["model.lr"]) and best.run.output_dir == str(tmp_path / "runs")
    page = (sweep / "leaderboard.html").read_text()
    assert all(f'href="{r["run_dir"]}/report.html"' in page for r in first)
    assert (sweep / "leaderboard" / "model.lr.png").is_file()
    for r in first:
        assert json.loads((sweep / r["run_dir"] / "summary.json").read_text())["status"] == r["status"]

    # What a sweep stopped mid-trial leaves: a trial still "running" in the study.
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep / 'study.db'}")
    study.enqueue_trial({"model.lr": 0.001})
    left = study.ask()
    assert main([*args, "--trials", "4"]) == 0

    with (sweep / "leaderboard.csv").open() as file:
        second = {r["trial"]: r for r in csv.DictReader(file)}
    for r in first:  # the finished trials are kept as they were (their rank moves with the new ones)
        assert {k: second[r["trial"]][k] for k in r if k != "rank"} == {k: r[k] for k in r if k != "rank"}
    assert second[str(left.number)]["status"] == "interrupted"
    again = second[str(left.number + 1)]
    # Asked again with the same parameters, and run to an end of its own.
    assert again["model.lr"] == "0.001" and again["status"] in {"completed", "diverged", "pruned"}
    assert json.loads((sweep / again["run_dir"] / "summary.json").read_text())["status"] == again["status"]
    assert len(second) == 5


def test_a_folder_holding_a_study_of_another_space_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    study = optuna.create_study(study_name="sweep", storage=f"sqlite:///{sweep / 'study.db'}")
    study.set_user_attr("space", {"model.lr": {"uniform": [0.1, 0.2]}})
    study.set_user_attr("monitor", "val/acc_top1")
    space = tmp_path / "space.toml"
    space.write_text('"model.lr" = {log_uniform = [1e-4, 1e-2]}\n')

    assert main(["--space", str(space), "--trials", "1", "--dir", str(sweep)]) == 2
    assert "was made for another space or monitor" in capsys.readouterr().err
    assert sorted(p.name for p in sweep.iterdir()) == [".lock", "study.db"]
