"""Export the best validated weights as one parity-checked ONNX file; consumes BatchEnd(validate), TrainEnd.

At `TrainEnd` the weights come from the best checkpoint when there is one (its
``state_dict`` holds the weights that were validated: the EMA subscriber writes the
averaged ones there), otherwise from the model as `TrainLoopEnd` left it. A CPU copy is
exported with torch's dynamo exporter and checked against PyTorch in ONNX Runtime on
validation images kept from `BatchEnd(stage="validate")`. It publishes nothing; it
writes, under ``<run_dir>/onnx_export/``:

- ``model.onnx``: one self-contained file, input ``input`` (N x 3 x H x W, float32,
  dynamic N), output ``logits``; class names, preprocessing and the source checkpoint
  are in its ``metadata_props`` (see `harness.onnx.card`);
- ``labels.json`` and ``preprocessing.json``: the same, beside the model;
- ``parity.json``: the largest logit difference and the argmax agreement;
- with ``quantize = ["int8"]`` (or ``"fp16"``), ``model.int8.onnx`` (``model.fp16.onnx``)
  when it passes the accuracy gate (`harness.onnx.quantize`), and the gate's figures in
  ``parity.json`` either way. A refused model is a warning naming the classes that lost
  accuracy, not a failure: the float model stands.

The model carries the temperature of its weights (from the checkpoint, else the
context's, see the `temperature` subscriber) and whether flips change the class.

A failed export or parity check raises `ExportError` naming the cause and the checkpoint
to export from later with ``python -m harness.export``; no model file is left behind.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import attrs
import torch

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.errors import ExportError
from harness.core.events import BatchEnd, TrainEnd
from harness.core.layout import ONNX_EXPORT
from harness.core.options import at_least, check, finite, option, positive
from harness.core.spec import SubscriberSettings, SubscriberSpec
from harness.onnx.card import ExportSource

__all__ = ["SPEC", "OnnxExport", "OnnxExportSettings"]

log = logging.getLogger("harness")
QUANTIZE_KINDS = ("int8", "fp16")


def _installable(
    _instance: object, attribute: attrs.Attribute[tuple[str, ...]], value: tuple[str, ...]
) -> None:
    if "fp16" in value and importlib.util.find_spec("onnxconverter_common") is None:
        raise ValueError(
            f'{attribute.name} asks for "fp16", which needs onnxconverter-common: pip install -e ".[fp16]"'
        )


@attrs.frozen(kw_only=True)
class OnnxExportSettings(SubscriberSettings):
    """The best validated weights as one parity-checked ONNX file, when training ends."""

    opset: int = option(18, "ONNX opset (the dynamo exporter's minimum is 18)", at_least(18))
    tolerance: float = option(
        1e-4, "logit difference allowed, times max(1, largest logit magnitude)", positive()
    )
    parity_batch: int = option(8, "validation images used by the parity check", at_least(2))
    quantize: tuple[str, ...] = option(
        (),
        '`"int8"` (onnxruntime static quantization), `"fp16"` (extra `.[fp16]`): kept if they pass the gate',
        check(
            lambda v: all(k in QUANTIZE_KINDS for k in v) and len(set(v)) == len(v),
            f"a list of distinct names from {list(QUANTIZE_KINDS)}",
        ),
        _installable,
    )
    max_drop: float = option(
        1.0, "points of validation top-1 a quantized model may lose", finite(), at_least(0)
    )
    max_class_drop: float = option(
        5.0, "points of validation recall any one class may lose to quantization", finite(), at_least(0)
    )
    calibration_images: int = option(100, "training images (seeded sample) that calibrate int8", at_least(1))
    calibration_seed: int = option(0, "seed of the calibration sample")


class OnnxExport:
    """Write ``onnx_export/model.onnx`` from the best validated weights when training ends."""

    def __init__(self, context: RunContext, settings: OnnxExportSettings | None = None) -> None:
        self.context = context
        self.settings = settings or OnnxExportSettings()
        self._images: list[torch.Tensor] = []

    @property
    def directory(self) -> Path:
        return self.context.layout.folder(SPEC.name)

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="validate", rank_zero_only=True)
        bus.subscribe(TrainEnd, self.on_train_end, rank_zero_only=True)

    def on_batch_end(self, event: BatchEnd) -> None:
        """Keep the first `parity_batch` validation images, on the CPU, for the parity check."""
        wanted = self.settings.parity_batch - sum(len(kept) for kept in self._images)
        if wanted > 0:
            self._images.append(event.inputs[:wanted].detach().to("cpu", torch.float32, copy=True))

    def on_train_end(self, event: TrainEnd) -> None:
        from harness.onnx.bundle import PARITY_FILE, export_bundle, read_checkpoint

        context = self.context
        model = context.require_model()
        state_dict, source = None, self._memory_source(event)
        temperature = context.temperature
        best = context.best_checkpoint
        if best is not None and best.is_file():
            checkpoint = read_checkpoint(best)
            state_dict, temperature = checkpoint.state_dict, checkpoint.temperature
            source = ExportSource(
                checkpoint=str(best),
                epoch=checkpoint.epoch,
                global_step=checkpoint.global_step,
                monitor=context.monitor,
                score=context.best_score if context.best_score is not None else checkpoint.score,
            )
        try:
            result = export_bundle(
                model,
                state_dict,
                class_names=context.class_names,
                preprocessing=context.preprocessing,
                source=source,
                images=torch.cat(self._images) if self._images else None,
                directory=self.directory,
                opset=self.settings.opset,
                tolerance=self.settings.tolerance,
                temperature=temperature,
                flips_change_class=context.flips_change_class,
            )
        except ExportError as error:
            if (self.directory / PARITY_FILE).is_file():
                context.record_artifact("onnx_parity", self.directory / PARITY_FILE)
            raise ExportError(f"{error}. {self._later(best)}") from error
        context.record_artifact("onnx_model", result.model)
        context.record_artifact("onnx_parity", result.parity_file)
        context.record_artifact("onnx_labels", result.labels)
        context.record_artifact("onnx_preprocessing", result.preprocessing)
        if self.settings.quantize:
            self._quantize(result.model)

    def _quantize(self, model: Path) -> None:
        from harness.onnx.quantize import KINDS, quantize_run_model

        data, settings = self.context.data, self.settings
        if data is None:
            raise ExportError("quantization needs the run's images, and the run context names none")
        records = quantize_run_model(
            model,
            train=data.train,
            val=data.val,
            preprocessing=self.context.preprocessing,
            class_names=self.context.class_names,
            kinds=[kind for kind in KINDS if kind in settings.quantize],
            calibration_images=settings.calibration_images,
            seed=settings.calibration_seed,
            max_drop=settings.max_drop,
            max_class_drop=settings.max_class_drop,
        )
        for record in records:
            if record.path is not None:
                self.context.record_artifact(f"onnx_{record.kind}", Path(record.path))
                log.info("%s", record.describe())
            else:
                log.warning("%s", record.describe())

    def _memory_source(self, event: TrainEnd) -> ExportSource:
        monitor = self.context.monitor
        score = event.metrics.get(monitor)
        return ExportSource(
            checkpoint=None,
            epoch=event.epoch,
            global_step=event.global_step,
            monitor=monitor if score is not None else None,
            score=score,
        )

    def _later(self, best: Path | None) -> str:
        if best is None or not best.is_file():
            return "No checkpoint was saved to export from later; enable [checkpoint] to keep one"
        return f"The checkpoint is untouched; export it later with `python -m harness.export {best}`"


def _build(context: RunContext, settings: OnnxExportSettings) -> OnnxExport:
    # onnx, onnxscript and onnxruntime load here, when the subscriber is attached, not at import.
    import harness.onnx.bundle  # noqa: F401

    return OnnxExport(context, settings)


SPEC = SubscriberSpec(name=ONNX_EXPORT, build=_build, settings=OnnxExportSettings)
