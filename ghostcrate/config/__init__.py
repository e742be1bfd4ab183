"""Configuration: the settings model, loaded from TOML and `GHOSTCRATE_*` variables."""

from ghostcrate.config.loader import (
    CONFIG_ENV,
    ConfigError,
    ConfigSource,
    LoadedSettings,
    changed_keys,
    env_name,
    load_settings,
    masked,
)
from ghostcrate.config.model import (
    CacheSettings,
    LogSettings,
    S3Settings,
    ServerSettings,
    Settings,
    UpstreamSettings,
    parse_size,
)

__all__ = [
    "CONFIG_ENV",
    "CacheSettings",
    "ConfigError",
    "ConfigSource",
    "LoadedSettings",
    "LogSettings",
    "S3Settings",
    "ServerSettings",
    "Settings",
    "UpstreamSettings",
    "changed_keys",
    "env_name",
    "load_settings",
    "masked",
    "parse_size",
]
