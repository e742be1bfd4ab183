"""Build `Settings` from defaults < TOML file < `GHOSTCRATE_*` environment < command line.

Environment rule: `GHOSTCRATE_<KEY>` for a top-level key and
`GHOSTCRATE_<SECTION>__<KEY>` for a key in a table, upper case, for example
`GHOSTCRATE_DATA_DIR` or `GHOSTCRATE_UPSTREAM__INDEX_TTL`. `GHOSTCRATE_CONFIG`
names the config file itself.
"""

from __future__ import annotations

import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ghostcrate.config.model import Settings

ENV_PREFIX = "GHOSTCRATE_"
#: Keys holding paths: relative ones in a config file are relative to that file.
PATH_KEYS = ("data_dir", "upstream.ca_bundle")
CONFIG_ENV = "GHOSTCRATE_CONFIG"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and where it was set."""


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    #: Dotted key -> where its value came from ("default", the file path, or an env variable).
    origins: Mapping[str, str] = field(default_factory=dict)


def env_name(dotted_key: str) -> str:
    """The environment variable that overrides a dotted key."""
    return ENV_PREFIX + dotted_key.upper().replace(".", "__")


def _table_model(annotation: Any) -> type[BaseModel] | None:
    """The model of a table key (`Section` or `Section | None`), or None for a value."""
    candidates = typing.get_args(annotation) or (annotation,)
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _known_keys(model: type[BaseModel], prefix: str = "") -> dict[str, bool]:
    """Dotted key -> whether it is a table, for every key of the model."""
    keys: dict[str, bool] = {}
    for name, info in model.model_fields.items():
        table = _table_model(info.annotation)
        keys[prefix + name] = table is not None
        if table is not None:
            keys.update(_known_keys(table, prefix + name + "."))
    return keys


KNOWN_KEYS = _known_keys(Settings)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = prefix + key
        if isinstance(value, dict) and KNOWN_KEYS.get(dotted, False):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        *tables, key = dotted.split(".")
        target = nested
        for table in tables:
            target = target.setdefault(table, {})
        target[key] = value
    return nested


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Read, layer and validate the configuration. Raises `ConfigError`.

    `overrides` maps dotted keys to values given on the command line; they win.
    """
    environ = {} if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if path is not None:
        _file_layer(path, values, origins)
    _env_layer(environ, values, origins)
    for key, value in (overrides or {}).items():
        values[key] = value
        origins[key] = "command line"

    for key in PATH_KEYS:
        if path is not None and key in values and origins[key] == str(path):
            # A relative path in a file means relative to that file, whoever starts us.
            values[key] = path.parent / Path(values[key])

    try:
        settings = Settings.model_validate(_nest(values))
    except ValidationError as error:
        raise ConfigError(_describe(error, origins)) from None
    for key in _flatten(settings.model_dump()):
        origins.setdefault(key, "default")
    return LoadedSettings(settings, origins)


def _file_layer(path: Path, values: dict[str, Any], origins: dict[str, str]) -> None:
    for key, value in _flatten(_read_file(path)).items():
        if key not in KNOWN_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'")
        if KNOWN_KEYS[key]:
            raise ConfigError(f"{path}: key '{key}' must be a table ([{key}])")
        values[key] = value
        origins[key] = str(path)


def _env_layer(environ: Mapping[str, str], values: dict[str, Any], origins: dict[str, str]) -> None:
    env_keys = {env_name(key): key for key, table in KNOWN_KEYS.items() if not table}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        if name not in env_keys:
            raise ConfigError(f"environment variable {name}: unknown key (rule: {env_name('a.b')})")
        values[env_keys[name]] = value
        origins[env_keys[name]] = f"environment variable {name}"


def _describe(error: ValidationError, origins: Mapping[str, str]) -> str:
    lines = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"])
        message = problem["msg"].removeprefix("Value error, ")
        value = problem["input"]
        got = "" if isinstance(value, dict) or "secret" in key else f" (got {value!r})"
        lines.append(f"{_origin_of(key, origins)}: key '{key}': {message}{got}")
    return "\n".join(lines)


def _origin_of(key: str, origins: Mapping[str, str]) -> str:
    """Where a key was set; for a table or a missing key, where its table was written."""
    if key in origins:
        return origins[key]
    for table in (key + ".", key.rpartition(".")[0] + "."):
        for other, where in origins.items():
            if other.startswith(table) and table != ".":
                return where
    return "default"
