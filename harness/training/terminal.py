"""What a run prints: the progress bar, and the library chatter left out of the terminal.

At ``[run].terminal = "normal"`` a run prints the data set and model tables once, the
sampler table at the first epoch (and again when a class's share drifts), one line per
epoch (`subscribers.epoch_line`) and the rich progress bar, without its metrics column:
the epoch line has them. `quiet_libraries` silences what other packages print on every
run, named by their modules: Lightning's informational lines (the accelerator summary,
its advertising tips, "`Trainer.fit` stopped"), MLflow's database set-up, and the
warnings listed in `KNOWN_WARNINGS`. ``"verbose"`` keeps all of it; ``"quiet"`` drops
the progress bar and the tables too, leaving warnings and the run directory.
"""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from typing_extensions import override

from harness.core.context import Verbosity

__all__ = ["KNOWN_WARNINGS", "MetricFreeProgressBar", "quiet_libraries"]

KNOWN_WARNINGS: tuple[tuple[str, str], ...] = (
    # Lightning 2.6 calls a pytree API that torch 2.10+ deprecates (message, module).
    (r".*isinstance\(treespec, LeafSpec\)", r"lightning\.pytorch\.utilities\._pytree"),
    # Tiny data sets: Lightning says so on every run; [trainer].log_every_n_steps says it too.
    (r"The number of training batches .* is smaller than the logging interval", r"lightning\.pytorch.*"),
    # Each run directory is new; a resumed run writes into its own checkpoints/ on purpose.
    (r"Checkpoint directory .* exists and is not empty", r"lightning\.pytorch.*"),
    # SQLAlchemy's deprecation inside MLflow's database store.
    (r".*The ``noload`` loader strategy is deprecated", r"mlflow.*|sqlalchemy.*"),
)
"""(message pattern, module pattern) of warnings printed on every run that the user cannot act on."""

_CHATTY_LOGGERS = ("lightning.pytorch", "lightning.fabric", "mlflow", "alembic")


def quiet_libraries(verbosity: Verbosity) -> None:
    """Silence the known chatter of Lightning and the trackers, unless `verbosity` is verbose.

    Called by the command line (it changes this process's warning filters and log levels).
    """
    if verbosity == "verbose":
        return
    for message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow sets its own loggers' level when it is imported, from this variable.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    # "Experiment with name ... not found. Creating it.": a new store per run, always.
    logging.getLogger("lightning.pytorch.loggers.mlflow").setLevel(logging.ERROR)


class MetricFreeProgressBar(RichProgressBar):
    """Lightning's rich progress bar, kept on screen per epoch, without the metrics column.

    The metrics wrap into a column of their own on a narrow terminal (six lines per epoch
    in an 80-column log); the epoch line prints them once per epoch instead.
    """

    def __init__(self) -> None:
        super().__init__(leave=True)

    @override
    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {}
