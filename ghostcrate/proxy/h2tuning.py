"""h2 tuned for GhostCrate's two HTTP/2 sides: cheap header blocks and frames.

Measured per cold fill (instructions counted with callgrind, and the
microbenchmarks in `benchmarks/RESULTS.md`), h2's defaults spent most of
their time on work GhostCrate does not need:

- Sending one response's header block took about 115 µs. h2 validated and
  normalised every outbound field, and hpack's encoder looked each field up
  in its dynamic table by a linear scan, Huffman-coded every literal in
  Python, and indexed every field it had not seen. Most fields GhostCrate
  sends are new each time (an ETag, a length, a request id, a path), so
  indexing them only evicted the others. `StatelessEncoder` uses the static
  table where a field is in it and sends the rest as literals without
  indexing (RFC 7541 6.2.2): its dynamic table stays empty, so there is no
  lookup and no state to keep, and a literal costs a few bytes more than its
  Huffman code. Table size updates are still sent when the peer's SETTINGS
  change. Outbound validation is off because GhostCrate builds these fields
  itself (lower-case names, no connection-specific fields); inbound fields
  are still checked by h2.
- h2 formats every received frame for a trace message before deciding
  whether to log it, and hyperframe's text for a DATA frame hex-encodes the
  whole payload to show its first ten bytes: for a crate download that was a
  tenth of the worker's instructions. `tune` makes that text come from the
  first bytes only; it reads the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h2.config
import h2.connection
from hpack import Encoder, HeaderTuple
from hpack.hpack import encode_integer
from hpack.table import HeaderTable
from hyperframe.frame import DataFrame

#: RFC 7541 6.2.2 and 6.2.3: the first byte's pattern of a literal without indexing,
#: and of one that intermediaries must never index (`NeverIndexedHeaderTuple`).
_WITHOUT_INDEXING = 0x00
_NEVER_INDEXED = 0x10


def _static_tables() -> tuple[dict[tuple[bytes, bytes], bytes], dict[bytes, int]]:
    """Encoded indexed fields for the static table's exact matches; each name's first index."""
    exact: dict[tuple[bytes, bytes], bytes] = {}
    names: dict[bytes, int] = {}
    for index, (name, value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
        exact.setdefault((name, value), bytes([0x80 | index]))  # all indices are under 127
        names.setdefault(name, index)
    return exact, names


_EXACT, _NAMES = _static_tables()


def _length_prefixed(data: bytes) -> bytes:
    """A string literal without Huffman coding (RFC 7541 5.2)."""
    if len(data) < 0x7F:
        return bytes([len(data)]) + data
    return bytes(encode_integer(len(data), 7)) + data


def encode_field(name: bytes, value: bytes, *, never_indexed: bool = False) -> bytes:
    """One field as an indexed field (static table) or a literal without indexing."""
    if not never_indexed:
        indexed = _EXACT.get((name, value))
        if indexed is not None:
            return indexed
    pattern = _NEVER_INDEXED if never_indexed else _WITHOUT_INDEXING
    index = _NAMES.get(name)
    if index is None:
        return bytes([pattern]) + _length_prefixed(name) + _length_prefixed(value)
    if index < 0x0F:
        prefix = bytes([pattern | index])
    else:
        encoded = encode_integer(index, 4)
        encoded[0] |= pattern
        prefix = bytes(encoded)
    return prefix + _length_prefixed(value)


def _as_bytes(value: bytes | str) -> bytes:
    return value if type(value) is bytes else str(value).encode("utf-8")


class StatelessEncoder(Encoder):
    """hpack's encoder, but nothing ever enters the dynamic table (see the module)."""

    def encode(self, headers: Iterable[Any], huffman: bool = True) -> bytes:
        """The header block for `headers`, pairs (or `HeaderTuple`s) in sending order.

        `huffman` is accepted for h2's sake and ignored: literals go uncoded.
        """
        block = []
        if self.header_table.resized:  # the peer's SETTINGS changed the table's size
            block.append(self._encode_table_size_change())
            self.header_table.resized = False
        for field in headers:
            name, value = _as_bytes(field[0]), _as_bytes(field[1])
            never = isinstance(field, HeaderTuple) and not field.indexable
            block.append(encode_field(name, value, never_indexed=never))
        return b"".join(block)


def configuration(*, client_side: bool) -> h2.config.H2Configuration:
    """h2's settings for a connection whose outbound fields GhostCrate builds itself."""
    return h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
    )


def tune(connection: h2.connection.H2Connection) -> None:
    """Give `connection` a `StatelessEncoder` (before its first header block) and cheap reprs."""
    connection.encoder = StatelessEncoder()
    DataFrame._body_repr = _data_body_repr  # type: ignore[method-assign, assignment]


def _data_body_repr(frame: DataFrame) -> str:
    """hyperframe's text for a DATA frame's body, made from the bytes it shows.

    That is `<hex:` and the first 20 hex digits of the serialised body, with
    `...` if there are more, or `None` for an empty body.
    """
    start = frame.serialize_padding_data() + bytes(frame.data[:11])
    digits = (start + b"\0" * min(frame.pad_length, 11))[:11].hex()
    if not digits:
        return "None"
    return f"<hex:{digits[:20]}{'...' if len(digits) > 20 else ''}>"
