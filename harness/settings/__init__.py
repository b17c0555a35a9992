"""Settings: the typed tree of `settings.toml`, its loader, the plugin specs, the reference.

tree        the harness's own tables (`Settings`, `DataSettings`, ...)
load        `load_settings`, ``--set`` overrides, `settings_to_toml`
plugins     built-in specs (entry points) and the plugins `[run].plugins` names
reference   the settings reference in the README, generated from the tree and the specs
"""

from harness.settings.load import load_settings, parse_override, settings_to_toml, tables
from harness.settings.plugins import builtin_specs, resolve_plugin, resolve_specs
from harness.settings.tree import (
    AugmentSettings,
    CheckpointSettings,
    DataSettings,
    EarlyStoppingSettings,
    LoggerSettings,
    ModelSettings,
    RunSettings,
    Settings,
    TrainerSettings,
)

__all__ = [
    "Settings",
    "RunSettings",
    "DataSettings",
    "ModelSettings",
    "AugmentSettings",
    "TrainerSettings",
    "CheckpointSettings",
    "EarlyStoppingSettings",
    "LoggerSettings",
    "load_settings",
    "parse_override",
    "settings_to_toml",
    "tables",
    "builtin_specs",
    "resolve_plugin",
    "resolve_specs",
]
