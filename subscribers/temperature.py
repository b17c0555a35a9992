"""Fit a temperature on each validation's logits; consumes BatchEnd(validate), ValidationEpochEnd, TrainEnd.

The logits of every validation batch (those `BatchEnd` carries: no second forward pass)
are kept for the epoch; at `ValidationEpochEnd` one temperature T is fitted on them by
minimising the NLL (`harness.core.temperature`) and put in `RunContext.temperature`.
`BusCallback` writes it into the checkpoint saved after that validation, so every
checkpoint carries the T of its own weights, and the ONNX export puts the T of the
weights it exports into the model's metadata; `harness.predict` and `harness.evaluate`
divide the logits by it. At `TrainEnd` it writes ``temperature/temperature.json``: each
epoch's T with the validation NLL before and after. The sanity check is skipped. Under
DDP each rank fits on its own share of the validation set and rank zero's T is kept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import torch

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.events import BatchEnd, TrainEnd, ValidationEpochEnd
from harness.core.spec import SubscriberSettings, SubscriberSpec
from harness.core.temperature import Temperature, fit_temperature
from harness.io.artifacts import write_json

__all__ = ["SPEC", "TemperatureScaling", "TemperatureSettings"]


@attrs.frozen(kw_only=True)
class TemperatureSettings(SubscriberSettings):
    """Calibrated probabilities: a temperature fitted on each validation's logits, kept with the model."""


class TemperatureScaling:
    """Fit T on the validation logits of every epoch; the latest is the context's."""

    def __init__(self, context: RunContext, settings: TemperatureSettings | None = None) -> None:
        self.context = context
        self.settings = settings or TemperatureSettings()
        self._logits: list[torch.Tensor] = []
        self._targets: list[torch.Tensor] = []
        self.fits: list[Temperature] = []

    def connect(self, bus: Bus) -> None:
        bus.subscribe(BatchEnd, self.on_batch_end, stage="validate")
        bus.subscribe(ValidationEpochEnd, self.on_validation_epoch_end)
        bus.subscribe(TrainEnd, self.on_train_end, rank_zero_only=True)

    def on_batch_end(self, event: BatchEnd) -> None:
        if not event.sanity_check:
            self._logits.append(event.logits.detach().to("cpu", torch.float64, copy=True))
            self._targets.append(event.targets.detach().to("cpu", copy=True))

    def on_validation_epoch_end(self, event: ValidationEpochEnd) -> None:
        if event.sanity_check or not self._logits:
            return
        logits = torch.cat(self._logits).numpy()
        targets = torch.cat(self._targets).numpy().astype(np.int64)
        self._logits, self._targets = [], []
        fit = fit_temperature(logits, targets, epoch=event.epoch)
        self.fits.append(fit)
        self.context.temperature = fit

    def on_train_end(self, event: TrainEnd) -> None:
        path = write_json(
            self.context.run_dir / SPEC.name / "temperature.json",
            {
                "current": None if self.context.temperature is None else self.context.temperature.to_json(),
                "epochs": [fit.to_json() for fit in self.fits],
            },
        )
        self.context.record_artifact("temperature", path)

    def state_dict(self) -> dict[str, Any]:
        return {"fits": [fit.to_json() for fit in self.fits]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.fits = [Temperature.from_json(record) for record in state["fits"]]
        self.context.temperature = self.fits[-1] if self.fits else None


SPEC = SubscriberSpec(name="temperature", build=TemperatureScaling, settings=TemperatureSettings)
