"""Replies rendered once and kept per URL, so a cache hit is a dictionary lookup and a write.

Each `Prepared` holds the bytes of its status line and headers (and of its
gzip variant and its 304), so serving it costs no header building, no ETag
computation and no compression. The gzip variant is made off the event loop
the first time a client accepts gzip; until it is ready, clients get the
identity body. Index files are held in memory until their
`index_ttl` runs out. Crates are kept as a path (sent with sendfile) and their
bodies are read into memory once they are asked for repeatedly and fit the
budget, so the hot crates come from memory while a working set larger than
memory still streams from disk without churning the memory.
"""

from __future__ import annotations

import gzip
import math
import random
from collections import OrderedDict
from dataclasses import replace
from http import HTTPStatus

from ghostcrate.appliance.replies import RENEW_WINDOW, Reply

#: Bodies smaller than this are not worth compressing (headers dominate).
GZIP_MIN_BYTES = 1024
GZIPPED_TYPES = frozenset({"text/plain", "application/json"})
#: A crate asked for this many times while its path is kept is read into memory.
PROMOTE_AFTER = 2
#: Bookkeeping bytes counted for every kept reply besides its bodies.
OVERHEAD_BYTES = 512


#: A header field as sent: name (HTTP/1.1 capitalisation) and value.
Field = tuple[bytes, bytes]
VARY: Field = (b"Vary", b"Accept-Encoding")


class Prepared:
    """A reply as header fields and bytes on the wire, less the per-request Date and X-Request-Id.

    `head` is the HTTP/1.1 status line and header lines; the `*_fields` lists
    are the same headers for HTTP/2. The gzip variant (index files over
    `GZIP_MIN_BYTES` that compress well) carries a weak ETag, as nginx's gzip
    does, so a client's `If-None-Match` matches either form.
    """

    __slots__ = (
        "body",
        "cost",
        "expires",
        "fields",
        "file",
        "file_size",
        "gzip_body",
        "gzip_fields",
        "gzip_head",
        "gzip_not_modified_fields",
        "gzip_not_modified_head",
        "gzip_wanted",
        "head",
        "hits",
        "matching_tags",
        "not_modified_fields",
        "not_modified_head",
        "renew_at",
        "reply",
        "used_at",
    )

    def __init__(self, reply: Reply, expires: float, file_size: int = 0) -> None:
        self.reply = reply
        self.expires = expires
        #: When a hit should start renewing it in the background (loop time).
        self.renew_at = _renew_at(expires, reply.keep_for)
        self.body = reply.body
        self.file = reply.file
        self.file_size = file_size
        self.hits = 0
        #: When the crate file was last marked as used for the disk tier's LRU (loop time).
        self.used_at = 0.0
        length = file_size if reply.file is not None else len(reply.body)
        compress = (
            reply.file is None
            and reply.status == 200
            and reply.content_type in GZIPPED_TYPES
            and len(reply.body) >= GZIP_MIN_BYTES
        )
        # Tuples, not lists: tuples of bytes leave the garbage collector's tracking, so
        # thousands of kept replies do not lengthen its full collections.
        validators = (*_validators(reply, reply.etag), *((VARY,) if compress else ()))
        #: If-None-Match values that are exactly this reply's ETag, strong or weak: a 304
        #: without parsing the header.
        self.matching_tags: tuple[bytes, ...] = ()
        if reply.status == 200 and reply.etag is not None:
            tag = reply.etag.removeprefix("W/").encode("latin-1")
            self.matching_tags = (tag, b"W/" + tag)
        self.fields = (*_entity(reply, length), *validators)
        self.not_modified_fields = validators
        self.head = _render(reply.status, self.fields)
        self.not_modified_head = _render(304, validators)
        self.gzip_body: bytes | None = None
        self.gzip_fields: tuple[Field, ...] = ()
        self.gzip_not_modified_fields: tuple[Field, ...] = ()
        self.gzip_head = self.gzip_not_modified_head = b""
        #: A gzip variant is worth making and nobody has asked for it yet: it is made in
        #: the background once a client accepts gzip, never for clients that do not.
        self.gzip_wanted = compress
        self.cost = self._cost()

    def compress(self) -> bytes:
        """The body in gzip (slow for large bodies: run it off the event loop)."""
        return gzip.compress(self.body, compresslevel=6, mtime=0)

    def add_gzip(self, packed: bytes) -> None:
        """Take the gzip variant `compress` made, unless it saves too little."""
        reply = self.reply
        if len(packed) >= len(self.body) * 0.9:
            return
        weak = f"W/{reply.etag}" if reply.etag is not None else None
        gz_validators = (*_validators(reply, weak), VARY)
        self.gzip_body = packed
        self.gzip_fields = (
            *_entity(reply, len(packed)),
            (b"Content-Encoding", b"gzip"),
            *gz_validators,
        )
        self.gzip_not_modified_fields = gz_validators
        self.gzip_head = _render(reply.status, self.gzip_fields)
        self.gzip_not_modified_head = _render(304, gz_validators)
        self.cost = self._cost()

    def renew(self, reply: Reply, expires: float) -> bool:
        """Take the lifetime of `reply` if it says the same as this one; False if it differs.

        A revalidated index file that did not change keeps its rendered heads and
        gzip body: renewing it costs no compression.
        """
        if replace(reply, keep_for=self.reply.keep_for) != self.reply:
            return False
        self.reply = reply
        self.expires = expires
        self.renew_at = _renew_at(expires, reply.keep_for)
        return True

    def _cost(self) -> int:
        held = len(self.body) + len(self.gzip_body or b"")
        return OVERHEAD_BYTES + 2 * (len(self.head) + len(self.gzip_head)) + held

    def hold(self, body: bytes) -> None:
        """Keep a crate's body in memory: served with one write instead of sendfile."""
        self.body = body
        self.file = None
        self.cost = self._cost()


class HotSet:
    """Prepared replies by request target, bounded by the bytes they hold.

    The least recently used go first. A kept crate costs only its bookkeeping
    until its body is held, and a body is held only while it fits without
    evicting anything, so a working set larger than the budget does not churn.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: No single body may take more than this share of the budget.
        self.max_entry = max_bytes // 16
        self.size = 0
        self._entries: OrderedDict[bytes, Prepared] = OrderedDict()

    def get(self, target: bytes) -> Prepared | None:
        prepared = self._entries.get(target)
        if prepared is not None:
            self._entries.move_to_end(target)
        return prepared

    def put(self, target: bytes, prepared: Prepared) -> None:
        self.discard(target)
        if prepared.cost > self.max_entry:
            return
        self._entries[target] = prepared
        self.size += prepared.cost
        self._evict_over_budget()

    def discard(self, target: bytes) -> None:
        prepared = self._entries.pop(target, None)
        if prepared is not None:
            self.size -= prepared.cost

    def should_hold(self, prepared: Prepared) -> bool:
        """Whether a crate kept as a path has been asked for enough to be read into memory."""
        prepared.hits += 1
        return (
            prepared.hits == PROMOTE_AFTER
            and prepared.file_size <= self.max_entry
            and self.size + prepared.file_size <= self.max_bytes
        )

    def hold(self, target: bytes, prepared: Prepared, body: bytes) -> None:
        if self._entries.get(target) is not prepared or len(body) != prepared.file_size:
            return  # replaced or evicted meanwhile, or the file changed
        if self.size + len(body) > self.max_bytes:
            return
        before = prepared.cost
        prepared.hold(body)
        self.size += prepared.cost - before

    def add_gzip(self, target: bytes, prepared: Prepared, packed: bytes) -> None:
        """Give a kept reply its gzip variant, unless it was replaced or evicted meanwhile."""
        if self._entries.get(target) is not prepared:
            return
        before = prepared.cost
        prepared.add_gzip(packed)
        self.size += prepared.cost - before
        self._evict_over_budget()

    def __len__(self) -> int:
        return len(self._entries)

    def _evict_over_budget(self) -> None:
        """Drop the least recently used until the budget holds (never the last entry)."""
        while self.size > self.max_bytes and len(self._entries) > 1:
            _, evicted = self._entries.popitem(last=False)
            self.size -= evicted.cost


def _renew_at(expires: float, keep_for: float) -> float:
    if keep_for == math.inf:
        return math.inf
    return expires - keep_for * (1 - random.uniform(*RENEW_WINDOW))


def _render(status: int, fields: tuple[Field, ...]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()]
    lines.extend(name + b": " + value + b"\r\n" for name, value in fields)
    return b"".join(lines)


def _entity(reply: Reply, length: int) -> list[Field]:
    return [(b"Content-Type", reply.content_type.encode()), (b"Content-Length", b"%d" % length)]


def _validators(reply: Reply, etag: str | None) -> list[Field]:
    fields = []
    if etag is not None:
        fields.append((b"ETag", etag.encode("latin-1")))
    if reply.last_modified is not None:
        fields.append((b"Last-Modified", reply.last_modified.encode("latin-1")))
    if reply.cache_control is not None:
        fields.append((b"Cache-Control", reply.cache_control.encode("latin-1")))
    return fields
