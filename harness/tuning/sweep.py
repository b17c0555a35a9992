"""A sweep on Optuna: each trial a normal run directory, pruned from its own events, resumable.

`run_sweep` asks the study for each trial in this process (so ``--trials N`` is exact and
the sampler sees every trial), loads and validates the trial's settings (the sweep's
``--set`` values, then the trial's parameters, then its place: ``run.output_dir`` is the
sweep's folder and ``run.name`` is ``trial_<NNN>``), and runs it in a fresh worker process,
``jobs`` at a time. The worker attaches a `TrialReporter` to the run (the run's normal
``extra_subscribers``), which reports the monitored metric at every validation epoch;
Optuna's pruner stops a trial that lags (its summary says "pruned"). The outcome goes back
to the study (`study.tell`), and the leaderboard is written again after every trial.

The study lives in ``study.db`` (SQLite) in the sweep's folder unless a storage URL (any
RDB URL Optuna takes, e.g. ``postgresql://...``) is given, in which case several machines
can run the same command on one study: the distributed engine is Optuna's. With the local
file the folder is locked; a sweep started again resumes: finished trials are kept, and a
trial that was running when the sweep was stopped is marked "interrupted" (failed, for
Optuna) and asked again with the same parameters.
"""

from __future__ import annotations

import concurrent.futures
import gc
import itertools
import logging
import math
import multiprocessing
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import attrs
import optuna
from optuna.trial import FrozenTrial, TrialState

from harness.core.errors import HarnessError, SettingsError, TrainingDiverged, TrialPruned
from harness.io.lock import RunLock
from harness.settings import load_settings
from harness.tuning.leaderboard import TrialRow, write_leaderboard
from harness.tuning.pruning import TrialReporter
from harness.tuning.space import Space, Value, override

__all__ = ["SweepPlan", "TrialOutcome", "run_sweep", "trial_rows"]

log = logging.getLogger("harness")

STUDY_FILE = "study.db"
_COUNTED = ("completed", "pruned", "diverged", "failed", "invalid")
"""Trial statuses that count towards ``--trials`` (an interrupted trial is asked again)."""


@attrs.frozen(kw_only=True)
class SweepPlan:
    """Everything a sweep needs, as the command line gave it; picklable, for the workers."""

    settings: Path | None
    overrides: tuple[str, ...]
    space: Space
    trials: int
    folder: Path
    jobs: int = 1
    storage: str | None = None
    """An RDB URL; None: ``study.db`` in `folder`."""
    study_name: str = "sweep"
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    monitor: str = "val/acc_top1"
    mode: Literal["max", "min"] = "max"
    seed: int = 0

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.folder / STUDY_FILE).resolve()}"

    def storage_object(self) -> optuna.storages.BaseStorage:
        """The study's storage; its public API finds a trial's id from its number (`_live_trial`)."""
        return optuna.storages.get_storage(self.storage_url)

    def pruner_object(self) -> optuna.pruners.BasePruner:
        """The median rule from the fourth trial on, from a trial's second epoch on, never at its last."""
        if self.pruner == "none":
            return optuna.pruners.NopPruner()
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)

    def sampler_object(self) -> optuna.samplers.BaseSampler:
        """TPE or random; "grid" enqueues every combination of the choices (`_open_study`), then random."""
        if self.sampler in ("random", "grid"):
            return optuna.samplers.RandomSampler(seed=self.seed)
        return optuna.samplers.TPESampler(seed=self.seed, constant_liar=True)


@attrs.frozen(kw_only=True)
class TrialOutcome:
    """How one trial ended, as its worker saw it."""

    number: int
    status: str
    value: float | None
    run_dir: str | None
    duration_s: float
    error: str | None = None


def _trial_overrides(plan: SweepPlan, number: int, params: dict[str, Value]) -> list[str]:
    return [
        'run.terminal="quiet"',
        *plan.overrides,
        *(override(key, value) for key, value in params.items()),
        override("run.output_dir", str(plan.folder)),
        override("run.name", f"trial_{number:03d}"),
        'trainer.resume=""',
    ]


def _run_dir(plan: SweepPlan, number: int) -> str | None:
    versions = sorted((plan.folder / f"trial_{number:03d}").glob("version_*"))
    return str(versions[-1].relative_to(plan.folder)) if versions else None


def _live_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, number: int) -> optuna.Trial:
    """Trial `number` of `study`, still running, to report to (Optuna keeps ``Trial._trial_id`` private)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def _run_trial(plan: SweepPlan, number: int, overrides: Sequence[str]) -> TrialOutcome:
    """A worker process: one trial's run, its metric reported to the study for pruning."""
    from harness.training.fit import run  # the Lightning side, in the worker only
    from harness.training.terminal import quiet_libraries

    started = time.monotonic()
    settings = load_settings(plan.settings, overrides)
    quiet_libraries(settings.run.terminal)
    storage = plan.storage_object()
    study = optuna.load_study(study_name=plan.study_name, storage=storage, pruner=plan.pruner_object())
    last_epoch = settings.trainer.max_epochs - 1
    reporter = TrialReporter(_live_trial(study, storage, number), plan.monitor, last_epoch=last_epoch)
    status, value, error = "failed", None, None
    try:
        result = run(settings, extra_subscribers={"sweep_trial": reporter})
        status, value = result.summary.status, result.summary.best_score
    except TrialPruned as pruned:
        status, error = "pruned", str(pruned)
        value = reporter.reported[-1][1] if reporter.reported else None
    except TrainingDiverged as diverged:
        status, error = "diverged", str(diverged)
    except HarnessError as failure:
        error = f"{type(failure).__name__}: {failure}"
    except Exception as failure:  # noqa: BLE001 - a trial's crash is its outcome, not the sweep's
        error = "".join(traceback.format_exception_only(failure)).strip()
    # A run that raised leaves its loaders in reference cycles of the traceback's frames; their
    # workers ignore SIGTERM, so at this process's exit multiprocessing's terminate-then-join
    # would wait for them for ever. Collected here, the loaders shut their workers down.
    gc.collect()
    return TrialOutcome(
        number=number,
        status=status,
        value=None if value is None else float(value),
        run_dir=_run_dir(plan, number),
        duration_s=round(time.monotonic() - started, 2),
        error=error,
    )


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    """Every trial of `study` as the leaderboard shows it."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        attrs_ = trial.user_attrs
        status = str(attrs_.get("status", "running" if trial.state == TrialState.RUNNING else "failed"))
        value = trial.value if trial.state == TrialState.COMPLETE else attrs_.get("value")
        rows.append(
            TrialRow(
                number=trial.number,
                status=status,
                value=None if value is None else float(value),
                params=dict(trial.params),
                run_dir=attrs_.get("run_dir"),
                duration_s=attrs_.get("duration_s"),
                error=attrs_.get("error"),
            )
        )
    return rows


def _tell(study: optuna.Study, trial: optuna.Trial, outcome: TrialOutcome) -> None:
    for key in ("status", "value", "run_dir", "duration_s", "error"):
        trial.set_user_attr(key, getattr(outcome, key))
    if outcome.status == "completed" and outcome.value is not None and math.isfinite(outcome.value):
        study.tell(trial, outcome.value)
    elif outcome.status == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


def _counted(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get("status") in _COUNTED


def _open_study(plan: SweepPlan, storage: optuna.storages.BaseStorage) -> optuna.Study:
    study = optuna.create_study(
        study_name=plan.study_name,
        storage=storage,
        direction="maximize" if plan.mode == "max" else "minimize",
        sampler=plan.sampler_object(),
        pruner=plan.pruner_object(),
        load_if_exists=True,
    )
    described = {"space": plan.space.describe(), "monitor": plan.monitor}
    kept = {key: study.user_attrs.get(key) for key in described}
    if all(value is None for value in kept.values()):
        for key, value in described.items():
            study.set_user_attr(key, value)
        if plan.sampler == "grid":
            # Optuna's GridSampler calls study.stop() once the grid is done, which only works in optimize().
            keys = plan.space.keys
            for values in itertools.product(*(d.values for d in plan.space.dimensions)):
                study.enqueue_trial(dict(zip(keys, values, strict=True)))
    elif kept != described:
        raise SettingsError(
            f"{plan.storage_url}: study {plan.study_name!r} was made for another space or monitor "
            f"({kept}); give the sweep another folder (--dir) or --study-name"
        )
    return study


def _recover(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """Mark the trials a stopped sweep left running as interrupted and ask them again; their count."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        _live_trial(study, storage, trial.number).set_user_attr("status", "interrupted")
        study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        # A trial stopped before its parameters were suggested holds them only as Optuna's fixed ones.
        asked = {**trial.system_attrs.get("fixed_params", {}), **trial.params}
        study.enqueue_trial(asked, skip_if_exists=False)
    return len(stale)


Progress = Callable[[TrialOutcome, int, int], None]


def run_sweep(plan: SweepPlan, progress: Progress | None = None) -> list[TrialRow]:
    """Run the sweep the module describes until `plan.trials` trials are done; the rows ranked."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    lock = RunLock(plan.folder) if plan.storage is None else None
    if lock is not None:
        lock.acquire()
    try:
        storage = plan.storage_object()
        study = _open_study(plan, storage)
        if lock is not None and (stale := _recover(study, storage)):
            log.warning("resuming: %d trial(s) interrupted earlier will run again", stale)
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(
            plan.jobs, mp_context=context, max_tasks_per_child=1
        ) as pool:
            running: dict[concurrent.futures.Future[TrialOutcome], optuna.Trial] = {}
            while True:
                done = sum(1 for t in study.get_trials(deepcopy=False) if _counted(t))
                while len(running) < plan.jobs and done + len(running) < plan.trials:
                    trial = study.ask()
                    params = {d.key: d.suggest(trial) for d in plan.space.dimensions}
                    overrides = _trial_overrides(plan, trial.number, params)
                    try:
                        load_settings(plan.settings, overrides)
                    except SettingsError as error:
                        outcome = TrialOutcome(
                            number=trial.number,
                            status="invalid",
                            value=None,
                            run_dir=None,
                            duration_s=0.0,
                            error=str(error),
                        )
                        _tell(study, trial, outcome)
                        done += 1
                        continue
                    running[pool.submit(_run_trial, plan, trial.number, overrides)] = trial
                if not running:
                    break
                finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    trial = running.pop(future)
                    try:
                        outcome = future.result()
                    except Exception as crash:  # noqa: BLE001 - a dead worker fails its trial, not the sweep
                        outcome = TrialOutcome(
                            number=trial.number,
                            status="failed",
                            value=None,
                            run_dir=_run_dir(plan, trial.number),
                            duration_s=0.0,
                            error=f"the trial's process died: {type(crash).__name__}: {crash}",
                        )
                    _tell(study, trial, outcome)
                    if progress is not None:
                        progress(
                            outcome,
                            sum(1 for t in study.get_trials(deepcopy=False) if _counted(t)),
                            plan.trials,
                        )
                    _write(plan, study)
        return _write(plan, study)
    finally:
        if lock is not None:
            lock.release()


def _write(plan: SweepPlan, study: optuna.Study) -> list[TrialRow]:
    base = load_settings(plan.settings, plan.overrides)
    return write_leaderboard(
        plan.folder, trial_rows(study), space=plan.space, monitor=plan.monitor, mode=plan.mode, run=base.run
    )
