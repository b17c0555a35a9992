"""Plugin subscribers that fail on the harness's side of the contract, for the survival tests.

`LateUnloadable` keeps a plain dict for its first two saves, then a `fractions.Fraction`
(which ``torch.load(weights_only=True)`` refuses); `BrokenAtBuild` raises while it is
built, `BrokenAtConnect` while it subscribes; `NeedsZebra` refuses data without a class
named zebra (`SettingsError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from harness.core.bus import Bus
from harness.core.context import RunContext
from harness.core.errors import SettingsError
from harness.core.events import TrainEpochEnd


class LateUnloadable:
    """A counter of epochs whose state stops being plain data at the third save."""

    def __init__(self, context: RunContext) -> None:
        self.context = context
        self.epochs = 0
        self.saves = 0

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochEnd, self.on_train_epoch_end)

    def on_train_epoch_end(self, event: TrainEpochEnd) -> None:
        self.epochs += 1

    def state_dict(self) -> dict[str, Any]:
        self.saves += 1
        if self.saves <= 2:
            return {"epochs": self.epochs}
        return {"epochs": self.epochs, "ratio": Fraction(1, 3)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.epochs = int(state["epochs"])


class BrokenAtBuild:
    """Raises while it is built, as a plugin that reads a missing file would."""

    def __init__(self, context: RunContext) -> None:
        raise FileNotFoundError("lookup.csv: no such file")

    def connect(self, bus: Bus) -> None:
        raise AssertionError("never built")


class BrokenAtConnect:
    """Raises while it subscribes."""

    def __init__(self, context: RunContext) -> None:
        self.context = context

    def connect(self, bus: Bus) -> None:
        raise RuntimeError("cannot subscribe")


class NeedsZebra:
    """Checks an option against the data when built, as `SubscriberSpec.build` should."""

    def __init__(self, context: RunContext) -> None:
        if "zebra" not in context.class_names:
            raise SettingsError(f"class 'zebra' is not among the data's classes {list(context.class_names)}")

    def connect(self, bus: Bus) -> None:
        bus.subscribe(TrainEpochEnd, lambda event: None)
