"""The publish body's framing (registry-web-api.md, "Publish")."""

from __future__ import annotations

import pytest

from ghostcrate.private.errors import PublishRejected
from ghostcrate.private.upload import human_size, split_body
from tests.support.publish import publish_body

MB = 1 << 20


def test_splits_metadata_and_crate() -> None:
    body = publish_body(b'{"name":"x"}', b"\x1f\x8bcrate")
    assert split_body(body, max_crate=MB) == (b'{"name":"x"}', b"\x1f\x8bcrate")


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x05\x00",
        (10).to_bytes(4, "little") + b"{}",  # metadata shorter than announced
        (2).to_bytes(4, "little") + b"{}",  # no crate length
        (2).to_bytes(4, "little") + b"{}\x01\x00",  # crate length cut short
    ],
)
def test_truncated_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(PublishRejected, match="truncated") as caught:
        split_body(body, max_crate=MB)
    assert caught.value.status == 400


def test_crate_longer_than_what_is_left_is_refused() -> None:
    body = publish_body(b"{}", b"abc")[:-1]
    with pytest.raises(
        PublishRejected, match=r"announces a 3-byte \.crate but only 2 bytes follow"
    ):
        split_body(body, max_crate=MB)


def test_trailing_bytes_after_the_crate_are_refused() -> None:
    with pytest.raises(PublishRejected, match=r"1 bytes after its \.crate"):
        split_body(publish_body(b"{}", b"abc") + b"!", max_crate=MB)


def test_metadata_over_its_limit_is_413() -> None:
    body = publish_body(b"{" + b" " * 2000 + b"}", b"abc")
    with pytest.raises(PublishRejected, match=r"limit of 1 kB") as caught:
        split_body(body, max_metadata=1024, max_crate=MB)
    assert caught.value.status == 413


def test_metadata_limit_is_checked_before_reading_it() -> None:
    body = (50 * MB).to_bytes(4, "little") + b"{}"
    with pytest.raises(PublishRejected) as caught:
        split_body(body, max_crate=MB)
    assert caught.value.status == 413


def test_crate_over_its_limit_is_413_in_megabytes() -> None:
    body = publish_body(b"{}", b"x" * (MB + 1))
    with pytest.raises(PublishRejected, match=r"limit of 1 MB") as caught:
        split_body(body, max_crate=MB)
    assert caught.value.status == 413


def test_announced_huge_crate_is_413_not_truncated() -> None:
    body = publish_body(b"{}", b"")[:-4] + (0xFFFFFFFF).to_bytes(4, "little")
    with pytest.raises(PublishRejected, match="10 MB") as caught:
        split_body(body, max_crate=10 * MB)
    assert caught.value.status == 413


def test_empty_crate_is_refused() -> None:
    with pytest.raises(PublishRejected, match=r"empty \.crate"):
        split_body(publish_body(b"{}", b""), max_crate=MB)


@pytest.mark.parametrize(
    ("size", "text"),
    [(300, "300 bytes"), (512 * 1024, "512 kB"), (10 * MB, "10 MB"), (3 * MB // 2, "1.5 MB")],
)
def test_sizes_read_as_people_read_them(size: int, text: str) -> None:
    assert human_size(size) == text
