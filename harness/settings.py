"""Settings: `settings.toml` and ``--set`` overrides, parsed into a typed attrs tree.

The tree mirrors the TOML tables one to one; it is validated once, at load, and every
error names the source, the key, what is allowed and what was given::

    settings.toml: [subscribers.ema].decay must be in (0, 1), got 1.5

Unknown tables and keys are errors that suggest the closest valid name.
"""

from __future__ import annotations

import difflib
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs

from harness.errors import SettingsError

__all__ = [
    "CheckpointSettings",
    "ConfusionMatrixSettings",
    "DataSettings",
    "DatasetStatsSettings",
    "EarlyStoppingSettings",
    "EMASettings",
    "ModelInfoSettings",
    "ModelSettings",
    "OnnxExportSettings",
    "PlotsSettings",
    "RunSettings",
    "SamplerTrackingSettings",
    "SamplesSettings",
    "Settings",
    "SubscriberSettings",
    "SubscribersSettings",
    "TrainerSettings",
    "load_settings",
    "parse_override",
    "settings_to_toml",
]

T = TypeVar("T")
OnError = Literal["raise", "isolate"]
_Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def _check(predicate: Callable[[Any], bool], expectation: str) -> _Validator:
    def validate(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not predicate(value):
            raise ValueError(f"{attribute.name} must be {expectation}, got {value!r}")

    return validate


def _positive() -> _Validator:
    return _check(lambda v: v > 0, "positive")


def _at_least(low: float) -> _Validator:
    return _check(lambda v: v >= low, f">= {low}")


def _open_unit() -> _Validator:
    return _check(lambda v: 0 < v < 1, "in (0, 1)")


def _batches_limit() -> _Validator:
    return _check(
        lambda v: (isinstance(v, int) and v > 0) or (isinstance(v, float) and 0 < v <= 1),
        "a fraction in (0, 1.0] or a whole number of batches",
    )


def _positive_or_auto() -> _Validator:
    return _check(lambda v: v == "auto" or (isinstance(v, int) and v > 0), 'a positive integer or "auto"')


@attrs.frozen(kw_only=True)
class RunSettings:
    """[run]: where the run directory goes and what seeds it."""

    name: str = attrs.field(default="digits", validator=_check(bool, "a non-empty name"))
    output_dir: str = "runs"
    seed: int = 0
    plugins: tuple[str, ...] = ()
    plugins_on_error: OnError = "raise"
    record_events: bool = True


@attrs.frozen(kw_only=True)
class DataSettings:
    """[data]: an ImageFolder tree, or "" for the embedded digits set."""

    root: str = ""
    image_size: int = attrs.field(default=32, validator=_at_least(8))
    batch_size: int = attrs.field(default=64, validator=_positive())
    val_fraction: float = attrs.field(default=0.2, validator=_open_unit())
    balanced: bool = True
    num_workers: int = attrs.field(default=0, validator=_at_least(0))
    on_corrupt: Literal["stop", "skip"] = "stop"


@attrs.frozen(kw_only=True)
class ModelSettings:
    """[model]: a torchvision architecture, randomly initialised or from a local file."""

    arch: str = "resnet18"
    lr: float = attrs.field(default=0.05, validator=_positive())
    weight_decay: float = attrs.field(default=5e-4, validator=_at_least(0))
    optimizer: Literal["sgd", "adamw"] = "sgd"
    scheduler: Literal["cosine", "none"] = "cosine"
    label_smoothing: float = attrs.field(default=0.0, validator=_check(lambda v: 0 <= v < 1, "in [0, 1)"))
    weights: str = ""


@attrs.frozen(kw_only=True)
class TrainerSettings:
    """[trainer]: what Lightning's Trainer is given."""

    max_epochs: int = attrs.field(default=8, validator=_positive())
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int | str = attrs.field(default="auto", validator=_positive_or_auto())
    strategy: Literal["auto", "ddp", "ddp_spawn"] = "auto"
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "bf16-true", "64-true"] = "32-true"
    resume: str = ""
    accumulate_grad_batches: int = attrs.field(default=1, validator=_positive())
    gradient_clip_val: float = attrs.field(default=0.0, validator=_at_least(0))
    limit_train_batches: int | float = attrs.field(default=1.0, validator=_batches_limit())
    limit_val_batches: int | float = attrs.field(default=1.0, validator=_batches_limit())
    num_sanity_val_steps: int = attrs.field(default=2, validator=_at_least(0))
    progress_bar: bool = True
    log_every_n_steps: int = attrs.field(default=10, validator=_positive())


@attrs.frozen(kw_only=True)
class CheckpointSettings:
    """[checkpoint]: Lightning's ModelCheckpoint."""

    enabled: bool = True
    monitor: str = "val/acc_top1"
    mode: Literal["max", "min"] = "max"
    save_top_k: int = attrs.field(default=3, validator=_at_least(-1))
    save_last: bool = True


@attrs.frozen(kw_only=True)
class EarlyStoppingSettings:
    """[early_stopping]: Lightning's EarlyStopping on the checkpoint's monitor."""

    enabled: bool = False
    patience: int = attrs.field(default=5, validator=_positive())
    min_delta: float = attrs.field(default=0.0, validator=_at_least(0))


@attrs.frozen(kw_only=True)
class SubscriberSettings:
    """What every [subscribers.<name>] table has."""

    enabled: bool = True
    on_error: OnError = "isolate"


@attrs.frozen(kw_only=True)
class EMASettings(SubscriberSettings):
    """[subscribers.ema]: exponential moving average of the weights.

    The average is updated after optimizer step ``s`` (counted from 1) when
    ``s >= start_step`` and ``s % update_every == 0``. The first update copies the weights;
    with `warmup`, update ``n + 1`` uses ``min(decay, 1 - (1 + n / warmup_gamma) ** -warmup_power)``.
    """

    on_error: OnError = "raise"
    decay: float = attrs.field(default=0.999, validator=_open_unit())
    warmup: bool = True
    warmup_gamma: float = attrs.field(default=1.0, validator=_positive())
    warmup_power: float = attrs.field(default=0.75, validator=_positive())
    update_every: int = attrs.field(default=1, validator=_positive())
    start_step: int = attrs.field(default=0, validator=_at_least(0))


@attrs.frozen(kw_only=True)
class OnnxExportSettings(SubscriberSettings):
    """[subscribers.onnx_export]: the best validated weights as one ONNX file.

    `opset`: the ONNX opset (18 is the dynamo exporter's minimum). `tolerance`: the
    largest logit difference ONNX Runtime may show against PyTorch, scaled by the largest
    |logit| when that exceeds 1. `parity_batch`: validation images kept for that check.
    """

    on_error: OnError = "raise"
    opset: int = attrs.field(default=18, validator=_at_least(18))
    tolerance: float = attrs.field(default=1e-4, validator=_positive())
    parity_batch: int = attrs.field(default=8, validator=_at_least(2))


@attrs.frozen(kw_only=True)
class ConfusionMatrixSettings(SubscriberSettings):
    """[subscribers.confusion_matrix]: a confusion matrix per validation epoch."""

    normalize: Literal["none", "true", "pred"] = "true"


@attrs.frozen(kw_only=True)
class PlotsSettings(SubscriberSettings):
    """[subscribers.plots]: training history, refreshed every epoch."""


@attrs.frozen(kw_only=True)
class SamplesSettings(SubscriberSettings):
    """[subscribers.samples]: a grid of validation images with predictions."""

    count: int = attrs.field(default=16, validator=_positive())
    seed: int = 0


@attrs.frozen(kw_only=True)
class SamplerTrackingSettings(SubscriberSettings):
    """[subscribers.sampler_tracking]: what the training sampler drew, per class."""

    max_table_rows: int = attrs.field(default=30, validator=_positive())


@attrs.frozen(kw_only=True)
class DatasetStatsSettings(SubscriberSettings):
    """[subscribers.dataset_stats]: images per class and split, at fit start."""

    min_images: int = attrs.field(default=5, validator=_at_least(1))
    size_sample: int = attrs.field(default=200, validator=_positive())
    max_table_rows: int = attrs.field(default=50, validator=_positive())


@attrs.frozen(kw_only=True)
class ModelInfoSettings(SubscriberSettings):
    """[subscribers.model_info]: parameters, size and FLOPs, at fit start."""

    count_flops: bool = True


@attrs.frozen(kw_only=True)
class SubscribersSettings:
    """[subscribers.*]: one table per module in `subscribers/`."""

    ema: EMASettings = attrs.Factory(EMASettings)
    onnx_export: OnnxExportSettings = attrs.Factory(OnnxExportSettings)
    confusion_matrix: ConfusionMatrixSettings = attrs.Factory(ConfusionMatrixSettings)
    plots: PlotsSettings = attrs.Factory(PlotsSettings)
    samples: SamplesSettings = attrs.Factory(SamplesSettings)
    sampler_tracking: SamplerTrackingSettings = attrs.Factory(SamplerTrackingSettings)
    dataset_stats: DatasetStatsSettings = attrs.Factory(DatasetStatsSettings)
    model_info: ModelInfoSettings = attrs.Factory(ModelInfoSettings)


@attrs.frozen(kw_only=True)
class Settings:
    """The whole settings file."""

    run: RunSettings = attrs.Factory(RunSettings)
    data: DataSettings = attrs.Factory(DataSettings)
    model: ModelSettings = attrs.Factory(ModelSettings)
    trainer: TrainerSettings = attrs.Factory(TrainerSettings)
    checkpoint: CheckpointSettings = attrs.Factory(CheckpointSettings)
    early_stopping: EarlyStoppingSettings = attrs.Factory(EarlyStoppingSettings)
    subscribers: SubscribersSettings = attrs.Factory(SubscribersSettings)


def load_settings(path: Path | str | None = None, overrides: Sequence[str] = ()) -> Settings:
    """Read `path` (defaults everywhere when None), apply ``section.key=value`` overrides.

    Raises `SettingsError` naming the file or the override, the key, and what is allowed.
    """
    source = "defaults"
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            tree = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError(f"{source}: settings file not found") from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError(f"{source}: not valid TOML: {error}") from None
    settings = _build(Settings, tree, source, ())
    for override in overrides:
        keys, value = parse_override(override)
        settings = _replace(settings, keys, value, f"--set {override}")
    return settings


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``section.key=value``; the value is read as TOML, else taken as a string."""
    dotted, sep, raw = text.partition("=")
    keys = tuple(part.strip() for part in dotted.split("."))
    if not sep or len(keys) < 2 or not all(keys):
        raise SettingsError(f"--set {text}: expected section.key=value, e.g. data.batch_size=32")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return keys, value


def settings_to_toml(settings: Settings) -> str:
    """The resolved settings as a TOML document that `load_settings` reads back."""
    lines: list[str] = []

    def emit(obj: Any, table: tuple[str, ...]) -> None:
        hints = typing.get_type_hints(type(obj))
        scalars = [name for name in attrs.fields_dict(type(obj)) if not attrs.has(hints[name])]
        nested = [name for name in attrs.fields_dict(type(obj)) if attrs.has(hints[name])]
        if scalars:
            lines.append(f"[{'.'.join(table)}]")
            lines.extend(f"{name} = {_toml_value(getattr(obj, name))}" for name in scalars)
            lines.append("")
        for name in nested:
            emit(getattr(obj, name), (*table, name))

    emit(settings, ())
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "[" + ", ".join(_toml_value(v) for v in value) + "]"


def _where(source: str, table: tuple[str, ...]) -> str:
    return f"{source}: [{'.'.join(table)}]" if table else f"{source}:"


def _suggest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return f"{hint} valid: {', '.join(valid)}"


def _build(cls: type[T], values: Any, source: str, table: tuple[str, ...]) -> T:
    if not isinstance(values, Mapping):
        raise SettingsError(f"{_where(source, table)} must be a table, got {values!r}")
    fields = attrs.fields_dict(cls)  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            what = "table" if isinstance(value, Mapping) else "key"
            dotted = ".".join((*table, key))
            raise SettingsError(f"{source}: unknown {what} {dotted!r}" + _suggest(key, list(fields)))
        hint = hints[key]
        if attrs.has(hint):
            kwargs[key] = _build(hint, value, source, (*table, key))
        else:
            kwargs[key] = _coerce(hint, value, source, table, key)
            validator = fields[key].validator
            if validator is not None:
                try:
                    validator(None, fields[key], kwargs[key])
                except ValueError as error:
                    raise SettingsError(f"{_where(source, table)}.{error}") from None
    return cls(**kwargs)


def _replace(settings: T, keys: tuple[str, ...], value: Any, source: str, table: tuple[str, ...] = ()) -> T:
    head, rest = keys[0], keys[1:]
    fields = attrs.fields_dict(type(settings))  # type: ignore[arg-type]
    if head not in fields:
        dotted = ".".join((*table, head))
        raise SettingsError(f"{source}: unknown key {dotted!r}" + _suggest(head, list(fields)))
    current = getattr(settings, head)
    if rest:
        if not attrs.has(type(current)):
            raise SettingsError(f"{source}: {head!r} is a value, not a table")
        new = _replace(current, rest, value, source, (*table, head))
    elif attrs.has(type(current)):
        raise SettingsError(f"{source}: [{'.'.join((*table, head))}] is a table; name one of its keys")
    else:
        new = getattr(_build(type(settings), {head: value}, source, table), head)
    return attrs.evolve(settings, **{head: new})  # type: ignore[misc]


def _coerce(hint: Any, value: Any, source: str, table: tuple[str, ...], key: str) -> Any:
    where = f"{_where(source, table)}.{key}"
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            listed = ", ".join(repr(a) for a in allowed)
            raise SettingsError(f"{where} must be one of {listed}, got {value!r}")
        return value
    if origin in (types.UnionType, typing.Union):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value, source, table, key)
            except SettingsError:
                continue
        names = " or ".join(_type_name(o) for o in typing.get_args(hint))
        raise SettingsError(f"{where} must be {names}, got {value!r}")
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where} must be a list of strings, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise SettingsError(f"{where} must be true or false, got {value!r}")
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SettingsError(f"{where} must be {_type_name(hint)}, got {value!r}")
    return value


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
