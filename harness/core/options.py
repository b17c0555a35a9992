"""Typed options: an attrs field with a default, a one-line help and validators.

Every settings table, the harness's own and each subscriber's, is a frozen attrs class
whose fields are made with `option`::

    @attrs.frozen(kw_only=True)
    class LossSpikesSettings(SubscriberSettings):
        factor: float = option(3.0, "a loss above factor x its running mean is a spike", positive())

The help text is kept in the field's metadata, where the settings reference (README)
reads it. A validator raises `ValueError` with a message that names the field, what it
must be and what it got; `read_table`, which the settings loader uses for every table,
prefixes the file and the table.
"""

from __future__ import annotations

import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs

from harness.core.errors import SettingsError, shown

__all__ = [
    "HELP_KEY",
    "Validator",
    "at_least",
    "check",
    "finite",
    "help_of",
    "option",
    "positive",
    "read_table",
    "within",
]

HELP_KEY = "help"
T = TypeVar("T")
Validator = Callable[[Any, "attrs.Attribute[Any]", Any], None]


def option(default: T, help: str, *validators: Validator) -> T:
    """A settings field: `default`, one line of `help` for the reference, and `validators`."""
    if not help or "\n" in help:
        raise ValueError(f"option help must be one line of text, got {help!r}")
    field: T = attrs.field(
        default=default,
        validator=list(validators) or None,
        metadata={HELP_KEY: help},
    )
    return field


def help_of(attribute: attrs.Attribute[Any]) -> str:
    """The help text of a field made with `option` ("" for a plain attrs field)."""
    return str(attribute.metadata.get(HELP_KEY, ""))


def check(predicate: Callable[[Any], bool], expectation: str) -> Validator:
    """A validator: ``<field> must be <expectation>, got <value>`` when `predicate` is false."""

    def validate(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not predicate(value):
            raise ValueError(f"{attribute.name} must be {expectation}, got {shown(value)}")

    return validate


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def positive() -> Validator:
    return check(lambda v: _is_number(v) and v > 0 and math.isfinite(v), "positive")


def finite() -> Validator:
    return check(lambda v: _is_number(v) and math.isfinite(v), "a finite number")


def at_least(low: float) -> Validator:
    return check(lambda v: _is_number(v) and v >= low, f">= {low}")


def within(low: float, high: float, *, closed: str = "[)") -> Validator:
    """`low` to `high`; `closed` says which ends belong: ``"[]"``, ``"[)"``, ``"(]"``, ``"()"``."""
    left, right = closed[0] == "[", closed[1] == "]"

    def inside(v: Any) -> bool:
        if not _is_number(v):
            return False
        above = v >= low if left else v > low
        below = v <= high if right else v < high
        return bool(above and below)

    return check(inside, f"in {closed[0]}{low:g}, {high:g}{closed[1]}")


def _where(source: str, table: tuple[str, ...]) -> str:
    return f"{source}: [{'.'.join(table)}]" if table else f"{source}:"


def _suggest(name: str, valid: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ";"
    return f"{hint} valid: {', '.join(valid)}"


def read_table(
    cls: type[T], values: Any, source: str, table: tuple[str, ...] = (), skip: Sequence[str] = ()
) -> T:
    """A settings class from one TOML table, validated: `SettingsError` naming `source`, table and key.

    `values` is the table as TOML reads it; nested attrs classes are nested tables. An
    unknown key suggests the closest valid one; a wrong type or a value a validator
    refuses names what is allowed and what was given::

        settings.toml: [subscribers.loss_spikes].factor must be positive, got -1.0

    Fields named in `skip` are left to the caller.
    """
    if not isinstance(values, Mapping):
        raise SettingsError(f"{_where(source, table)} must be a table, got {shown(values)}")
    fields = {name: field for name, field in attrs.fields_dict(cls).items() if name not in skip}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            what = "table" if isinstance(value, Mapping) else "key"
            dotted = ".".join((*table, key))
            raise SettingsError(f"{source}: unknown {what} {shown(dotted)}" + _suggest(key, list(fields)))
        hint = hints[key]
        if attrs.has(hint):
            kwargs[key] = read_table(hint, value, source, (*table, key))
            continue
        kwargs[key] = _coerce(hint, value, source, table, key)
        validator = fields[key].validator
        if validator is not None:
            try:
                validator(None, fields[key], kwargs[key])
            except ValueError as error:
                raise SettingsError(f"{_where(source, table)}.{error}") from None
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:
        raise SettingsError(f"{_where(source, table)}: {error}") from None


def _coerce(hint: Any, value: Any, source: str, table: tuple[str, ...], key: str) -> Any:
    where = f"{_where(source, table)}.{key}"
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            listed = ", ".join(repr(a) for a in allowed)
            raise SettingsError(f"{where} must be one of {listed}, got {shown(value)}")
        return value
    if origin in (types.UnionType, typing.Union):
        near: SettingsError | None = None
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value, source, table, key)
            except SettingsError as error:
                # The option of the value's own kind says best what is wrong with it.
                near = near or (error if _same_kind(option, value) else None)
        if near is not None:
            raise near
        names = " or ".join(_type_name(o) for o in typing.get_args(hint))
        raise SettingsError(f"{where} must be {names}, got {shown(value)}")
    if origin is tuple:
        items = typing.get_args(hint)
        if items and items[0] is float:
            numbers = isinstance(value, list) and all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            )
            if not numbers or (Ellipsis not in items and len(value) != len(items)):
                counted = "numbers" if Ellipsis in items else f"{len(items)} numbers"
                raise SettingsError(f"{where} must be a list of {counted}, got {shown(value)}")
            if not all(math.isfinite(v) for v in value):
                raise SettingsError(f"{where} must hold finite numbers, got {shown(value)}")
            return tuple(float(v) for v in value)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{where} must be a list of strings, got {shown(value)}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is bool and not isinstance(value, bool):
        raise SettingsError(f"{where} must be true or false, got {shown(value)}")
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise SettingsError(f"{where} must be {_type_name(hint)}, got {shown(value)}")
    # nan and inf pass every comparison-based bound the wrong way; no setting means either.
    if isinstance(value, float) and not math.isfinite(value):
        raise SettingsError(f"{where} must be a finite number, got {value!r}")
    return value


def _same_kind(hint: Any, value: Any) -> bool:
    """Whether `value` is of the kind `hint` takes (a list for a tuple, a string for a string Literal)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        return isinstance(value, list)
    if origin is Literal:
        return any(type(allowed) is type(value) for allowed in typing.get_args(hint))
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(hint, type) and isinstance(value, hint)


def _type_name(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "a list"
    if origin is Literal:
        return " or ".join(repr(allowed) for allowed in typing.get_args(hint))
    return names.get(hint, getattr(hint, "__name__", str(hint)))
