"""Bad publishes get cargo's error format with a 4xx, through every front end, and leave nothing."""

from __future__ import annotations

import asyncio
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile.test_h2_relay import answers_of
from tests.support.appliance import Appliance
from tests.support.crates import CrateSpec, Dep, build_crate, cargo_toml
from tests.support.h2attack import RawH2
from tests.support.private import add_user, create_token, stored
from tests.support.publish import (
    gzip_bytes,
    member,
    metadata_bytes,
    publish_body,
    publish_metadata,
    tar_bytes,
)

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
GOOD = CrateSpec("acme-good", "1.0.0")
GOOD_BODY = publish_body(metadata_bytes(GOOD), build_crate(GOOD))


def archive(spec: CrateSpec, extra: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    top = f"{spec.name}-{spec.version}"
    files = [(member(f"{top}/Cargo.toml"), cargo_toml(spec).encode()), *extra]
    return gzip_bytes(tar_bytes(files))


def with_metadata(spec: CrateSpec, **changes: object) -> bytes:
    return json.dumps(publish_metadata(spec) | changes).encode()


#: (what, body, expected status)
BAD: list[tuple[str, bytes, int]] = [
    ("empty body", b"", 400),
    ("truncated", GOOD_BODY[: len(GOOD_BODY) // 2], 400),
    ("a JSON length that lies", (10**6).to_bytes(4, "little") + GOOD_BODY[4:], 400),
    ("bytes after the crate", GOOD_BODY + b"tail", 400),
    ("metadata that is not JSON", publish_body(b"{not json", build_crate(GOOD)), 400),
    ("metadata nested 10,000 deep", publish_body(b"[" * 10_000, build_crate(GOOD)), 400),
    ("an archive that is not gzip", publish_body(metadata_bytes(GOOD), b"PK\x03\x04zip"), 400),
    (
        "a zip-slip path",
        publish_body(
            metadata_bytes(GOOD),
            archive(GOOD, [(member("acme-good-1.0.0/../../etc/evil"), b"x")]),
        ),
        400,
    ),
    (
        "a symlink",
        publish_body(
            metadata_bytes(GOOD),
            archive(GOOD, [(member("acme-good-1.0.0/l", tarfile.SYMTYPE, link="/etc"), b"")]),
        ),
        400,
    ),
    (
        "a hard link",
        publish_body(
            metadata_bytes(GOOD),
            archive(GOOD, [(member("acme-good-1.0.0/h", tarfile.LNKTYPE, link="x"), b"")]),
        ),
        400,
    ),
    (
        "a device",
        publish_body(
            metadata_bytes(GOOD),
            archive(GOOD, [(member("acme-good-1.0.0/d", tarfile.CHRTYPE), b"")]),
        ),
        400,
    ),
    (
        "an absolute path",
        publish_body(metadata_bytes(GOOD), archive(GOOD, [(member("/etc/evil"), b"x")])),
        400,
    ),
    ("a non-ASCII name", publish_body(with_metadata(GOOD, name="acmé"), build_crate(GOOD)), 400),
    (
        "six keywords",
        publish_body(with_metadata(GOOD, keywords=list("abcdef")), build_crate(GOOD)),
        400,
    ),
    (
        "a Cargo.toml that disagrees",
        publish_body(metadata_bytes(GOOD), build_crate(CrateSpec("acme-good", "2.0.0"))),
        400,
    ),
    ("not a version", publish_body(with_metadata(GOOD, vers="1.0"), build_crate(GOOD)), 400),
    ("not a name", publish_body(with_metadata(GOOD, name="9lives"), build_crate(GOOD)), 400),
    (
        "a dependency nobody has",
        publish_body(
            metadata_bytes(CrateSpec("acme-good", "1.0.0", deps=(Dep("acme-nowhere", "1"),))),
            build_crate(CrateSpec("acme-good", "1.0.0", deps=(Dep("acme-nowhere", "1"),))),
        ),
        400,
    ),
    (
        "too large",
        publish_body(
            metadata_bytes(CrateSpec("acme-good", "1.0.0", extra_bytes=300_000)),
            build_crate(CrateSpec("acme-good", "1.0.0", extra_bytes=300_000)),
        ),
        413,
    ),
]


async def h2_publish(port: int, token: str, body: bytes) -> tuple[int, bytes]:
    """PUT a publish body over h2c, as fast as the server's windows let it go."""
    client = await RawH2.connect(port)
    try:
        stream_id = client.request(
            b"/api/v1/crates/new",
            method=b"PUT",
            extra=[(b"authorization", token.encode()), (b"content-length", b"%d" % len(body))],
            end=not body,
        )
        events = []
        left = memoryview(body)
        while left:
            room = min(client.h2.local_flow_control_window(stream_id), len(left))
            frame = client.h2.max_outbound_frame_size
            for at in range(0, room, frame):
                piece = left[at : min(at + frame, room)]
                client.h2.send_data(
                    stream_id, piece.tobytes(), end_stream=len(left) == at + len(piece)
                )
            left = left[room:]
            await client.drain()
            if left:  # wait for the server to open the window
                events += await client.answers(5, first=True)
        events += await client.until_done(stream_id)
        status, answer, _ = answers_of(events, stream_id)
        return status, answer
    finally:
        await client.close()


def test_bad_publishes_are_refused_with_a_reason_and_leave_nothing(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance(tables={"private": {"max_upload": "100 kB"}})
    add_user(appliance, "alice", admin=True)
    token = create_token(appliance, "alice")
    headers = {"Authorization": token}
    before = stored(appliance)
    assert before[0] == 0
    for what, body, expected in BAD:
        status, answer = appliance.request("PUT", "/api/v1/crates/new", body, headers)
        assert status == expected, (what, answer)
        detail = json.loads(answer)["errors"][0]["detail"]
        assert detail, what
        h2_status, h2_answer = asyncio.run(h2_publish(appliance.port, token, body))
        assert (h2_status, json.loads(h2_answer)) == (status, json.loads(answer)), what
        assert stored(appliance) == before, what
    # The same server still takes a good publish, through either front end.
    status, answer = asyncio.run(h2_publish(appliance.port, token, GOOD_BODY))
    assert status == 200, answer
    versions, files = stored(appliance)
    assert versions == 1
    assert len(files) == 1
    duplicate = appliance.request("PUT", "/api/v1/crates/new", GOOD_BODY, headers)
    assert duplicate[0] == 409
    assert "acme-good@1.0.0 already exists" in json.loads(duplicate[1])["errors"][0]["detail"]
    assert stored(appliance) == (versions, files)
    log = appliance.log.read_text()
    assert "Traceback" not in log
    assert "unhandled error" not in log
