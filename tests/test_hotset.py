"""The hot set: prepared replies bounded by bytes, least recently used first, no churn."""

from __future__ import annotations

import random
from pathlib import Path

from ghostcrate.appliance.hotset import OVERHEAD_BYTES, HotSet, Prepared
from ghostcrate.appliance.replies import RENEW_WINDOW, Reply


def index_reply(size: int) -> Prepared:
    return Prepared(Reply(200, "text/plain", b"x" * size, etag='"e"'), expires=1e9)


def crate_reply(path: Path, size: int) -> Prepared:
    return Prepared(Reply(200, "application/gzip", file=path), expires=1e9, file_size=size)


def test_it_is_bounded_by_bytes_and_evicts_least_recently_used() -> None:
    hot = HotSet(max_bytes=16 * 2000)
    for number in range(40):
        hot.put(f"/i/{number}".encode(), index_reply(1000))
        assert hot.get(b"/i/0") is not None  # kept recent, so never the one evicted
    assert hot.size <= hot.max_bytes
    assert hot.get(b"/i/0") is not None
    assert hot.get(b"/i/1") is None  # the least recently used went first
    hot.put(b"/huge", index_reply(hot.max_entry))  # over a sixteenth of the budget
    assert hot.get(b"/huge") is None


def test_a_crate_is_held_in_memory_only_after_repeated_requests_and_if_it_fits(
    tmp_path: Path,
) -> None:
    hot = HotSet(max_bytes=16 * 4000)
    small = crate_reply(tmp_path / "small.crate", 3000)
    hot.put(b"/small", small)
    assert small.cost < OVERHEAD_BYTES + 1000 < 3000  # a path costs its bookkeeping only
    assert not hot.should_hold(small)  # first request
    assert hot.should_hold(small)  # second: read it in
    hot.hold(b"/small", small, b"c" * 3000)
    assert small.file is None
    assert small.body == b"c" * 3000
    assert hot.size >= 3000
    big = crate_reply(tmp_path / "big.crate", hot.max_entry + 1)
    hot.put(b"/big", big)
    assert not hot.should_hold(big)
    assert not hot.should_hold(big)  # too big for memory: stays a path, sent with sendfile


def test_holding_a_body_never_evicts_other_replies(tmp_path: Path) -> None:
    hot = HotSet(max_bytes=16 * 3000)
    for number in range(10):
        hot.put(f"/i/{number}".encode(), index_reply(3000))
    crate = crate_reply(tmp_path / "c.crate", 2900)
    hot.put(b"/crate", crate)
    crate.hits = 1
    fits = hot.size + 2900 <= hot.max_bytes
    assert hot.should_hold(crate) is fits
    before = len(hot)
    hot.hold(b"/crate", crate, b"c" * 2900)
    assert len(hot) == before  # a body that does not fit is not read in at others' expense
    assert hot.size <= hot.max_bytes


def test_a_changed_file_is_not_held(tmp_path: Path) -> None:
    hot = HotSet(max_bytes=16 * 4000)
    crate = crate_reply(tmp_path / "c.crate", 3000)
    hot.put(b"/crate", crate)
    hot.hold(b"/crate", crate, b"c" * 2999)  # not the size it had when it was kept
    assert crate.file is not None


def test_renewal_points_are_spread_over_the_window() -> None:
    keep_for = 60.0
    points = [
        Prepared(Reply(200, "text/plain", b"x", keep_for=keep_for), expires=1000.0).renew_at
        for _ in range(200)
    ]
    low, high = RENEW_WINDOW
    assert all(1000.0 - keep_for * (1 - low) <= p <= 1000.0 - keep_for * (1 - high) for p in points)
    assert max(points) - min(points) > keep_for * (high - low) / 2  # not all in one second


def test_an_unchanged_renewal_keeps_the_rendered_reply() -> None:
    body = b'{"name":"a","vers":"1.0.0"}\n' * 100
    reply = Reply(200, "text/plain", body, etag='"e1"', last_modified="x", keep_for=60.0)
    kept = Prepared(reply, expires=100.0)
    assert kept.gzip_wanted
    kept.add_gzip(kept.compress())
    gzip_body = kept.gzip_body
    assert gzip_body is not None
    same = Reply(200, "text/plain", bytes(body), etag='"e1"', last_modified="x", keep_for=59.0)
    assert kept.renew(same, expires=200.0)
    assert (kept.expires, kept.reply.keep_for) == (200.0, 59.0)
    assert 200.0 - 59.0 * 0.3 <= kept.renew_at <= 200.0 - 59.0 * 0.1
    assert kept.gzip_body is gzip_body  # not compressed again
    changed = Reply(200, "text/plain", body + b"\n", etag='"e2"', keep_for=60.0)
    assert not kept.renew(changed, expires=300.0)
    assert kept.expires == 200.0  # a changed reply is a new Prepared, not this one


def test_a_gzip_variant_is_counted_in_the_budget_and_only_for_the_reply_it_was_made_of() -> None:
    hot = HotSet(max_bytes=1 << 20)
    first = index_reply(20_000)
    hot.put(b"/i/a", first)
    assert first.gzip_wanted  # nothing made until a client asks for gzip
    assert first.gzip_body is None
    before = hot.size
    packed = first.compress()
    hot.add_gzip(b"/i/a", first, packed)
    assert first.gzip_body == packed
    assert hot.size == before + len(packed) + 2 * len(first.gzip_head)
    assert first.gzip_head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b'ETag: W/"e"\r\n' in first.gzip_head
    replaced = index_reply(20_000)
    hot.put(b"/i/b", replaced)
    hot.put(b"/i/b", index_reply(30_000))  # renewed with a changed file meanwhile
    size = hot.size
    hot.add_gzip(b"/i/b", replaced, replaced.compress())
    assert replaced.gzip_body is None
    assert hot.size == size


def test_a_body_that_hardly_compresses_gets_no_gzip_variant() -> None:
    noise = random.Random(5).randbytes(8000)  # random bytes do not compress
    kept = Prepared(Reply(200, "text/plain", noise, etag='"n"'), expires=1e9)
    assert kept.gzip_wanted
    kept.add_gzip(kept.compress())
    assert kept.gzip_body is None
    assert kept.gzip_head == b""
