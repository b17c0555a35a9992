"""The README's references, generated: settings (from the tree and the specs) and events.

``python -m harness.settings.reference`` prints both; the README holds this output and a
test keeps the two identical, so the documentation cannot drift from the code. A
settings row comes from an `harness.core.options.option` (type, default, help); an event
row from the event class (its fields and types, and its docstring's first line).
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any, Literal

import attrs

from harness.core.events import EVENT_TYPES, Event
from harness.core.options import help_of
from harness.core.spec import AnySpec
from harness.settings.plugins import builtin_specs
from harness.settings.tree import Settings

__all__ = ["event_reference_markdown", "reference_markdown"]


def _allowed(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin is Literal:
        return " / ".join(f"`{value}`" for value in typing.get_args(hint))
    if origin is tuple:
        kinds = {arg for arg in typing.get_args(hint) if arg is not Ellipsis}
        return "list of numbers" if kinds <= {float, int} else "list of strings"
    if origin is not None:
        return " or ".join(_allowed(arg) for arg in typing.get_args(hint))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(hint, str(hint))


def _default(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[]`" if not value else f"`{list(value)}`"
    return f"`{value}`"


def _table(lines: list[str], cls: type[Any], title: str, description: str) -> None:
    instance = cls()
    hints = typing.get_type_hints(cls)
    rows = [f for f in attrs.fields(cls) if not attrs.has(hints[f.name]) and f.name != "subscribers"]
    lines.extend(["", f"`[{title}]`: {description}", ""])
    lines.extend(["| key | type | default | meaning |", "|---|---|---|---|"])
    for field in rows:
        value = _default(getattr(instance, field.name))
        lines.append(f"| `{field.name}` | {_allowed(hints[field.name])} | {value} | {help_of(field)} |")


def reference_markdown(specs: Sequence[AnySpec] | None = None) -> str:
    """Every table and key of `settings.toml` with its type, default and meaning."""
    lines = ["## Settings reference", ""]
    lines.append("Every key is optional. Unknown keys are errors, with the closest valid name suggested.")
    hints = typing.get_type_hints(Settings)
    for field in attrs.fields(Settings):
        cls = hints[field.name]
        if attrs.has(cls):
            doc = (cls.__doc__ or "").strip().splitlines()[0]
            _table(lines, cls, field.name, doc.split(": ", 1)[-1])
    for spec in builtin_specs() if specs is None else specs:
        _table(lines, spec.settings, f"subscribers.{spec.name}", spec.description.split(": ", 1)[-1])
    return "\n".join(lines) + "\n"


def _type_name(hint: Any) -> str:
    text = str(hint) if typing.get_origin(hint) is not None else getattr(hint, "__name__", str(hint))
    text = text.replace("typing.", "").replace("collections.abc.", "").replace("torch.", "")
    return f"`{text}`".replace(" | ", "` or `")


def event_reference_markdown() -> str:
    """Every event of `harness.core.events`, in firing order, with its fields and meaning."""
    lines = ["## Event reference", ""]
    lines.append(
        "Every event also carries `epoch` (counted from 0) and `global_step` (optimizer steps "
        "taken so far). Tensors are detached; `harness/core/events.py` draws where each fires."
    )
    lines.extend(
        [
            "",
            "A `metrics` mapping holds what was measured, under stable names (never Lightning's "
            "raw keys): `train/<name>` is the epoch's mean (`train/loss`), `val/<name>` and "
            "`test/<name>` the pass's value (`val/acc_top1`, `val/loss`), `lr` the learning rate "
            "the epoch started with (`lr/<i>` for parameter group `i` > 0). `TrainEpochEnd` holds "
            "validation values only when that epoch validated (`validated`); `TrainEnd` holds the "
            "last values measured.",
        ]
    )
    lines.extend(["", "| event | fields | meaning |", "|---|---|---|"])
    common = {field.name for field in attrs.fields(Event)}
    for cls in EVENT_TYPES:
        hints = typing.get_type_hints(cls)
        fields = [
            f"`{f.name}` {_type_name(hints[f.name])}" for f in attrs.fields(cls) if f.name not in common
        ]
        doc = (cls.__doc__ or "").strip().splitlines()[0]
        lines.append(f"| `{cls.__name__}` | {'<br>'.join(fields) or '-'} | {doc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")
    print()
    print(event_reference_markdown(), end="")
