"""Mutated publish bodies are either accepted or refused with `PublishRejected`, nothing else."""

from __future__ import annotations

import gzip

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ghostcrate.private.archive import check_archive
from ghostcrate.private.errors import PublishRejected
from ghostcrate.private.metadata import index_entry, index_line, parse_metadata
from ghostcrate.private.upload import split_body
from tests.support.crates import CrateSpec, Dep, built
from tests.support.publish import gzip_bytes, metadata_bytes, publish_body

SPEC = CrateSpec(
    "fuzzed",
    "0.1.0",
    deps=(Dep("z", "0.1", optional=True), Dep("al", "1", package="real", kind="dev")),
    features={"default": ["dep:z"], "x": ["z?/y"]},
    links="fz",
)
CRATE = built(SPEC).data
TAR = gzip.decompress(CRATE)
METADATA = metadata_bytes(SPEC)


def publish(body: bytes) -> None:
    """The whole pure pipeline, as the publish handler will run it."""
    raw_meta, crate = split_body(body, max_crate=1 << 20)
    meta = parse_metadata(raw_meta)
    check_archive(crate, meta, max_unpacked=4 << 20)
    index_line(index_entry(meta, "0" * 64))


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (position, bytes to delete, bytes to insert) edits, positions modulo the length."""
    out = bytearray(data)
    for position, delete, insert in edits:
        at = position % (len(out) + 1)
        out[at : at + delete] = insert
    return bytes(out)


edits = st.lists(
    st.tuples(st.integers(0, 1 << 20), st.integers(0, 8), st.binary(max_size=8)),
    min_size=1,
    max_size=6,
)
cuts = st.integers(0, len(CRATE))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    target=st.sampled_from(["body", "metadata", "gzip", "tar"]),
    changes=edits,
    cut=st.none() | cuts,
)
def test_mutations_are_accepted_or_refused(
    target: str, changes: list[tuple[int, int, bytes]], cut: int | None
) -> None:
    metadata, crate = METADATA, CRATE
    if target == "metadata":
        metadata = mutate(METADATA, changes)
    elif target == "gzip":
        crate = mutate(CRATE, changes)[:cut]
    elif target == "tar":
        crate = gzip_bytes(mutate(TAR, changes)[:cut])
    body = publish_body(metadata, crate)
    if target == "body":
        body = mutate(body, changes)
    refusal: PublishRejected | None = None
    try:
        publish(body)
    except PublishRejected as caught:
        refusal = caught
    assert refusal is None or (refusal.detail and refusal.status in (400, 413))


def test_the_unmutated_body_passes() -> None:
    publish(publish_body(METADATA, CRATE))
