"""What a subscriber may hand to the run's experiment trackers, without knowing which they are.

`Trackers` is implemented over Lightning's loggers by `harness.training.loggers` and set
as `RunContext.trackers` when ``[logger].kinds`` names a tracker that takes pictures or
files (TensorBoard, MLflow); it is None otherwise, and in tests that do not set one.
A subscriber writes against this protocol only, so it never imports Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

__all__ = ["Param", "Trackers"]

Param = str | int | float | bool
"""A run parameter's value, as every tracker stores it."""


class Trackers(Protocol):
    """The run's experiment trackers, as one sink."""

    def log_image(self, name: str, path: Path, step: int) -> None:
        """Log the picture at `path` (PNG or JPEG) as image `name` at optimizer step `step`."""
        ...

    def log_params(self, params: Mapping[str, Param]) -> None:
        """Log the run's parameters (flat, dotted keys: ``"model.lr"``)."""
        ...

    def log_artifact(self, path: Path) -> None:
        """Keep the file at `path` with the run (a text file where the tracker takes no files)."""
        ...
