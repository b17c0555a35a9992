"""Typed options: an attrs field with a default, a one-line help and validators.

Every settings table, the harness's own and each subscriber's, is a frozen attrs class
whose fields are made with `option`::

    @attrs.frozen(kw_only=True)
    class LossSpikesSettings(SubscriberSettings):
        factor: float = option(3.0, "a loss above factor x its running mean is a spike", positive())

The help text is kept in the field's metadata, where the settings reference (README)
reads it. A validator raises `ValueError` with a message that names the field, what it
must be and what it got; the settings loader prefixes the file and the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from harness.core.errors import shown

__all__ = ["HELP_KEY", "Validator", "at_least", "check", "finite", "help_of", "option", "positive", "within"]

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
