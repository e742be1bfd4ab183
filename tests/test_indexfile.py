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
