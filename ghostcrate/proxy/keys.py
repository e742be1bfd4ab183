"""Where the mirror keeps things in the cache: the key layout, both ways."""

from __future__ import annotations

from ghostcrate.cargo.names import CrateName, InvalidName, index_path, is_version

CONFIG_PATH = "config.json"
CONFIG_KEY = "index/" + CONFIG_PATH
#: Every key the mirror writes starts with one of these. A shared bucket also holds
#: keys that are not the mirror's (the private registry's crates, which are data).
MIRROR_PREFIXES = ("index/", "crates/")


def index_key(path: str) -> str:
    """The key of an index path (`se/rd/serde`) or of `config.json`."""
    return "index/" + path


def crate_dir(name: CrateName) -> str:
    return f"crates/{name.lower}/"


def crate_key(name: CrateName, version: str) -> str:
    return f"{crate_dir(name)}{name.lower}-{version}.crate"


def parse_crate_key(key: str) -> tuple[CrateName, str] | None:
    """(name, version) of a `crates/...` key exactly as the mirror writes it, else None."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "crates" or not parts[2].endswith(".crate"):
        return None
    try:
        name = CrateName(parts[1])
    except InvalidName:
        return None
    version = parts[2].removesuffix(".crate").removeprefix(parts[1] + "-")
    if not is_version(version) or crate_key(name, version) != key:
        return None
    return name, version


def is_index_key(key: str) -> bool:
    if key == CONFIG_KEY:
        return True
    path = key.removeprefix("index/")
    try:
        return key.startswith("index/") and index_path(CrateName(path.rpartition("/")[2])) == path
    except InvalidName:
        return False
