"""Index files as stored, and the checks on what the upstream sends."""

from __future__ import annotations

import json

import pytest

from ghostcrate.cargo.names import CrateName
from ghostcrate.proxy.errors import UpstreamError
from ghostcrate.proxy.indexfile import IndexFile, check_index_body
from tests.support.crates import corpus_registry


def test_every_corpus_index_file_passes_the_check() -> None:
    registry = corpus_registry()
    for name in registry.names():
        body = registry.index_file(name)
        assert body is not None
        check_index_body(CrateName(name), body)


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"name": "other", "vers": "1.0.0", "cksum": "a" * 64}).encode(),
        json.dumps({"name": "multi", "vers": "1.0", "cksum": "a" * 64}).encode(),
        json.dumps({"name": "multi", "vers": "1.0.0", "cksum": "A" * 64}).encode(),
        json.dumps({"name": "multi", "vers": "1.0.0"}).encode(),
    ],
)
def test_damaged_lines_are_refused_with_their_number(line: bytes) -> None:
    body = corpus_registry().index_file("multi")
    assert body is not None
    with pytest.raises(UpstreamError, match="damaged index file for multi: line 4"):
        check_index_body(CrateName("multi"), body + line + b"\n")


def test_stored_form_round_trips_and_keeps_last_modified_for_the_same_body() -> None:
    first = IndexFile.from_upstream(b'{"a":1}\n', 1000.0, '"up"', None)
    assert IndexFile.decode(first.encode(), 1000.0) == first
    same = IndexFile.from_upstream(b'{"a":1}\n', 2000.0, '"up2"', None, previous=first)
    assert same.last_modified == first.last_modified
    changed = IndexFile.from_upstream(b'{"a":2}\n', 2000.0, '"up3"', None, previous=first)
    assert changed.etag != first.etag
    assert changed.last_modified != first.last_modified


@pytest.mark.parametrize("cut", [0, 1, 10, -1])
def test_a_stored_file_cut_short_does_not_decode(cut: int) -> None:
    stored = IndexFile.from_upstream(b'{"a":1}\n{"a":2}\n', 1000.0, '"up"', None).encode()
    header_end = stored.index(b"\n") + 1
    damaged = stored[: header_end + cut] if cut >= 0 else stored[:-1]
    with pytest.raises(ValueError, match="damaged"):
        IndexFile.decode(damaged, 1000.0)


def test_an_entry_is_found_with_or_without_parsing_every_line() -> None:
    lines = [
        {"name": "a", "vers": "1.0.0", "deps": [{"name": "b", "req": "1.0.1"}], "cksum": "0" * 64},
        {"name": "a", "vers": "1.0.1", "deps": [], "cksum": "1" * 64},
        {"name": "a", "vers": "2.0.0", "deps": [], "cksum": "2" * 64},
    ]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines) + b"not json\n"
    index = IndexFile.from_upstream(body, 0.0, None, None)
    assert index.entry("1.0.1") == lines[1]  # "1.0.1" also appears in 1.0.0's dependency
    assert index.entry("2.0.0") == lines[2]
    assert index.entry("3.0.0") is None
    escaped = IndexFile.from_upstream(body.replace(b'"2.0.0"', b'"\\u0032.0.0"'), 0.0, None, None)
    assert escaped.entry("2.0.0") == lines[2]  # written another way: found by the full parse
    assert index.versions() == {"1.0.0", "1.0.1", "2.0.0"}


def test_lines_that_are_not_utf8_are_refused_or_skipped_one_by_one() -> None:
    body = corpus_registry().index_file("multi")
    assert body is not None
    with pytest.raises(UpstreamError, match="damaged index file for multi: line 4"):
        check_index_body(CrateName("multi"), body + b'{"name":"multi","vers":"\xff"}\n')
    good = json.dumps({"name": "a", "vers": "1.0.0", "cksum": "0" * 64}).encode()
    index = IndexFile.from_upstream(b'{"vers":"\xff1.0"}\n' + good + b"\n", 0.0, None, None)
    assert index.versions() == {"1.0.0"}  # cargo skips a line it cannot read


def test_lines_end_at_line_feeds_as_cargo_splits_them() -> None:
    body = corpus_registry().index_file("multi")
    assert body is not None
    check_index_body(CrateName("multi"), body.replace(b"\n", b"\r\n"))  # CR is whitespace
    # U+2028 inside a JSON string is not a line break (str.splitlines would split there).
    entry = {"name": "multi", "vers": "9.0.0", "cksum": "0" * 64, "features": {"a\u2028b": []}}
    check_index_body(CrateName("multi"), body + json.dumps(entry, ensure_ascii=False).encode())
