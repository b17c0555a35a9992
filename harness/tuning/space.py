"""A sweep's search space, written in TOML, checked against the settings before any trial runs.

One line per settings key, its distribution in an inline table::

    "model.lr" = {log_uniform = [1e-4, 1e-2]}
    "model.weight_decay" = {uniform = [0.0, 0.1]}
    "data.batch_size" = {int = [16, 64]}
    "augment.hflip" = {choice = [0, 0.5]}

`load_space` reads the file and loads the settings once with each bound and each choice
set (``--set key=value``), so a misspelt key, a value out of a setting's range or a wrong
type is a `SettingsError` naming the space file and the key before anything trains.
Optuna is not imported here: `Dimension.suggest` takes any object with Optuna's
``suggest_float`` / ``suggest_int`` / ``suggest_categorical``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, Protocol

import attrs

from harness.core.errors import SettingsError
from harness.settings import load_settings
from harness.settings.load import read_toml

__all__ = ["KINDS", "Dimension", "Space", "Suggester", "load_space", "override"]

Value = bool | int | float | str
Kind = Literal["log_uniform", "uniform", "int", "choice"]
KINDS: tuple[Kind, ...] = ("log_uniform", "uniform", "int", "choice")


class Suggester(Protocol):
    """What `Dimension.suggest` asks of an Optuna trial."""

    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_int(self, name: str, low: int, high: int) -> int: ...

    def suggest_categorical(self, name: str, choices: Sequence[Value | None]) -> Value | None: ...


def override(key: str, value: Value) -> str:
    """``key=value`` as ``--set`` reads it (the value written as TOML)."""
    return f"{key}={json.dumps(value)}"


@attrs.frozen(kw_only=True)
class Dimension:
    """One settings key and the distribution its values are drawn from."""

    key: str
    kind: Kind
    values: tuple[Value, ...]
    """[low, high] for the ranges, every option for "choice"."""

    def suggest(self, trial: Suggester) -> Value:
        """Draw this key's value for `trial`."""
        if self.kind == "choice":
            value = trial.suggest_categorical(self.key, list(self.values))
            assert value is not None  # the choices hold no None
            return value
        low, high = self.values
        if self.kind == "int":
            return trial.suggest_int(self.key, int(low), int(high))
        return trial.suggest_float(self.key, float(low), float(high), log=self.kind == "log_uniform")


@attrs.frozen(kw_only=True)
class Space:
    """The dimensions of a sweep, in the file's order."""

    source: str
    dimensions: tuple[Dimension, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(d.key for d in self.dimensions)

    def describe(self) -> dict[str, dict[str, list[Value]]]:
        """The space as the file wrote it (what the study keeps, to refuse another space on resume)."""
        return {d.key: {d.kind: list(d.values)} for d in self.dimensions}


def _dimension(source: str, key: str, spec: object) -> Dimension:
    where = f"{source}: {key!r}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SettingsError(
            f"{where} must be an inline table of one distribution ({', '.join(KINDS)}), got {spec!r}"
        )
    ((kind, values),) = spec.items()
    if kind not in KINDS:
        raise SettingsError(f"{where}: unknown distribution {kind!r}; one of {', '.join(KINDS)}")
    if not isinstance(values, list) or not values:
        raise SettingsError(f"{where}: {kind} takes a non-empty list, got {values!r}")
    if kind == "choice":
        if not all(isinstance(v, bool | int | float | str) for v in values) or len(
            set(map(repr, values))
        ) < len(values):
            raise SettingsError(
                f"{where}: choice takes distinct numbers, strings or booleans, got {values!r}"
            )
        return Dimension(key=key, kind=kind, values=tuple(values))
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    if len(values) != 2 or not numbers or not values[0] < values[1]:
        raise SettingsError(f"{where}: {kind} takes [low, high] with low < high, got {values!r}")
    if kind == "int" and not all(isinstance(v, int) for v in values):
        raise SettingsError(f"{where}: int takes two integers, got {values!r}")
    if kind == "log_uniform" and values[0] <= 0:
        raise SettingsError(f"{where}: log_uniform needs low > 0, got {values!r}")
    return Dimension(key=key, kind=kind, values=tuple(values))


def load_space(path: Path, settings: Path | None, overrides: Sequence[str]) -> Space:
    """Read `path` and check every key and value against the settings (see the module)."""
    source = str(path)
    tree = read_toml(path, "search space file")
    if not tree:
        raise SettingsError(
            f'{source}: no keys; write one per setting, e.g. "model.lr" = {{log_uniform = [1e-4, 1e-2]}}'
        )
    space = Space(source=source, dimensions=tuple(_dimension(source, k, v) for k, v in tree.items()))
    for dimension in space.dimensions:
        fixed = [o for o in overrides if o.partition("=")[0].strip() == dimension.key]
        if fixed:
            raise SettingsError(f"{source}: {dimension.key!r} is also fixed by --set {fixed[0]}; drop one")
        for value in dimension.values:
            try:
                load_settings(settings, [*overrides, override(dimension.key, value)])
            except SettingsError as error:
                raise SettingsError(f"{source}: {dimension.key!r} = {value!r}: {error}") from None
    return space
