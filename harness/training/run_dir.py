"""Where a run writes and what it resumes from, checked before anything is written.

A run directory is ``<output_dir>/<name>/version_<n>/`` holding ``settings.toml``,
``labels.json`` and ``checkpoints/``. A resume:

- reads the newest checkpoint by its global step (``resume = "last"``: of the newest run
  of this name that has one), never by its file name;
- refuses, naming every difference, a checkpoint whose classes (and their order),
  architecture or image size differ from the settings, or whose subscribers' state does
  not match the subscribers now attached (the EMA on or off, say);
- refuses a truncated or unreadable checkpoint, naming it;
- says so and trains nothing when the run already completed its ``max_epochs``;
- keeps each attempt's record: the settings and summary of the attempt before it go to
  ``attempts/<n>/`` and the run's ``summary.json`` lists every attempt;
- goes into a new run directory when the checkpoint lies outside one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tomllib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import torch

from harness.core.errors import HarnessError, SettingsError, shown
from harness.core.layout import RunLayout
from harness.core.preprocessing import Preprocessing
from harness.io.artifacts import read_label_map
from harness.settings import Settings
from harness.training.lean_checkpoint import LEAN_KEY
from harness.training.model import preprocessing_record

log = logging.getLogger(__name__)

__all__ = [
    "RESUME_VARIABLE",
    "RUN_DIR_VARIABLE",
    "AlreadyComplete",
    "abandon",
    "check_resume",
    "keep_attempt",
    "last_checkpoint",
    "launched_rank",
    "newest_checkpoint",
    "resolve_run_dir",
]

RUN_DIR_VARIABLE = "HARNESS_RUN_DIR"
RESUME_VARIABLE = "HARNESS_RESUME_FROM"
_LIGHTNING_KEYS = ("pytorch-lightning_version", "epoch", "global_step", "loops")
"""What Lightning reads from a checkpoint before anything else when it resumes."""


class AlreadyComplete(HarnessError):
    """A resume of a run that already trained its ``max_epochs``: nothing to do (exit 0)."""

    exit_code = 0


def launched_rank() -> int:
    """This process's rank as the launcher's environment says, before any Trainer exists."""
    for variable in ("RANK", "LOCAL_RANK"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


def _read(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint Lightning can resume from, else a `SettingsError` saying why not."""
    raw = _load(checkpoint)
    missing = [key for key in _LIGHTNING_KEYS if key not in raw]
    if missing:
        raise SettingsError(
            f"[trainer].resume: {checkpoint} is not a Lightning checkpoint: it has a state_dict but no "
            f"{', '.join(missing)} (a plain torch.save of weights cannot resume a run)"
        )
    return raw


def _load(checkpoint: Path) -> dict[str, Any]:
    try:
        raw = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    # torch.load raises many types for a torn, empty or foreign file; each means "unusable".
    except Exception as error:  # noqa: BLE001
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SettingsError(
            f"[trainer].resume: {checkpoint} is not a readable checkpoint ({reason})"
        ) from None
    if not isinstance(raw, dict) or "state_dict" not in raw:
        raise SettingsError(f"[trainer].resume: {checkpoint} is not a Lightning checkpoint")
    if raw.get(LEAN_KEY):
        raise SettingsError(
            f"[trainer].resume: {checkpoint} holds the validated weights alone (a top-k checkpoint); "
            f"resume from {RunLayout(checkpoint.parent.parent).last_checkpoint}"
        )
    return raw


def _step(checkpoint: Path) -> int:
    try:
        return int(_load(checkpoint).get("global_step", -1))
    except SettingsError:
        return -1


def last_checkpoint(run_dir: Path) -> Path:
    """``<run_dir>/checkpoints/last.ckpt``: the checkpoint every save refreshes and an interrupt writes."""
    return RunLayout(run_dir).last_checkpoint


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of `run_dir` with the highest global step (``last.ckpt`` on a tie)."""
    layout = RunLayout(run_dir)
    found = sorted(
        layout.checkpoints.glob("*.ckpt"), key=lambda p: (_step(p), p.name == layout.last_checkpoint.name)
    )
    return found[-1] if found else None


def _new_version(base: Path) -> Path:
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SettingsError(
            f"[run].output_dir: cannot make the run directory under {str(base)!r} ({error.strerror or error})"
        ) from None
    version = 1 + max((int(p.name[8:]) for p in base.glob("version_*") if p.name[8:].isdigit()), default=-1)
    while True:
        run_dir = base / f"version_{version}"
        try:
            run_dir.mkdir()
        except FileExistsError:
            version += 1
            continue
        except OSError as error:
            raise SettingsError(
                f"[run].output_dir: cannot make {str(run_dir)!r} ({error.strerror or error})"
            ) from None
        if not os.access(run_dir, os.W_OK):
            raise SettingsError(f"[run].output_dir: {str(run_dir)!r} is not writable")
        return run_dir


def abandon(run_dir: Path, output_dir: Path) -> None:
    """Remove `run_dir`, made by this run, when the run stops before it started; and its empty parents.

    For a refusal found only once the run directory exists (a subscriber that cannot be
    built, a loose checkpoint that does not fit): nothing is left behind. Parents are
    removed up to `output_dir` included, each only while empty.
    """
    shutil.rmtree(run_dir, ignore_errors=True)
    top = output_dir.resolve()
    folder = run_dir.parent.resolve()
    while folder == top or top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent


def resolve_run_dir(settings: Settings) -> tuple[Path, Path | None]:
    """The run directory and the checkpoint to resume from (None for a fresh run).

    Processes that Lightning's ``ddp`` launcher starts for ranks above zero re-run the
    command; they join the run directory that rank zero chose (``HARNESS_RUN_DIR``).
    """
    joined = os.environ.get(RUN_DIR_VARIABLE)
    if joined and launched_rank() != 0:
        resumed = os.environ.get(RESUME_VARIABLE)
        return Path(joined), Path(resumed) if resumed else None
    base = Path(settings.run.output_dir).expanduser() / settings.run.name
    resume = settings.trainer.resume
    runs = sorted(
        (p for p in base.glob("version_*") if p.name[8:].isdigit() and newest_checkpoint(p) is not None),
        key=lambda p: int(p.name[8:]),
    )
    if not resume and runs and int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0:
        # A job that SLURM requeued (its requeue signal stopped the run) resumes where it stopped.
        log.warning(
            "SLURM requeued job %s (restart %s): resuming the newest run of this name, %s",
            os.environ.get("SLURM_JOB_ID"),
            os.environ.get("SLURM_RESTART_COUNT"),
            runs[-1],
        )
        resume = "last"
    if resume == "last":
        if not runs:
            raise SettingsError(f"[trainer].resume = 'last': no run under {str(base)!r} has a checkpoint")
        checkpoint = newest_checkpoint(runs[-1])
        assert checkpoint is not None
        return runs[-1], checkpoint
    if resume:
        checkpoint = Path(resume).expanduser()
        if not checkpoint.is_file():
            raise SettingsError(f"[trainer].resume: no such checkpoint file {resume!r}")
        _read(checkpoint)
        home = RunLayout.of_checkpoint(checkpoint)
        return (home.run_dir if home.is_run_dir() else _new_version(base)), checkpoint
    return _new_version(base), None


def check_resume(
    checkpoint: Path,
    run_dir: Path,
    settings: Settings,
    classes: Sequence[str],
    stateful: Collection[str],
    preprocessing: Preprocessing | None = None,
) -> None:
    """Refuse a resume that cannot continue this run as configured, naming every difference.

    `stateful` names the attached subscribers that keep state in checkpoints. The class
    names, image size and `preprocessing` are compared with what the checkpoint records
    (`harness.training.model.Classifier.from_settings`), wherever it lies; for a checkpoint
    written before it recorded them, with its run directory's files.
    """
    raw = _read(checkpoint)
    hparams = raw.get("hyper_parameters") or {}
    differences: list[str] = []
    if hparams.get("arch") not in (None, settings.model.arch):
        differences.append(f"architecture {hparams['arch']!r} in the checkpoint, {settings.model.arch!r} now")
    recorded = hparams.get("class_names")
    if recorded:
        if list(recorded) != list(classes):
            differences.append(
                f"classes {shown(list(recorded))} in the checkpoint, {shown(list(classes))} now"
            )
    elif RunLayout(run_dir).labels.is_file():
        then = read_label_map(run_dir)
        if list(then) != list(classes):
            differences.append(f"classes {shown(then)} in the run, {shown(list(classes))} in the data now")
    elif hparams.get("num_classes") not in (None, len(classes)):
        differences.append(f"{hparams['num_classes']} classes in the checkpoint, {len(classes)} now")
    saved = _saved_settings(run_dir)
    size = hparams.get("image_size") or saved.get("data", {}).get("image_size")
    if size is not None and size != settings.data.image_size:
        differences.append(f"[data].image_size {size} in the checkpoint, {settings.data.image_size} now")
    record = hparams.get("preprocessing")
    if record and preprocessing is not None:
        now = preprocessing_record(preprocessing)
        for key in sorted(set(record) | set(now)):
            if key != "image_size" and record.get(key) != now.get(key):
                differences.append(
                    f"preprocessing {key} {record.get(key)!r} in the checkpoint, {now.get(key)!r} now"
                )
    states = set((raw.get("harness") or {}).keys())
    was_disabled = {
        name for name, table in saved.get("subscribers", {}).items() if table.get("enabled") is False
    }
    for name in sorted(states - set(stateful)):
        differences.append(f"[subscribers.{name}] kept state in the checkpoint but is not attached now")
    for name in sorted((set(stateful) - states) & was_disabled):
        differences.append(f"[subscribers.{name}] was off when the checkpoint was written, on now")
    if differences:
        raise SettingsError(
            f"[trainer].resume: {checkpoint} does not fit these settings: " + "; ".join(differences)
        )
    summary = _saved_summary(run_dir)
    epoch = int(raw.get("epoch", -1))
    if summary.get("status") == "completed" and epoch + 1 >= settings.trainer.max_epochs:
        raise AlreadyComplete(
            f"{run_dir}: the run already completed {epoch + 1} epoch(s); nothing to do "
            "(raise [trainer].max_epochs to train further)"
        )


def _saved_settings(run_dir: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(RunLayout(run_dir).settings.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _saved_summary(run_dir: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(RunLayout(run_dir).summary.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def keep_attempt(run_dir: Path) -> list[dict[str, Any]]:
    """Move the record of the attempt before this one to ``attempts/<n>/``; return every attempt.

    Each entry is an earlier attempt's summary (without its own ``attempts``), oldest first.
    """
    layout = RunLayout(run_dir)
    summary = _saved_summary(run_dir)
    earlier: list[dict[str, Any]] = list(summary.pop("attempts", []) or [])
    if not summary and not layout.settings.is_file():
        return earlier
    folder = layout.attempt(len(earlier) + 1)
    folder.mkdir(parents=True, exist_ok=True)
    for path in (layout.settings, layout.summary):
        if path.is_file():
            shutil.copy2(path, folder / path.name)
    return [*earlier, {**summary, "record": str(folder.relative_to(run_dir))}]
