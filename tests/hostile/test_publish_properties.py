"""Generated malformed publishes against a running appliance: never a 500, never a leftover.

Hypothesis builds bodies with random truncations, lying length fields, tar members with
hostile names and types, random compression layers and random JSON shapes. Each is sent
to `PUT /api/v1/crates/new`; the answer must be cargo's error form with a 4xx, and the
registry database and `data_dir/private/crates` must be as before (or, for the rare body
that is a valid publish, hold exactly that one version more).
"""

from __future__ import annotations

import bz2
import json
import tarfile
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.appliance import Appliance
from tests.support.crates import CrateSpec, build_crate, cargo_toml
from tests.support.private import add_user, crate_rows, create_token, stored
from tests.support.publish import gzip_bytes, member, metadata_bytes, publish_body, tar_bytes

pytestmark = pytest.mark.e2e

SPEC = CrateSpec("acme-fuzzed", "1.0.0")
TOP = f"{SPEC.name}-{SPEC.version}"
MANIFEST = (member(f"{TOP}/Cargo.toml"), cargo_toml(SPEC).encode())
TAR = tar_bytes([MANIFEST, (member(f"{TOP}/src/lib.rs"), b"pub fn f() {}\n")])
CRATE = build_crate(SPEC)
METADATA = metadata_bytes(SPEC)
GOOD = publish_body(METADATA, CRATE)
#: Examples per generator; five generators, so about 250 publishes in all.
EXAMPLES = 50
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

truncations = st.integers(0, len(GOOD) - 1).map(lambda cut: GOOD[:cut])


@st.composite
def lying_lengths(draw: st.DrawFn) -> bytes:
    """GOOD with its metadata length or its `.crate` length replaced by another number."""
    field = draw(st.sampled_from([0, 4 + len(METADATA)]))
    true = int.from_bytes(GOOD[field : field + 4], "little")
    lie = draw(st.integers(0, 2**32 - 1).filter(lambda n: n != true))
    return GOOD[:field] + lie.to_bytes(4, "little") + GOOD[field + 4 :]


HOSTILE_NAMES = st.sampled_from(
    [
        "/etc/passwd",
        f"/{TOP}/x",
        "../x",
        f"{TOP}/../x",
        f"{TOP}/../../x",
        f"{TOP}/./x",
        f"{TOP}//x",
        f"{TOP}/a\\..\\b",
        "other-1.0.0/x",
        f"{TOP.upper()}/x",
        f"{TOP}/cargo.toml",
        f"{TOP}/Cargo.toml",  # a second one: listed twice
        "x",
        ".",
        "",
    ]
)
SAFE_NAMES = st.text("abcxyz/._-", min_size=1, max_size=12).map(lambda s: f"{TOP}/{s}")
HOSTILE_TYPES = st.sampled_from(
    [
        tarfile.SYMTYPE,
        tarfile.LNKTYPE,
        tarfile.CHRTYPE,
        tarfile.BLKTYPE,
        tarfile.FIFOTYPE,
        tarfile.CONTTYPE,
        b"Z",
    ]
)
SAFE_TYPES = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE])


@st.composite
def hostile_members(draw: st.DrawFn) -> bytes:
    """A `.crate` whose members include at least one with a hostile name or type."""
    hostile = st.tuples(HOSTILE_NAMES, SAFE_TYPES | HOSTILE_TYPES) | st.tuples(
        SAFE_NAMES, HOSTILE_TYPES
    )
    entries = draw(st.lists(st.tuples(SAFE_NAMES, SAFE_TYPES), max_size=4))
    entries.insert(draw(st.integers(0, len(entries))), draw(hostile))
    members = [MANIFEST]
    for name, kind in entries:
        info = member(name, kind, link=draw(st.sampled_from(["", "/etc/passwd", "../x"])))
        members.append((info, draw(st.binary(max_size=64))))
    return publish_body(METADATA, gzip_bytes(tar_bytes(members)))


LAYERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip_bytes,
    "zlib": zlib.compress,
    "deflate": lambda data: zlib.compress(data, wbits=-15),
    "bzip2": bz2.compress,
    "cut": lambda data: data[: len(data) * 2 // 3],
}


@st.composite
def compression_layers(draw: st.DrawFn) -> bytes:
    """The tar in 0 to 3 random layers (not exactly one gzip, which is a good `.crate`)."""
    names = draw(
        st.lists(st.sampled_from(sorted(LAYERS)), max_size=3).filter(lambda n: n != ["gzip"])
    )
    data = TAR
    for name in names:
        data = LAYERS[name](data)
    return publish_body(METADATA, data)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
FIELDS = ["name", "vers", "deps", "features", "keywords", "categories", "links", "authors"]


@st.composite
def json_shapes(draw: st.DrawFn) -> bytes:
    """Metadata that is any JSON value, or cargo's object with some fields replaced."""
    if draw(st.booleans()):
        document: Any = draw(JSON_VALUES)
    else:
        document = json.loads(METADATA)
        for key in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3)):
            document[key] = draw(JSON_VALUES)
    return publish_body(json.dumps(document).encode(), CRATE)


def test_generated_hostile_publishes_never_500_nor_leave_anything(
    start_appliance: Callable[..., Appliance],
) -> None:
    appliance = start_appliance(tables={"private": {"max_upload": "1MB", "max_files": 20}})
    add_user(appliance, "mallory")
    headers = {"Authorization": create_token(appliance, "mallory")}
    seen: dict[int, int] = {}

    def check(body: bytes) -> None:
        before = stored(appliance), crate_rows(appliance)
        status, answer = appliance.request("PUT", "/api/v1/crates/new", body, headers)
        seen[status] = seen.get(status, 0) + 1
        after = stored(appliance), crate_rows(appliance)
        if status == 200:  # a body that happens to be a valid publish
            assert after[0][0] == before[0][0] + 1, after
            return
        assert 400 <= status < 500, (status, answer)
        errors = json.loads(answer)["errors"]
        assert isinstance(errors[0]["detail"], str), answer
        assert errors[0]["detail"], answer
        assert after == before
        assert not list((appliance.data_dir / "private" / "crates").rglob("*.partial"))

    for strategy in (
        truncations,
        lying_lengths(),
        hostile_members(),
        compression_layers(),
        json_shapes(),
    ):
        SETTINGS(given(body=strategy)(check))()
    assert sum(seen.values()) >= EXAMPLES * 4, seen
    assert 500 not in seen, seen
    log = appliance.log.read_text()
    assert "Traceback" not in log
    assert "unhandled error" not in log
