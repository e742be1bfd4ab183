"""Configuration: the settings model, loaded from TOML and `GHOSTCRATE_*` variables."""

from ghostcrate.config.loader import (
    CONFIG_ENV,
    ConfigError,
    LoadedSettings,
    env_name,
    load_settings,
)
from ghostcrate.config.model import LogSettings, ServerSettings, Settings, UpstreamSettings

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "LoadedSettings",
    "LogSettings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "env_name",
    "load_settings",
]
