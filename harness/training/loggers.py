"""Lightning's loggers for ``[logger].kinds``, and the `Trackers` sink subscribers log pictures to.

``"csv"`` is Lightning's `CSVLogger` (``logs/version_<n>/metrics.csv``), ``"tensorboard"``
its `TensorBoardLogger` (``tensorboard/version_<n>/``), ``"mlflow"`` its `MLFlowLogger`:
by default a local store in the run directory (``mlflow.db``, artifacts under
``mlflow/``; MLflow 3 refuses its old ``./mlruns`` file store without
``MLFLOW_ALLOW_FILE_STORE``), or the server of ``[logger].mlflow_tracking_uri``.
Scalars reach every logger through Lightning; `LoggerTrackers` gives the ones that take
pictures and files (TensorBoard, MLflow) to subscribers through `harness.core.tracking`.
A kind whose package is missing is a `SettingsError` naming the pip command.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from typing_extensions import override

from harness.core.errors import SettingsError
from harness.core.tracking import Param
from harness.settings import LoggerSettings

__all__ = ["LoggerTrackers", "build_loggers", "logger_artifacts", "require_packages"]

_EXTRAS = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


class _TensorBoardLogger(TensorBoardLogger):
    """Lightning's `TensorBoardLogger`, flushed but left open when Lightning finalises it.

    The background writer's last pictures reach `LoggerTrackers` on its reply thread, after
    the fit; closing the event file under them (Lightning does at teardown) loses them with
    "Writer is closed". `LoggerTrackers.close` closes it once they are in.
    """

    @override
    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._experiment is not None:
            self.experiment.flush()
        if status == "success":
            self.save()


def require_packages(settings: LoggerSettings) -> None:
    """Raise `SettingsError` naming the pip command when a kind's package is not installed."""
    for kind in settings.kinds:
        module = _EXTRAS.get(kind)
        if module is not None and importlib.util.find_spec(module) is None:
            raise SettingsError(
                f'[logger].kinds names "{kind}", but the {module!r} package is not installed: '
                f'pip install -e ".[{kind}]" (or pip install {module})'
            )


def build_loggers(settings: LoggerSettings, run_dir: Path, run_name: str) -> list[Logger]:
    """One Lightning logger per kind, in the order given; each attempt gets a new version.

    Lightning's CSVLogger deletes an existing metrics.csv, hence a version per attempt
    (a resumed run writes ``logs/version_1/``, its first attempt's file stays).
    """
    require_packages(settings)
    loggers: list[Logger] = []
    for kind in settings.kinds:
        if kind == "csv":
            loggers.append(CSVLogger(save_dir=run_dir, name="logs"))
        elif kind == "tensorboard":
            loggers.append(_TensorBoardLogger(save_dir=run_dir, name="tensorboard", default_hp_metric=False))
        else:
            uri = settings.mlflow_tracking_uri
            loggers.append(
                MLFlowLogger(
                    experiment_name=settings.mlflow_experiment or run_name,
                    run_name=run_dir.name,
                    tracking_uri=uri or f"sqlite:///{(run_dir / 'mlflow.db').resolve()}",
                    artifact_location=None if uri else (run_dir / "mlflow").resolve().as_uri(),
                    tags={"harness.run_dir": str(run_dir.resolve())},
                )
            )
    return loggers


def logger_artifacts(loggers: Sequence[Logger]) -> dict[str, Path]:
    """What the loggers write, by artifact name, for ``summary.json``."""
    found: dict[str, Path] = {}
    for logger in loggers:
        if isinstance(logger, CSVLogger):
            found["metrics"] = Path(logger.log_dir) / "metrics.csv"
        elif isinstance(logger, TensorBoardLogger):
            found["tensorboard"] = Path(logger.log_dir)
        elif isinstance(logger, MLFlowLogger) and logger.save_dir is not None:
            found["mlflow"] = Path(logger.save_dir)
    return found


class LoggerTrackers:
    """`harness.core.tracking.Trackers` over the TensorBoard and MLflow loggers among `loggers`.

    Pictures arrive from the background writer's reply thread while the training thread
    logs scalars; a lock keeps this sink's own calls in order. TensorBoard takes
    pictures as images and files as text; MLflow takes both as they are.
    """

    def __init__(self, loggers: Sequence[Logger]) -> None:
        self.tensorboard = [lg for lg in loggers if isinstance(lg, TensorBoardLogger)]
        self.mlflow = [lg for lg in loggers if isinstance(lg, MLFlowLogger)]
        self._lock = threading.Lock()

    @classmethod
    def of(cls, loggers: Sequence[Logger]) -> LoggerTrackers | None:
        """A sink over `loggers`, or None when none of them takes pictures or files."""
        trackers = cls(loggers)
        return trackers if trackers.tensorboard or trackers.mlflow else None

    def log_image(self, name: str, path: Path, step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"))
        with self._lock:
            for tensorboard in self.tensorboard:
                tensorboard.experiment.add_image(name, pixels, global_step=step, dataformats="HWC")
            for mlflow in self.mlflow:
                mlflow.experiment.log_image(mlflow.run_id, pixels, key=name, step=step)

    def log_params(self, params: Mapping[str, Param]) -> None:
        with self._lock:
            for logger in [*self.tensorboard, *self.mlflow]:
                logger.log_hyperparams(dict(params))

    def log_artifact(self, path: Path) -> None:
        with self._lock:
            for tensorboard in self.tensorboard:
                text = path.read_text(encoding="utf-8", errors="replace")
                # Markdown: four spaces of indent keep the file as it is, a code block.
                tensorboard.experiment.add_text(
                    path.name, "\n".join("    " + line for line in text.splitlines())
                )
            for mlflow in self.mlflow:
                mlflow.experiment.log_artifact(mlflow.run_id, str(path))

    def close(self) -> None:
        """Flush what arrived after Lightning finalised the loggers (the last pictures, the summary)."""
        with self._lock:
            for tensorboard in self.tensorboard:
                tensorboard.experiment.flush()
                tensorboard.experiment.close()
