"""A whole training run: assemble, trainer, fit, finish.

`run` assembles the run (data, model, run directory, and the context, bus and
subscribers of `harness.training.assembly`), builds Lightning's Trainer with
`BusCallback`, fits, and finishes: the background writer's last jobs, the run's record
(`harness.core.summary.RunSummary`, written to ``summary.json`` here and nowhere else),
then `RunEnd`. The run directory is ``<output_dir>/<name>/version_<n>/``
(`harness.core.layout.RunLayout` names what it holds).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping, LearningRateMonitor
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import Sampler

from harness.core.bus import Subscriber
from harness.core.context import DatasetInfo, RunContext
from harness.core.errors import StopRun, Terminated, TrainingDiverged
from harness.core.events import RunEnd
from harness.core.layout import RunLayout
from harness.core.preprocessing import Preprocessing
from harness.core.summary import Acceleration, Attempt, Failure, RunStatus, RunSummary, TestScore
from harness.io.artifacts import write_json, write_label_map, write_text
from harness.io.background import BackgroundWriter
from harness.io.lock import RunLock
from harness.settings import Settings, resolve_specs, settings_to_toml
from harness.training.acceleration import check_decode, resolve_acceleration
from harness.training.assembly import Assembly, assemble
from harness.training.callback import BusCallback
from harness.training.checkpoint_io import AtomicCheckpointIO, remove_stale_temporaries
from harness.training.data import ImageDataModule, run_preprocessing
from harness.training.evaluation import evaluate_test_split
from harness.training.lean_checkpoint import LeanModelCheckpoint
from harness.training.loggers import LoggerTrackers, build_loggers, logger_artifacts, require_packages
from harness.training.model import Classifier, check_batch_norm, check_monitor
from harness.training.nodes import from_rank_zero, join, launch_of, scan_once
from harness.training.recipe import Recipe, class_loss_weights, resolve_recipe
from harness.training.run_dir import (
    RESUME_VARIABLE,
    RUN_DIR_VARIABLE,
    abandon,
    check_resume,
    keep_attempt,
    resolve_run_dir,
)
from harness.training.sampler import make_sampler
from harness.training.stop_signal import (
    LAUNCHER_VARIABLE,
    StopOnSigterm,
    outlive_launcher,
    requeue_slurm_job,
)
from harness.training.terminal import MetricFreeProgressBar

__all__ = ["RunResult", "TrainingData", "run", "training_data"]

log = logging.getLogger("harness")


@attrs.frozen(kw_only=True)
class RunResult:
    """What a finished run left: its directory and its record (what ``summary.json`` holds)."""

    run_dir: Path
    summary: RunSummary


@attrs.define(kw_only=True, eq=False)
class _Run:
    """What a run holds from its assembly to its finish."""

    settings: Settings
    layout: RunLayout
    resume_from: Path | None
    joined: bool
    """A process of rank > 0 that joined the run directory rank zero made (``ddp``)."""
    lock: RunLock
    data: DatasetInfo
    writer: BackgroundWriter
    module: Classifier
    acceleration: Acceleration
    datamodule: ImageDataModule
    loggers: list[Logger]
    trackers: LoggerTrackers | None
    assembly: Assembly
    callback: BusCallback
    attempts: list[Attempt]
    started: float
    recipe: Recipe


@attrs.define(kw_only=True)
class _Outcome:
    """How the fit ended, filled as it goes."""

    status: RunStatus = "failed"
    error: str | None = None
    tested: TestScore | None = None


def _lightning_callbacks(settings: Settings, run_dir: Path) -> list[Callback]:
    callbacks: list[Callback] = [LearningRateMonitor(logging_interval="epoch")]
    ckpt = settings.checkpoint
    if ckpt.enabled:
        callbacks.append(
            LeanModelCheckpoint(
                dirpath=RunLayout(run_dir).checkpoints,
                filename="epoch={epoch:03d}-score={" + ckpt.monitor + ":.4f}",
                auto_insert_metric_name=False,
                monitor=ckpt.monitor,
                mode=ckpt.mode,
                save_top_k=ckpt.save_top_k,
                save_last=ckpt.save_last,
                # A moved or resumed run directory must not grow `last-v1.ckpt` beside `last.ckpt`.
                enable_version_counter=False,
            )
        )
    if settings.early_stopping.enabled:
        stop = settings.early_stopping
        callbacks.append(
            EarlyStopping(
                monitor=ckpt.monitor, mode=ckpt.mode, patience=stop.patience, min_delta=stop.min_delta
            )
        )
    if settings.trainer.progress_bar and settings.run.terminal != "quiet":
        callbacks.append(MetricFreeProgressBar())
    return callbacks


def _fraction(limit: float) -> float | None:
    """Lightning reads 1.0 as "all" but says so on every run; None means the same, quietly."""
    return None if isinstance(limit, float) and limit == 1.0 else limit


def run(settings: Settings, *, extra_subscribers: Mapping[str, Subscriber] | None = None) -> RunResult:
    """Train as `settings` say and return the run directory with its record.

    `extra_subscribers` (key -> subscriber) are attached after the built-in ones and the
    plugins, with the "raise" policy; tests and notebooks use it to observe a real run.
    """
    parts = _assemble(settings, extra_subscribers or {})
    trainer = _trainer(parts)
    outcome = _Outcome()
    try:
        _fit(trainer, parts, outcome)
    finally:
        summary = _finish(trainer, parts, outcome)
    return RunResult(run_dir=parts.layout.run_dir, summary=summary)


@attrs.frozen(kw_only=True)
class TrainingData:
    """What a run trains on: its recipe, preprocessing, sampler and data module, resolved once."""

    recipe: Recipe
    preprocessing: Preprocessing
    sampler: Sampler[int] | None
    datamodule: ImageDataModule
    class_weights: tuple[float, ...] | None


def training_data(settings: Settings, info: DatasetInfo, num_classes: int) -> TrainingData:
    """The data side of a run as `settings` and the scanned `info` ask; the range test uses it too."""
    preprocessing = run_preprocessing(settings)
    recipe, augment = resolve_recipe(settings, info, settings.run.seed)
    balanced = recipe.sampling == "balanced"
    # A streamed data set is shuffled by litdata (its loader's state rides in the checkpoint).
    streamed = info.stream is not None
    sampler = (
        None if streamed else make_sampler(info.train_targets, balanced=balanced, seed=settings.run.seed)
    )
    return TrainingData(
        recipe=recipe,
        preprocessing=preprocessing,
        sampler=sampler,
        datamodule=ImageDataModule(info, preprocessing, settings.data, sampler, augment, settings.run.seed),
        class_weights=class_loss_weights(info.train_targets, num_classes) if recipe.class_weights else None,
    )


def _assemble(settings: Settings, extras: Mapping[str, Subscriber]) -> _Run:
    """Everything the run needs, checked before the run directory is made, then the run's assembly."""
    started = time.monotonic()
    check_decode(settings.data.decode, settings.trainer.accelerator)
    L.seed_everything(settings.run.seed, workers=True, verbose=False)
    launch = launch_of(settings.trainer)
    if launch is not None:
        join(launch, settings.trainer)
    info, classes = scan_once(launch, settings.data, settings.run.seed)
    if info.skipped:
        shown = ", ".join(str(path) for path in info.skipped[:5])
        log.warning(
            "skipping %d unreadable image file(s) ([data].on_corrupt = skip): %s", len(info.skipped), shown
        )
    data = training_data(settings, info, len(classes))
    preprocessing, recipe, sampler, datamodule = (
        data.preprocessing,
        data.recipe,
        data.sampler,
        data.datamodule,
    )
    if settings.run.terminal != "quiet":
        print(recipe.describe(), flush=True)
    module = Classifier.from_settings(
        settings.model,
        num_classes=len(classes),
        image_size=settings.data.image_size,
        class_names=classes,
        preprocessing=preprocessing,
        class_weights=data.class_weights,
    )
    acceleration = resolve_acceleration(settings.trainer, settings.model, module.net)
    module.accelerate(channels_last=acceleration.channels_last, compile=acceleration.compile)
    if settings.run.terminal != "quiet":
        print(acceleration.describe(), flush=True)
    check_batch_norm(module.net, settings.data.batch_size)
    specs = resolve_specs(settings.run.plugins)
    require_packages(settings.logger)  # before the run directory is made
    check_monitor(settings.checkpoint.monitor, settings.checkpoint.mode)
    run_dir, resume_from = from_rank_zero(launch, lambda: resolve_run_dir(settings))
    lock = RunLock(run_dir)
    joined = os.environ.get(RUN_DIR_VARIABLE) == str(run_dir) or (launch is not None and not launch.is_zero)
    # A fresh run directory, or a new one for a checkpoint from outside any: removed if the run is refused.
    made_here = not joined and (
        resume_from is None or RunLayout.of_checkpoint(resume_from).run_dir != run_dir.resolve()
    )
    # On several machines the other ranks wait for rank zero's lock (and stop with its error).
    from_rank_zero(launch, lambda: None if joined else lock.acquire())
    if not joined:
        remove_stale_temporaries(RunLayout(run_dir).checkpoints)
    # Pictures are drawn in its worker process while training goes on; closed by `_finish`.
    writer = BackgroundWriter()
    loggers = build_loggers(settings.logger, run_dir, settings.run.name)
    trackers = LoggerTrackers.of(loggers)
    try:
        assembly = assemble(
            settings,
            run_dir=run_dir,
            class_names=classes,
            preprocessing=preprocessing,
            data=info,
            train_sampler=sampler,
            background=writer,
            augmented_samples=datamodule.preview,
            trackers=trackers,
            record_events=settings.run.record_events,
            specs=specs,
            extras=extras,
            recipe=recipe,
        )
    except BaseException:
        lock.release()
        if made_here:
            abandon(run_dir, Path(settings.run.output_dir).expanduser())
        raise
    attempts: list[Attempt] = []

    def check_and_keep_attempt() -> list[Attempt]:
        assert resume_from is not None
        try:
            check_resume(resume_from, run_dir, settings, classes, assembly.stateful, preprocessing)
        except BaseException:
            lock.release()
            if made_here:
                abandon(run_dir, Path(settings.run.output_dir).expanduser())
            raise
        kept: list[Attempt] = list(keep_attempt(run_dir))
        earlier = kept[-1].get("artifacts") if kept else None
        for name, path in earlier.items() if isinstance(earlier, dict) else ():
            if (run_dir / path).exists():
                assembly.context.artifacts.setdefault(name, path)
        return kept

    if resume_from is not None and (launch is not None or not joined):
        attempts = from_rank_zero(launch, check_and_keep_attempt)
    layout = RunLayout(run_dir)
    callback = BusCallback(
        assembly.bus,
        assembly.context,
        assembly.subscribers,
        interrupt_checkpoint=layout.last_checkpoint if settings.checkpoint.enabled else None,
    )
    return _Run(
        settings=settings,
        layout=layout,
        resume_from=resume_from,
        joined=joined,
        lock=lock,
        data=info,
        writer=writer,
        module=module,
        acceleration=acceleration,
        datamodule=datamodule,
        loggers=loggers,
        trackers=trackers,
        assembly=assembly,
        callback=callback,
        attempts=attempts,
        started=started,
        recipe=recipe,
    )


def _trainer(parts: _Run) -> L.Trainer:
    """Lightning's Trainer for the run; on rank zero, the run's settings and labels are written."""
    settings, layout, context = parts.settings, parts.layout, parts.assembly.context
    trainer_settings = settings.trainer
    trainer = L.Trainer(
        default_root_dir=layout.run_dir,
        max_epochs=trainer_settings.max_epochs,
        accelerator=trainer_settings.accelerator,
        devices=trainer_settings.devices,
        num_nodes=trainer_settings.num_nodes,
        strategy=trainer_settings.strategy,
        precision=parts.acceleration.precision,  # type: ignore[arg-type]
        accumulate_grad_batches=trainer_settings.accumulate_grad_batches,
        gradient_clip_val=trainer_settings.gradient_clip_val or None,
        limit_train_batches=_fraction(trainer_settings.limit_train_batches),
        limit_val_batches=_fraction(trainer_settings.limit_val_batches),
        num_sanity_val_steps=trainer_settings.num_sanity_val_steps,
        log_every_n_steps=trainer_settings.log_every_n_steps,
        enable_progress_bar=trainer_settings.progress_bar and settings.run.terminal != "quiet",
        enable_model_summary=False,
        enable_checkpointing=settings.checkpoint.enabled,
        logger=parts.loggers,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            parts.callback,
            StopOnSigterm(),
            *_lightning_callbacks(settings, layout.run_dir),
        ],
    )
    if trainer.is_global_zero:
        write_text(layout.settings, settings_to_toml(settings))
        write_label_map(layout.run_dir, context.class_names)
        # Its imports overlap the run's set-up and sanity check rather than an epoch.
        parts.writer.start()
    context.record_artifact("settings", layout.settings)
    context.record_artifact("label_map", layout.labels)
    for name, path in logger_artifacts(parts.loggers).items():
        context.record_artifact(name, path)
    return trainer


def _fit(trainer: L.Trainer, parts: _Run, outcome: _Outcome) -> None:
    """``trainer.fit``, then the test split; `outcome` says how it ended, exceptions propagate."""
    layout, context = parts.layout, parts.assembly.context
    os.environ[RUN_DIR_VARIABLE] = str(layout.run_dir)
    os.environ[RESUME_VARIABLE] = str(parts.resume_from or "")
    if not parts.joined:
        os.environ[LAUNCHER_VARIABLE] = str(os.getpid())
    try:
        trainer.fit(parts.module, datamodule=parts.datamodule, ckpt_path=parts.resume_from, weights_only=True)
        outcome.status = "interrupted" if trainer.interrupted else "completed"
        if outcome.status == "completed" and context.stop_request is not None:
            outcome.status = "stopped"  # a subscriber's request: the run is whole as it stands
        if outcome.status in ("completed", "stopped") and trainer.is_global_zero:
            # A held-out test/ folder beside train/ is scored once, with the exported best weights.
            outcome.tested = evaluate_test_split(layout.run_dir, parts.data, context.best_checkpoint)
    except SIGTERMException:
        outcome.status = "interrupted"
        if parts.joined:
            outlive_launcher()
        where = layout.last_checkpoint
        kept = (
            f"checkpoint {where} written at step {trainer.global_step}"
            if where.is_file()
            else "no checkpoint"
        )
        stopper = next((c for c in trainer.callbacks if isinstance(c, StopOnSigterm)), None)  # type: ignore[attr-defined]
        if stopper is not None and stopper.requeue:
            requeued = requeue_slurm_job() if trainer.is_global_zero else "rank zero requeues the job"
            raise Terminated(
                f"SLURM requeue signal at step {trainer.global_step}: {kept}; {requeued}; "
                f"{layout.summary} has the resume command"
            ) from None
        raise Terminated(
            f"SIGTERM at step {trainer.global_step}: {kept}; {layout.summary} has the resume command"
        ) from None
    except TrainingDiverged as diverged:
        outcome.status = "diverged"
        last = layout.last_checkpoint
        kept = (
            f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written before it"
        )
        stopped = TrainingDiverged(
            diverged.step, diverged.lr, diverged.what, f"{kept}; lower [model].lr or lengthen [model].warmup"
        )
        outcome.error = f"{type(stopped).__name__}: {stopped}"
        raise stopped from diverged
    except StopRun as stop:
        outcome.status = stop.status
        outcome.error = f"{type(stop).__name__}: {stop}"
        raise
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful shutdown ending in sys.exit(1).
        outcome.status = "interrupted"
        raise
    except BaseException as exception:
        outcome.error = f"{type(exception).__name__}: {exception}"
        if isinstance(exception, KeyboardInterrupt):
            outcome.status = "interrupted"
        raise
    finally:
        os.environ.pop(RUN_DIR_VARIABLE, None)
        os.environ.pop(RESUME_VARIABLE, None)
        if not parts.joined:
            os.environ.pop(LAUNCHER_VARIABLE, None)


def _finish(trainer: L.Trainer, parts: _Run, outcome: _Outcome) -> RunSummary:
    """The background writer's last jobs, the run's record written once, `RunEnd`, then closing up."""
    background_failures = parts.writer.close()
    summary = _summary(trainer, parts, outcome, tuple(background_failures))
    bus = parts.assembly.bus
    if trainer.is_global_zero:
        try:
            write_json(parts.layout.summary, summary.to_json())
        except OSError as failure:  # a full disk: the run's own outcome must still be reported
            log.error("could not write %s: %s", parts.layout.summary, failure.strerror or failure)
        try:
            bus.publish(
                RunEnd(epoch=trainer.current_epoch, global_step=trainer.global_step, status=summary.status)
            )
        except Exception:  # the run's own outcome (and its exception, if any) must win
            log.exception("a subscriber failed while handling RunEnd")
    parts.assembly.close()
    if parts.trackers is not None:
        parts.trackers.close()
    parts.lock.release()
    return summary


def _deployment(context: RunContext) -> dict[str, Any]:
    """The quantization gates' records and the exported temperature, as the export's parity.json has them."""
    if "onnx_parity" not in context.artifacts:
        return {"quantization": None, "temperature": None}
    from harness.onnx.quantize import read_deployment

    return read_deployment(context.run_dir / context.artifacts["onnx_parity"])


def _summary(
    trainer: L.Trainer, parts: _Run, outcome: _Outcome, background: tuple[Failure, ...]
) -> RunSummary:
    context, layout = parts.assembly.context, parts.layout
    last = layout.last_checkpoint
    best = context.best_checkpoint
    return RunSummary(
        status=outcome.status,
        stop=context.stop_request if outcome.status == "stopped" else None,
        run_dir=layout.run_dir,
        monitor=parts.settings.checkpoint.monitor,
        best_score=context.best_score,
        best_checkpoint=None if best is None else layout.relative(best),
        epochs_completed=trainer.current_epoch,
        global_step=trainer.global_step,
        final_metrics=parts.callback.final_metrics(trainer),
        artifacts=dict(context.artifacts),
        failures=(*parts.assembly.bus.failures, *background),
        skipped_images=tuple(str(path) for path in parts.data.skipped),
        left_out_classes=parts.data.left_out,
        duration_s=round(time.monotonic() - parts.started, 2),
        world_size=trainer.world_size,
        num_nodes=trainer.num_nodes,
        resume=(
            f"python -m harness.run {layout.settings} --set trainer.resume={last}"
            if last.is_file() and outcome.status not in ("completed", "stopped")
            else None
        ),
        error=outcome.error,
        attempts=tuple(parts.attempts),
        test=outcome.tested,
        acceleration=parts.acceleration,
        recipe=parts.recipe,
        validated_weights=context.validated_weights,
        **_deployment(context),
    )
