"""Which subscribers a run can have: the built-in specs and the plugins `[run].plugins` names.

Built-ins come from the ``harness.builtins`` entry-point group, where an installed
distribution advertises a sequence of specs in attach order (the harness advertises
``subscribers:BUILTIN``), so this package never imports a subscriber. A plugin is named
in ``[run].plugins`` as ``package.module:NAME`` (a `SubscriberSpec`, or a subscriber class,
which may carry one as its ``spec`` attribute; the module is imported from ``sys.path``,
the current directory first under ``python -m harness.run`` and ``harness train``
alike), or by the name of an entry point in the ``harness.subscribers`` group:
installed is not enabled, only a named plugin is attached.
"""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from harness.core.errors import SettingsError
from harness.core.spec import AnySpec, SubscriberSpec, plain_spec

__all__ = ["BUILTINS_GROUP", "PLUGINS_GROUP", "builtin_specs", "resolve_plugin", "resolve_specs"]

BUILTINS_GROUP = "harness.builtins"
PLUGINS_GROUP = "harness.subscribers"


def builtin_specs() -> tuple[AnySpec, ...]:
    """The specs every installed ``harness.builtins`` entry point lists, in their order."""
    specs: list[AnySpec] = []
    for entry in sorted(metadata.entry_points(group=BUILTINS_GROUP), key=lambda e: e.name):
        listed = entry.load()
        if not all(isinstance(spec, SubscriberSpec) for spec in listed):
            raise SettingsError(
                f"entry point {entry.name} = {entry.value!r} ({BUILTINS_GROUP}) lists a non-spec"
            )
        specs.extend(listed)
    return tuple(specs)


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _as_spec(target: str, obj: object, where: str) -> AnySpec:
    if isinstance(obj, SubscriberSpec):
        return obj
    carried = getattr(obj, "spec", None)
    if isinstance(obj, type) and isinstance(carried, SubscriberSpec):
        return carried
    if isinstance(obj, type):
        if not callable(getattr(obj, "connect", None)):
            raise SettingsError(
                f"{where}: {target!r} has no connect(bus) method; a subscriber lists its subscriptions there"
            )
        return plain_spec(_snake(obj.__name__), obj, (obj.__doc__ or "").strip().split("\n")[0])
    raise SettingsError(f"{where}: {target!r} is not a SubscriberSpec nor a subscriber class, got {obj!r}")


def _entry_point(name: str, where: str) -> object:
    found = {entry.name: entry for entry in metadata.entry_points(group=PLUGINS_GROUP)}
    if name not in found:
        close = difflib.get_close_matches(name, list(found), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        installed = ", ".join(sorted(found)) or "none"
        raise SettingsError(
            f"{where}: {name!r} is neither 'package.module:NAME' nor an installed {PLUGINS_GROUP} entry point"
            f"{hint} (installed: {installed})"
        )
    try:
        return found[name].load()
    except (ImportError, AttributeError) as error:
        raise SettingsError(
            f"{where}: entry point {name!r} ({found[name].value}) does not load: {error}"
        ) from None


def _why_not(module_name: str, error: ImportError) -> str:
    """The import error, and when the plugin's own module is what is missing, how to make it importable."""
    found = f"{type(error).__name__}: {error}"
    missing = getattr(error, "name", None)
    if not isinstance(error, ModuleNotFoundError) or missing is None:
        return found
    if module_name != missing and not module_name.startswith(f"{missing}."):
        return f"{found}; the plugin imports it: install it"
    file = module_name.replace(".", "/") + ".py"
    return (
        f"{found}; a plugin module is imported from the current directory ({Path.cwd()}), "
        f"PYTHONPATH or an installed package: run from the folder that holds {file}, "
        "set PYTHONPATH to that folder, or pip install the package"
    )


def resolve_plugin(target: str, where: str = "[run].plugins") -> AnySpec:
    """The spec `target` names; `SettingsError` naming `where` and the target otherwise."""
    if ":" not in target:
        return _as_spec(target, _entry_point(target, where), where)
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SettingsError(f"{where}: cannot import {target!r} ({_why_not(module_name, error)})") from None
    try:
        obj = getattr(module, attribute)
    except AttributeError:
        raise SettingsError(
            f"{where}: cannot import {target!r}: module {module_name!r} ({module.__file__}) has no "
            f"{attribute!r}; expected 'package.module:NAME'"
        ) from None
    return _as_spec(target, obj, where)


def resolve_specs(
    plugins: Iterable[str], builtins: Sequence[AnySpec] | None = None, *, where: str = "[run].plugins"
) -> dict[str, AnySpec]:
    """Table name -> spec, built-ins first (in attach order), then the plugins in the order named.

    Two specs claiming one name are an error naming both.
    """
    claimed: dict[str, tuple[AnySpec, str]] = {}
    for spec in builtin_specs() if builtins is None else builtins:
        claimed[spec.name] = (spec, "a built-in subscriber")
    for target in plugins:
        if any(owner == repr(target) for _, owner in claimed.values()):
            raise SettingsError(f"{where}: {target!r} is named twice")
        spec = resolve_plugin(target, where)
        if spec.name in claimed:
            _, owner = claimed[spec.name]
            raise SettingsError(
                f"{where}: {target!r} and {owner} both claim the name {spec.name!r}; "
                "give one of them another SubscriberSpec name"
            )
        claimed[spec.name] = (spec, repr(target))
    return {name: spec for name, (spec, _) in claimed.items()}
