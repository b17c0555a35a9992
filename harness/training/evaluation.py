"""Evaluating a checkpoint with Lightning's ``trainer.test``, and a run's ``test/`` split.

`load_checkpoint` rebuilds the `Classifier` of a harness checkpoint with its run's class
names and preprocessing. `test_model` runs it over labelled images through
``trainer.test`` with `BusCallback`, so every subscriber the run enabled receives
`TestStart`, `BatchEnd(stage="test")` and `TestEpochEnd` with the evaluation folder as
its run directory (the confusion matrix and the sample grid draw the test set there);
the class probabilities come from the logits those events carry.
`evaluate_test_split` is what a training run does at its end when its data has a
test split (``test/`` in any case; the images the run's scan kept): the exported ONNX
model (else the best checkpoint) scored on it, into
``<run_dir>/evaluation/test/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import attrs
import lightning as L
import numpy as np
import numpy.typing as npt
import torch
from torch.utils.data import DataLoader

from harness.core.bus import Bus
from harness.core.context import DatasetInfo
from harness.core.errors import DataError, ExportError, HarnessError
from harness.core.events import BatchEnd
from harness.core.layout import RunLayout
from harness.core.preprocessing import Preprocessing
from harness.core.summary import TestScore
from harness.core.temperature import Temperature
from harness.evaluation.calibrated import score
from harness.evaluation.data import EvaluationData, test_split_of
from harness.evaluation.folder import Evaluation, Source, evaluation_dir, sha256_of, write_evaluation
from harness.io.artifacts import read_label_map
from harness.io.stream import materialise_split
from harness.settings import Settings, load_settings
from harness.training.assembly import assemble
from harness.training.callback import BusCallback
from harness.training.data import ImageFiles, run_preprocessing, writable_cache_dir
from harness.training.model import Classifier

__all__ = [
    "LoadedModel",
    "evaluate_test_split",
    "flipped_logits",
    "load_checkpoint",
    "test_model",
    "test_split_data",
]

log = logging.getLogger("harness")


@attrs.frozen(kw_only=True)
class LoadedModel:
    """A checkpoint's model with what its run says about it."""

    checkpoint: Path
    module: Classifier
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    settings: Settings
    temperature: Temperature | None = None
    """Fitted on the validation logits of these weights, when the checkpoint records one."""


def load_checkpoint(checkpoint: Path) -> LoadedModel:
    """The model of a ``harness.run`` checkpoint; a `DataError` naming what is missing or wrong."""
    from harness.onnx.bundle import read_checkpoint

    if not checkpoint.is_file():
        raise DataError(f"{checkpoint}: no such checkpoint file")
    layout = RunLayout.of_checkpoint(checkpoint)
    settings_file, labels = layout.settings, layout.labels
    for needed in (settings_file, labels):
        if not needed.is_file():
            raise DataError(f"{needed}: not found; evaluating {checkpoint} needs its run's {needed.name}")
    try:
        loaded = read_checkpoint(checkpoint)
    except ExportError as error:
        raise DataError(str(error)) from error
    hparams = loaded.hyper_parameters
    class_names = tuple(read_label_map(labels))
    if int(hparams.get("num_classes", -1)) != len(class_names):
        raise DataError(
            f"{checkpoint}: the model has {hparams.get('num_classes')} classes but {labels} names "
            f"{len(class_names)}; not a harness.run checkpoint of this run"
        )
    settings = load_settings(settings_file)
    module = Classifier(**{**hparams, "weights": ""})
    module.load_state_dict(loaded.state_dict)
    return LoadedModel(
        checkpoint=checkpoint,
        module=module,
        class_names=class_names,
        preprocessing=run_preprocessing(settings),
        settings=settings,
        temperature=loaded.temperature,
    )


class _Logits:
    """Keeps the logits of every test batch, in order (the probabilities of the evaluation)."""

    def __init__(self) -> None:
        self.batches: list[torch.Tensor] = []

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="test")

    def on_batch_end(self, event: BatchEnd) -> None:
        self.batches.append(event.logits.float().cpu())


def _alone() -> bool:
    return False


def _compute_alone(*owners: object) -> None:
    """The torchmetrics metrics that `owners` hold compute this process's counts only.

    A metric's ``compute()`` sums the counts of every process whenever a process group is
    open, and rank zero of a finished run of several processes scores the test split
    alone: the others have exited, and the sum would fail (or wait for them forever).
    """
    from torchmetrics import Metric

    for owner in owners:
        if isinstance(owner, torch.nn.Module):
            parts = list(owner.modules())
        else:
            parts = list(getattr(owner, "__dict__", {}).values())
        for part in parts:
            if isinstance(part, Metric):
                part.distributed_available_fn = _alone


def test_model(
    loaded: LoadedModel,
    data: EvaluationData,
    directory: Path,
    *,
    batch_size: int = 64,
    accelerator: str = "auto",
) -> npt.NDArray[np.float32]:
    """The logits (N x C) of `data` from ``trainer.test``, the run's subscribers attached."""
    logits = _Logits()
    assembly = assemble(
        loaded.settings,
        run_dir=directory,
        class_names=loaded.class_names,
        preprocessing=loaded.preprocessing,
        extras={"logits": logits},
    )
    # On rank zero of a finished run of several processes the process group is still open.
    _compute_alone(loaded.module, *assembly.subscribers.values())
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        precision="32-true",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=directory,
        callbacks=[BusCallback(assembly.bus, assembly.context, {})],
    )
    loader = DataLoader(ImageFiles(data.samples, loaded.preprocessing), batch_size=batch_size, shuffle=False)
    trainer.test(loaded.module, dataloaders=loader, verbose=False)
    for failure in assembly.bus.failures:
        log.warning(
            "evaluation: subscriber %s failed on %s: %s", failure.subscriber, failure.event, failure.error
        )
    return torch.cat(logits.batches).numpy()


def flipped_logits(
    loaded: LoadedModel, data: EvaluationData, *, batch_size: int = 64
) -> npt.NDArray[np.float32]:
    """The logits (N x C) of `data` mirrored left to right (test-time flips), on the CPU, no subscribers."""
    module = loaded.module.to("cpu").eval()
    loader = DataLoader(ImageFiles(data.samples, loaded.preprocessing), batch_size=batch_size, shuffle=False)
    with torch.no_grad():
        return torch.cat([module(images.flip(-1)).float() for images, _ in loader]).numpy()


def test_split_data(info: DatasetInfo) -> EvaluationData | None:
    """The test split the run's scan found (``test/`` in any case), as an evaluation's data; None without one.

    The very images the scan kept: unreadable files it skipped (``[data].on_corrupt =
    "skip"``) stay out, and class folders that training lacks are counted as left out.
    """
    if info.stream is not None:
        return _streamed_test_split(info)
    folder = test_split_of(info.root)
    if folder is None:
        return None
    return EvaluationData(
        folder=folder,
        split="test",
        samples=tuple((Path(path), target) for path, target in info.test),
        unknown={left.name: left.images for left in info.left_out if left.split == "test"},
    )


def _streamed_test_split(info: DatasetInfo) -> EvaluationData | None:
    """A streamed data set's test split, read from the stream once into the node's cache."""
    assert info.stream is not None
    if not info.test:
        return None
    folder = materialise_split(info.stream, "test", writable_cache_dir())
    base = folder.parent
    return EvaluationData(
        folder=folder,
        split="test",
        samples=tuple((base / key, target) for key, target in info.test),
        unknown={left.name: left.images for left in info.left_out if left.split == "test"},
    )


def evaluate_test_split(run_dir: Path, info: DatasetInfo, best_checkpoint: Path | None) -> TestScore | None:
    """Score a finished run on its data's test split (None without one): the headline for ``summary.json``.

    An evaluation that fails is reported in the returned record and the log, not raised:
    training has succeeded by then and its artifacts stand.
    """
    data = test_split_data(info)
    if data is None:
        return None
    test = data.folder
    if not data.samples:
        return TestScore(
            folder=str(test), error="the test split holds no readable images of the training classes"
        )
    layout = RunLayout(run_dir)
    model_file = layout.onnx_model
    directory = evaluation_dir(layout.evaluation("test"))
    try:
        evaluation: Evaluation
        if model_file.is_file():
            from harness.onnx.session import OnnxModel

            model = OnnxModel(model_file)
            logits, temperature = model.logits(data.paths), model.card.temperature
            source = Source(kind="onnx", path=model_file, sha256=sha256_of(model_file))
            names = model.card.class_names
        elif best_checkpoint is not None and best_checkpoint.is_file():
            loaded = load_checkpoint(best_checkpoint)
            logits = test_model(loaded, data, directory, accelerator="cpu")
            temperature = loaded.temperature
            source = Source(kind="checkpoint", path=best_checkpoint, sha256=sha256_of(best_checkpoint))
            names = loaded.class_names
        else:
            return TestScore(folder=str(test), error="no exported model and no checkpoint to evaluate")
        scored = score(logits, data.targets, temperature=temperature)
        evaluation = write_evaluation(
            directory,
            scored.probabilities,
            data,
            names,
            source,
            figures=scored.figures,
            uncalibrated=scored.uncalibrated,
        )
    except HarnessError as error:
        log.warning("evaluating the test split %s failed: %s", test, error)
        return TestScore(folder=str(test), error=str(error))
    figures = evaluation.summary
    return TestScore(
        folder=str(test),
        directory=str(directory.relative_to(run_dir)),
        source=figures["source"],
        images=figures["samples"],
        top1=figures["top1"],
        balanced_accuracy=figures["balanced_accuracy"],
        macro_f1=figures["macro"]["f1"],
        ece=figures["ece"],
        left_out=figures["data"]["left_out"],
    )
