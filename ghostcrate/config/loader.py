"""Build `Settings` from defaults < TOML file < `GHOSTCRATE_*` environment < command line.

Environment rule: `GHOSTCRATE_<KEY>` for a top-level key and
`GHOSTCRATE_<SECTION>__<KEY>` for a key in a table, upper case, for example
`GHOSTCRATE_DATA_DIR` or `GHOSTCRATE_UPSTREAM__INDEX_TTL`. `GHOSTCRATE_CONFIG`
names the config file itself.

Values are checked strictly: a TOML file must give booleans and numbers as TOML
booleans and numbers, not strings; an environment variable's text is read as
the key's type (booleans: true, false, 1 or 0). Every problem is collected in
one pass and reported together, each in a sentence naming the key and where it
was set.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails
from yarl import URL

from ghostcrate.config.model import Settings

ENV_PREFIX = "GHOSTCRATE_"
CONFIG_ENV = "GHOSTCRATE_CONFIG"
#: The spellings of a boolean in an environment variable (any case).
ENV_BOOLEANS = {"true": True, "false": False, "1": True, "0": False}


class ConfigError(Exception):
    """The configuration cannot be used: one line per problem, naming the key and its origin."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    #: Dotted key -> where its value came from ("default", the file path, or an env variable).
    origins: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ConfigSource:
    """Where settings came from, to read them again (`serve` on SIGHUP): the file as it is
    now, the environment and the command line as they were at the start."""

    path: Path | None
    environ: Mapping[str, str]
    overrides: Mapping[str, Any]

    def load(self) -> LoadedSettings:
        return load_settings(self.path, self.environ, self.overrides)


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The dotted keys whose values differ (names only: values may be secrets)."""
    before, after = _flatten(old.model_dump()), _flatten(new.model_dump())
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def env_name(dotted_key: str) -> str:
    """The environment variable that overrides a dotted key."""
    return ENV_PREFIX + dotted_key.upper().replace(".", "__")


def masked(value: Any) -> Any:
    """A URL with its password replaced by ****; any other value as it is."""
    if isinstance(value, str) and "://" in value:
        url = URL(value)
        if url.password:
            return str(url.with_password("****"))
    return value


def _value_type(annotation: Any) -> Any:
    """The type under `Annotated[...]` and `... | None`: `int` for `Annotated[int, ...] | None`."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _value_type(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return next(
            _value_type(arg) for arg in typing.get_args(annotation) if arg is not type(None)
        )
    return annotation


def _is_table(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, BaseModel)


def _known_keys(model: type[BaseModel], prefix: str = "") -> dict[str, Any]:
    """Dotted key -> the model of its table, or the type of its value, for every key."""
    keys: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        kind = _value_type(info.annotation)
        keys[prefix + name] = kind
        if _is_table(kind):
            keys.update(_known_keys(kind, prefix + name + "."))
    return keys


KNOWN_KEYS = _known_keys(Settings)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        dotted = prefix + key
        if isinstance(value, dict) and _is_table(KNOWN_KEYS.get(dotted)):
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
        raise ConfigError([f"{path}: config file not found"]) from None
    except OSError as error:
        raise ConfigError([f"{path}: cannot read config file: {error.strerror}"]) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Read, layer and validate the configuration. Raises `ConfigError` with every problem.

    `overrides` maps dotted keys to values given on the command line; they win.
    """
    environ = {} if environ is None else environ
    if path is None and environ.get(CONFIG_ENV):
        path = Path(environ[CONFIG_ENV])

    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    problems = _file_layer(path, values, origins) if path is not None else []
    problems += _env_layer(environ, values, origins)
    for key, value in (overrides or {}).items():
        values[key] = value
        origins[key] = "command line"

    try:
        settings = Settings.model_validate(_nest(values), strict=True)
    except ValidationError as error:
        problems += [_describe(problem, origins, path) for problem in error.errors()]
    if problems:
        raise ConfigError(problems)
    for key in _flatten(settings.model_dump()):
        origins.setdefault(key, "default")
    return LoadedSettings(settings, origins)


def _file_layer(path: Path, values: dict[str, Any], origins: dict[str, str]) -> list[str]:
    """Take the file's values; return its unknown keys and misplaced tables."""
    try:
        table = _read_file(path)
    except ConfigError as error:
        return error.problems
    problems = []
    for key, value in _flatten(table).items():
        kind = KNOWN_KEYS.get(key)
        if kind is None:
            problems.append(f"{path}: {_unknown(key, table=isinstance(value, dict))}")
        elif _is_table(kind):
            problems.append(f"{path}: '{key}' must be a table ([{key}])")
        elif isinstance(value, dict) and typing.get_origin(kind) is not dict:
            problems.append(f"{path}: '{key}' must be a value, not a table")
        else:
            # A relative path in a file means relative to that file, whoever starts us.
            relative = kind is Path and isinstance(value, str)
            values[key] = path.parent / value if relative else value
            origins[key] = str(path)
    return problems


def _unknown(key: str, *, table: bool) -> str:
    """'unknown key ...' with the nearest known key of the same kind, if one is near."""
    nearest = _nearest(key, table)
    if table:
        hint = f" (did you mean [{nearest}]?)" if nearest else ""
        return f"unknown table [{key}]{hint}"
    hint = f" (did you mean '{nearest}'?)" if nearest else ""
    return f"unknown key '{key}'{hint}"


def _nearest(key: str, table: bool) -> str | None:
    """A misspelling's key in the same table, else the same name in another table."""
    prefix, _, name = key.rpartition(".")
    kind = [known for known, value in KNOWN_KEYS.items() if _is_table(value) == table]
    siblings = {k.rpartition(".")[2]: k for k in kind if k.rpartition(".")[0] == prefix}
    close = difflib.get_close_matches(name, siblings, n=1)
    if close:
        return siblings[close[0]]
    return next((k for k in kind if k.rpartition(".")[2] == name), None)


def _env_layer(
    environ: Mapping[str, str], values: dict[str, Any], origins: dict[str, str]
) -> list[str]:
    """Take the `GHOSTCRATE_*` values, read as their keys' types; return the unknown ones."""
    env_keys = {env_name(key): key for key, kind in KNOWN_KEYS.items() if not _is_table(kind)}
    problems = []
    for name, text in environ.items():
        if not name.startswith(ENV_PREFIX) or name == CONFIG_ENV:
            continue
        if name not in env_keys:
            suffixes = [known.removeprefix(ENV_PREFIX) for known in env_keys]
            close = difflib.get_close_matches(name.removeprefix(ENV_PREFIX), suffixes, n=1)
            rule = f"the rule is {env_name('table.key')}"
            hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else rule
            problems.append(f"environment variable {name}: unknown key ({hint})")
            continue
        key = env_keys[name]
        values[key] = _from_text(text, KNOWN_KEYS[key])
        origins[key] = f"environment variable {name}"
    return problems


def _from_text(text: str, kind: Any) -> Any:
    """`text` read as `kind`, or `text` itself when it is not one (validation then says so)."""
    if kind is bool:
        return ENV_BOOLEANS.get(text.strip().lower(), text)
    if kind is Path:
        return Path(text)
    if typing.get_origin(kind) is list:  # comma-separated
        return [part.strip() for part in text.split(",") if part.strip()]
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            return text
    return text


#: GhostCrate's sentence for each kind of validation error the settings model can raise.
SENTENCES = {
    "bool_type": "must be true or false",
    "int_type": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be a string in quotes",
    "is_instance_of": "must be a path in quotes",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be {ge} or more",
    "string_too_short": "must be at least {min_length} characters long",
    "string_too_long": "must be at most {max_length} characters long",
    "literal_error": "must be {expected}",
    "list_type": 'must be a list of strings, like ["a", "b"]',
    "missing": "must be set",
    "value_error": "{error}",
}


#: Keys whose values are never shown, even when wrong (`bind_password`, `client_secret`).
_SECRET_KEY = re.compile(r"secret|password|token")


def _describe(problem: ErrorDetails, origins: Mapping[str, str], path: Path | None) -> str:
    """One line for a validation error: where, which key, GhostCrate's sentence, the value."""
    key = ".".join(str(part) for part in problem["loc"])
    kind = KNOWN_KEYS.get(key)
    where = _origin_of(key, origins)
    value = problem["input"]
    if problem["type"] == "bool_type" and where.startswith("environment variable"):
        sentence = "must be true, false, 1 or 0"
    else:
        context = {name: _shown(detail) for name, detail in problem.get("ctx", {}).items()}
        sentence = SENTENCES.get(problem["type"], "is not a valid value").format(**context)
    if where == str(path) and isinstance(value, str) and _quoted(value, kind):
        sentence += ", without quotes"
    value = str(value) if isinstance(value, Path) else masked(value)
    got = "" if isinstance(value, dict) or _SECRET_KEY.search(key) else f" (got {value!r})"
    shown = f"[{key}]" if _is_table(kind) else f"'{key}'"
    return f"{where}: {shown} {sentence}{got}"


def _quoted(text: str, kind: Any) -> bool:
    """Whether `text` would be a TOML value of type `kind` without its quotes (`"60"`)."""
    try:
        value = tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return False
    return type(value) is kind or (kind is float and type(value) is int)


def _shown(value: Any) -> str:
    """A validation error's detail as written in a sentence: 0 rather than 0.0."""
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _origin_of(key: str, origins: Mapping[str, str]) -> str:
    """Where a key was set; for a table or a missing key, where its table was written."""
    if key in origins:
        return origins[key]
    parts = key.split(".")
    for end in range(len(parts) - 1, 0, -1):  # an entry of a list of tables ([[auth.oidc]])
        if ".".join(parts[:end]) in origins:
            return origins[".".join(parts[:end])]
    for table in (key + ".", key.rpartition(".")[0] + "."):
        for other, where in origins.items():
            if other.startswith(table) and table != ".":
                return where
    return "default"
