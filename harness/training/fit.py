"""A whole training run: data, model, bus, subscribers and Lightning's Trainer, from settings.

`run` builds everything the settings ask for, attaches every enabled subscriber (the
built-in specs, then the plugins of ``[run].plugins``) to a fresh `Bus`, runs
``Trainer.fit`` with `BusCallback`, and leaves a run directory
``<output_dir>/<name>/version_<n>/`` holding the resolved settings, checkpoints,
metrics, every subscriber's artifacts and ``summary.json``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs
import lightning as L
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.utilities.exceptions import SIGTERMException

from harness.core.bus import Bus, Stateful, Subscriber
from harness.core.context import RunContext
from harness.core.errors import Terminated, TrainingDiverged
from harness.core.events import RunEnd
from harness.io.artifacts import CHECKPOINTS_DIR, write_json, write_label_map, write_text
from harness.io.background import BackgroundWriter
from harness.io.lock import RunLock
from harness.io.record import EventLog
from harness.settings import Settings, resolve_specs, settings_to_toml
from harness.training.callback import BusCallback, scalar_metrics
from harness.training.checkpoint_io import AtomicCheckpointIO
from harness.training.data import ImageDataModule, run_preprocessing, scan
from harness.training.evaluation import evaluate_test_split
from harness.training.loggers import LoggerTrackers, build_loggers, logger_artifacts, require_packages
from harness.training.model import Classifier, check_monitor
from harness.training.run_dir import (
    RESUME_VARIABLE,
    RUN_DIR_VARIABLE,
    check_resume,
    keep_attempt,
    last_checkpoint,
    resolve_run_dir,
)
from harness.training.sampler import make_sampler
from harness.training.stop_signal import LAUNCHER_VARIABLE, StopOnSigterm, outlive_launcher
from harness.training.terminal import MetricFreeProgressBar

__all__ = ["RunResult", "run"]

log = logging.getLogger("harness")


@attrs.frozen(kw_only=True)
class RunResult:
    """What a finished run left: its directory and the content of its ``summary.json``."""

    run_dir: Path
    summary: dict[str, Any]


def _lightning_callbacks(settings: Settings, run_dir: Path) -> list[Callback]:
    callbacks: list[Callback] = [LearningRateMonitor(logging_interval="epoch")]
    ckpt = settings.checkpoint
    if ckpt.enabled:
        callbacks.append(
            ModelCheckpoint(
                dirpath=run_dir / CHECKPOINTS_DIR,
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
    """Train as `settings` say and return the run directory with its summary.

    `extra_subscribers` (key -> subscriber) are attached after the built-in ones, with
    the "raise" policy; tests and notebooks use it to observe a real run.
    """
    started = time.monotonic()
    L.seed_everything(settings.run.seed, workers=True, verbose=False)
    info, classes = scan(settings.data, settings.run.seed)
    if info.skipped:
        shown = ", ".join(str(path) for path in info.skipped[:5])
        log.warning(
            "skipping %d unreadable image file(s) ([data].on_corrupt = skip): %s", len(info.skipped), shown
        )
    module = Classifier.from_settings(
        settings.model, num_classes=len(classes), image_size=settings.data.image_size
    )
    specs = resolve_specs(settings.run.plugins)
    require_packages(settings.logger)  # before the run directory is made
    check_monitor(settings.checkpoint.monitor, settings.checkpoint.mode)
    run_dir, resume_from = resolve_run_dir(settings)
    lock = RunLock(run_dir)
    joined = os.environ.get(RUN_DIR_VARIABLE) == str(run_dir)
    if not joined:
        lock.acquire()
    # Pictures are drawn in its worker process while training goes on; closed in the finally below.
    writer = BackgroundWriter()
    preprocessing = run_preprocessing(settings)
    sampler = make_sampler(info.train_targets, balanced=settings.data.balanced, seed=settings.run.seed)
    datamodule = ImageDataModule(info, preprocessing, settings.data, sampler, settings.augment)
    loggers = build_loggers(settings.logger, run_dir, settings.run.name)
    trackers = LoggerTrackers.of(loggers)
    context = RunContext(
        run_dir=run_dir,
        class_names=classes,
        preprocessing=preprocessing,
        data=info,
        monitor=settings.checkpoint.monitor,
        monitor_mode=settings.checkpoint.mode,
        train_sampler=sampler,
        background=writer,
        augmented_samples=datamodule.preview,
        trackers=trackers,
        verbosity=settings.run.terminal,
        # Until the data kind is recorded, a run without flips says a mirror may change the class.
        flips_change_class=settings.augment.hflip == 0,
    )
    bus = Bus()
    event_log = EventLog(context) if settings.run.record_events else None
    if event_log is not None:
        bus.attach(event_log)
    # Checkpoints keep each subscriber's state under its table name (see BusCallback).
    subscribers: dict[str, Subscriber] = {}
    for name, spec in specs.items():
        options = settings.subscribers[name]
        if options.enabled:
            subscribers[name] = bus.attach(spec.build(context, options), on_error=options.on_error)
    extras = dict(extra_subscribers or {})
    for subscriber in extras.values():
        bus.attach(subscriber, on_error="raise")
    stateful = subscribers | extras
    attempts: list[dict[str, Any]] = []
    if resume_from is not None and not joined:
        try:
            check_resume(
                resume_from,
                run_dir,
                settings,
                classes,
                [k for k, s in stateful.items() if isinstance(s, Stateful)],
            )
        except BaseException:
            lock.release()
            raise
        attempts = keep_attempt(run_dir)
        for name, path in (attempts[-1].get("artifacts") or {}).items() if attempts else ():
            if (run_dir / path).exists():
                context.artifacts.setdefault(name, path)

    trainer_settings = settings.trainer
    interrupt_checkpoint = last_checkpoint(run_dir) if settings.checkpoint.enabled else None
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=trainer_settings.max_epochs,
        accelerator=trainer_settings.accelerator,
        devices=trainer_settings.devices,
        strategy=trainer_settings.strategy,
        precision=trainer_settings.precision,
        accumulate_grad_batches=trainer_settings.accumulate_grad_batches,
        gradient_clip_val=trainer_settings.gradient_clip_val or None,
        limit_train_batches=_fraction(trainer_settings.limit_train_batches),
        limit_val_batches=_fraction(trainer_settings.limit_val_batches),
        num_sanity_val_steps=trainer_settings.num_sanity_val_steps,
        log_every_n_steps=trainer_settings.log_every_n_steps,
        enable_progress_bar=trainer_settings.progress_bar and settings.run.terminal != "quiet",
        enable_model_summary=False,
        enable_checkpointing=settings.checkpoint.enabled,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        callbacks=[
            BusCallback(bus, context, stateful, interrupt_checkpoint=interrupt_checkpoint),
            StopOnSigterm(),
            *_lightning_callbacks(settings, run_dir),
        ],
    )
    if trainer.is_global_zero:
        write_text(run_dir / "settings.toml", settings_to_toml(settings))
        write_label_map(run_dir, classes)
        # Its imports overlap the run's set-up and sanity check rather than an epoch.
        writer.start()
    context.record_artifact("settings", run_dir / "settings.toml")
    context.record_artifact("label_map", run_dir / "labels.json")
    for name, path in logger_artifacts(loggers).items():
        context.record_artifact(name, path)

    os.environ[RUN_DIR_VARIABLE] = str(run_dir)
    os.environ[RESUME_VARIABLE] = str(resume_from or "")
    if not joined:
        os.environ[LAUNCHER_VARIABLE] = str(os.getpid())
    status = "failed"
    tested: dict[str, Any] | None = None
    error: str | None = None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        status = "interrupted" if trainer.interrupted else "completed"
        if status == "completed" and trainer.is_global_zero:
            # A held-out test/ folder beside train/ is scored once, with the exported best weights.
            tested = evaluate_test_split(run_dir, info.root, context.best_checkpoint)
    except SIGTERMException:
        status = "interrupted"
        if joined:
            outlive_launcher()
        where = last_checkpoint(context.run_dir)
        kept = (
            f"checkpoint {where} written at step {trainer.global_step}"
            if where.is_file()
            else "no checkpoint"
        )
        raise Terminated(
            f"SIGTERM at step {trainer.global_step}: {kept}; summary.json has the resume command"
        ) from None
    except TrainingDiverged as diverged:
        status = "diverged"
        last = last_checkpoint(run_dir)
        kept = (
            f"the last good checkpoint is {last}" if last.is_file() else "no checkpoint was written before it"
        )
        stopped = TrainingDiverged(
            diverged.step, diverged.lr, diverged.what, f"{kept}; lower [model].lr or lengthen [model].warmup"
        )
        error = f"{type(stopped).__name__}: {stopped}"
        raise stopped from diverged
    except SystemExit:
        # Lightning turns Ctrl-C into a graceful shutdown ending in sys.exit(1).
        status = "interrupted"
        raise
    except BaseException as exception:
        error = f"{type(exception).__name__}: {exception}"
        if isinstance(exception, KeyboardInterrupt):
            status = "interrupted"
        raise
    finally:
        os.environ.pop(RUN_DIR_VARIABLE, None)
        os.environ.pop(RESUME_VARIABLE, None)
        if not joined:
            os.environ.pop(LAUNCHER_VARIABLE, None)
        background_failures = writer.close()
        summary = _summary(settings, context, trainer, bus, status, time.monotonic() - started)
        summary["failures"] += [
            {
                "subscriber": failure.owner,
                "event": "background",
                "step": failure.step,
                "error": failure.error,
                "traceback": failure.traceback,
            }
            for failure in background_failures
        ]
        summary["test"] = tested
        summary.update(_deployment(context))
        summary["error"] = error
        summary["attempts"] = attempts
        if trainer.is_global_zero:
            try:
                write_json(run_dir / "summary.json", summary)
            except OSError as failure:  # a full disk: the run's own outcome must still be reported
                log.error("could not write %s: %s", run_dir / "summary.json", failure.strerror or failure)
            _publish_run_end(bus, trainer, status)
        if event_log is not None:
            event_log.close()
        if trackers is not None:
            trackers.close()
        lock.release()
    return RunResult(run_dir=run_dir, summary=summary)


def _publish_run_end(bus: Bus, trainer: L.Trainer, status: str) -> None:
    final: Literal["completed", "failed", "interrupted"] = (
        "completed" if status == "completed" else "interrupted" if status == "interrupted" else "failed"
    )
    try:
        bus.publish(RunEnd(epoch=trainer.current_epoch, global_step=trainer.global_step, status=final))
    except Exception:  # the run's own outcome (and its exception, if any) must win
        log.exception("a subscriber failed while handling RunEnd")


def _deployment(context: RunContext) -> dict[str, Any]:
    """The int8 gate's record and the exported temperature, as the export's parity.json keeps them."""
    if "onnx_parity" not in context.artifacts:
        return {"quantization": None, "temperature": None}
    from harness.onnx.quantize import read_deployment

    return read_deployment(context.run_dir / context.artifacts["onnx_parity"])


def _summary(
    settings: Settings, context: RunContext, trainer: L.Trainer, bus: Bus, status: str, seconds: float
) -> dict[str, Any]:
    best = context.best_checkpoint

    def relative(path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return str(path.resolve().relative_to(context.run_dir.resolve()))
        except ValueError:
            return str(path)

    last = last_checkpoint(context.run_dir)
    return {
        "status": status,
        "run_dir": str(context.run_dir),
        "monitor": settings.checkpoint.monitor,
        "best_score": context.best_score,
        "best_checkpoint": relative(best),
        "epochs_completed": trainer.current_epoch,
        "global_step": trainer.global_step,
        "final_metrics": scalar_metrics(trainer),
        "artifacts": dict(sorted(context.artifacts.items())),
        "failures": [attrs.asdict(failure) for failure in bus.failures],
        "skipped_images": [str(path) for path in context.data.skipped] if context.data else [],
        "left_out_classes": [attrs.asdict(left) for left in context.data.left_out] if context.data else [],
        "duration_s": round(seconds, 2),
        "resume": (
            f"python -m harness.run {context.run_dir / 'settings.toml'} --set trainer.resume={last}"
            if last.is_file() and status != "completed"
            else None
        ),
    }
