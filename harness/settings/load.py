"""Reading and writing settings: `settings.toml` and ``--set`` overrides into a typed tree.

The tree mirrors the TOML tables one to one; it is validated once, at load, and every
error names the source, the table, the key, what is allowed and what was given::

    settings.toml: [subscribers.ema].decay must be in (0, 1), got 1.5

Unknown tables and keys are errors that suggest the closest valid name. The
``[subscribers.<name>]`` tables are checked against the settings class of the spec that
owns the name: the built-ins and the plugins ``[run].plugins`` names.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import tomli_w

from harness.core.errors import SettingsError, cut, shown
from harness.core.options import read_table
from harness.core.spec import AnySpec, SubscriberSettings
from harness.settings.plugins import resolve_specs
from harness.settings.tree import Settings

__all__ = ["load_settings", "parse_override", "read_toml", "settings_to_toml", "tables"]


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The TOML table in `path`; a missing, unreadable or malformed file is one `SettingsError`.

    `what` names the file in the message ("settings file", "search space").
    """
    source = str(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"{source}: {what} not found") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise SettingsError(f"{source}: not valid TOML: {error}") from None
    except OSError as error:
        raise SettingsError(f"{source}: cannot read the {what} ({error.strerror})") from None


def load_settings(
    path: Path | str | None = None,
    overrides: Sequence[str] = (),
    *,
    builtins: Sequence[AnySpec] | None = None,
    other_tables: Literal["error", "ignore"] = "error",
    plugins: Sequence[str] | None = None,
) -> Settings:
    """Read `path` (defaults everywhere when None), then apply ``section.key=value`` overrides.

    `builtins` are the built-in subscriber specs (default: the installed ones, see
    `harness.settings.plugins`). A ``[subscribers.<name>]`` table that no spec owns is an
    error, or, with ``other_tables="ignore"``, left out (a replay of a run whose plugins are
    not importable here); `plugins`, when given, replaces the file's ``[run].plugins`` before
    any is imported. Raises `SettingsError` naming the file or the override, the key,
    and what is allowed.
    """
    source = "defaults"
    tree: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        source = str(path)
        tree = read_toml(path, "settings file")
    if plugins is not None:
        tree = _with(tree, ("run", "plugins"), list(plugins), source)
    settings = _build_settings(tree, source, builtins, other_tables)
    for override in overrides:
        keys, value = parse_override(override)
        source = f"--set {cut(override)}"
        tree = _with(tree, keys, value, source)
        settings = _build_settings(tree, source, builtins, other_tables)
    return settings


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """Split ``section.key=value``; the value is read as TOML, else taken as a string."""
    dotted, sep, raw = text.partition("=")
    keys = tuple(part.strip() for part in dotted.split("."))
    if not sep or len(keys) < 2 or not all(keys):
        raise SettingsError(f"--set {cut(text)}: expected section.key=value, e.g. data.batch_size=32")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return keys, value


def tables(settings: Settings) -> dict[str, Any]:
    """The settings as nested plain tables, as TOML holds them."""

    def plain(obj: Any) -> Any:
        if attrs.has(type(obj)):
            return {f.name: plain(getattr(obj, f.name)) for f in attrs.fields(type(obj))}
        if isinstance(obj, Mapping):
            return {str(k): plain(v) for k, v in obj.items()}
        if isinstance(obj, tuple):
            return [plain(v) for v in obj]
        return obj

    result: dict[str, Any] = plain(settings)
    return result


def settings_to_toml(settings: Settings) -> str:
    """The resolved settings as a TOML document that `load_settings` reads back."""
    return tomli_w.dumps(tables(settings))


def _with(tree: Mapping[str, Any], keys: tuple[str, ...], value: Any, source: str) -> dict[str, Any]:
    """A copy of `tree` with `keys` set to `value`."""
    result = copy.deepcopy(dict(tree))
    node = result
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise SettingsError(f"{source}: {'.'.join(keys[: depth + 1])!r} is a value, not a table")
        node = child
    if isinstance(node.get(keys[-1]), dict):
        raise SettingsError(f"{source}: [{'.'.join(keys)}] is a table; name one of its keys")
    node[keys[-1]] = value
    return result


def _build_settings(
    tree: Mapping[str, Any],
    source: str,
    builtins: Sequence[AnySpec] | None,
    other_tables: Literal["error", "ignore"] = "error",
) -> Settings:
    tree = dict(tree)
    subscribers = tree.pop("subscribers", {})
    settings = read_table(Settings, tree, source, (), skip=("subscribers",))
    specs = resolve_specs(settings.run.plugins, builtins, where=f"{source}: [run].plugins")
    if not isinstance(subscribers, Mapping):
        raise SettingsError(f"{source}: [subscribers] must be a table, got {shown(subscribers)}")
    for name in subscribers:
        if name not in specs and other_tables == "error":
            valid = list(specs)
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            plugin = "" if close else "; a plugin's table needs the plugin named in [run].plugins"
            table = shown(f"subscribers.{name}")
            raise SettingsError(f"{source}: unknown table {table}{hint}{plugin}; valid: {', '.join(valid)}")
    built: dict[str, SubscriberSettings] = {
        name: read_table(spec.settings, subscribers.get(name, {}), source, ("subscribers", name))
        for name, spec in specs.items()
    }
    return attrs.evolve(settings, subscribers=built)
