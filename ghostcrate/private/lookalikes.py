"""Crate names that look alike: the confusable skeleton of a name, after Unicode TR39.

A crate name is ASCII letters, digits, `-` and `_` (crates.io's rule), so of TR39's
`confusables.txt` only the pairs inside that alphabet matter. The skeleton folds
case and `-`/`_` (cargo already treats those as one name), then maps each character
to a prototype:

- from `confusables.txt`: `0` -> `o` (U+0030 -> U+004F), `1` and `I` -> `l`
  (U+0031, U+0049 -> U+006C), `m` -> `rn` (U+006D -> U+0072 U+006E);
- added here, because they fool a reader as well: `i` -> `l` (what `I` becomes once
  case is folded) and `w` -> `vv`.

Two names with the same skeleton are one name to a reader: `tok1o` and `tokio`,
`serde-derive` and `Serde_Derive`, `rnio` and `mio`.
"""

from __future__ import annotations

from collections.abc import Iterable

_PROTOTYPES = str.maketrans({"-": "_", "0": "o", "1": "l", "i": "l", "m": "rn", "w": "vv"})


def skeleton(name: str) -> str:
    """The form two look-alike names share."""
    return name.lower().translate(_PROTOTYPES)


def lookalike(name: str, existing: Iterable[str]) -> str | None:
    """The first of `existing` that looks like `name` without being the same name."""
    key = skeleton(name)
    same = name.lower().replace("-", "_")
    for other in existing:
        if skeleton(other) == key and other.lower().replace("-", "_") != same:
            return other
    return None
