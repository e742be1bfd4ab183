"""If-Modified-Since as clients may send it: a date that is not one is ignored, never fatal."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ghostcrate.appliance.replies import Reply, not_modified
from tests.conftest import MirrorClient
from tests.support.crates import index_path
from tests.support.upstream import FakeUpstream
from tests.test_fast_lane import RawConnection, get

LAST_MODIFIED = "Mon, 01 Jan 2024 00:00:00 GMT"
REPLY = Reply(200, "text/plain", b"body", etag='"e"', last_modified=LAST_MODIFIED)
HUGE_OFFSET = "Mon, 01 Jan 2024 00:00:00 +99999999999999999999"

numbers = st.integers().map(str)
zones = st.one_of(st.sampled_from(["GMT", "UT", "EST", "-0000", "+0000"]), numbers, st.text())
dates = st.builds(
    "{}, {} {} {} {}:{}:{} {}".format,
    st.sampled_from(["Mon", "Sun", ""]),
    numbers,
    st.sampled_from(["Jan", "Dec", "x"]),
    numbers,
    numbers,
    numbers,
    numbers,
    zones,
)


@given(st.one_of(dates, st.text()))
@example(HUGE_OFFSET)
@example("17 June , 2022")  # IndexError in some CPython releases (gh-95087)
def test_any_if_modified_since_gives_an_answer(value: str) -> None:
    assert not_modified(REPLY, None, value) in (True, False)


@pytest.mark.parametrize(
    ("since", "expected"),
    [(LAST_MODIFIED, True), ("Sun, 31 Dec 2023 23:59:59 GMT", False), ("Mon, 01 Jan 2024", False)],
)
def test_only_a_date_at_or_after_last_modified_gives_304(since: str, expected: bool) -> None:
    assert not_modified(REPLY, None, since) is expected


@pytest.mark.parametrize("handed_over", [False, True], ids=["fast-lane", "aiohttp"])
async def test_a_malformed_date_gets_a_full_answer_on_a_usable_connection(
    make_mirror: Callable[..., Any], upstream: FakeUpstream, handed_over: bool
) -> None:
    client: MirrorClient = await make_mirror()
    path = f"/index/{index_path('multi')}"
    # A Range header hands the connection to aiohttp, whose views answer from then on.
    extra = ["Range: bytes=0-"] if handed_over else []
    conn = await RawConnection.open(client)
    try:
        await conn.send(get(path))  # kept in the hot set: the next one is a hit
        assert (await conn.answer()).status == 200
        await conn.send(get(path, *extra, f"If-Modified-Since: {HUGE_OFFSET}"))
        answer = await conn.answer()
        assert answer.status == 200
        assert answer.body == upstream.registry.index_file("multi")
        await conn.send(get(path, *extra))
        assert (await conn.answer()).status == 200
    finally:
        await conn.close()
