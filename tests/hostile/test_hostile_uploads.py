"""Hostile uploads through a running appliance: refused with cargo's error form, nothing kept.

Each case is a `PUT /api/v1/crates/new` that a hostile client could send; after each
the registry database and `data_dir/private/crates` are exactly as before.
"""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.support.appliance import Appliance
from tests.support.crates import CrateSpec, build_crate, cargo_toml
from tests.support.private import add_user, crate_rows, create_token, errors, stored
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
SPEC = CrateSpec("acme-hostile", "1.0.0")
TOP = f"{SPEC.name}-{SPEC.version}"
LIMITS = {"max_upload": "1MB", "max_unpacked": "3MiB", "max_files": 50, "max_metadata": "64KiB"}


def crate_with(*extra: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """SPEC's `.crate` with `extra` members after its Cargo.toml."""
    return gzip_bytes(tar_bytes([(member(f"{TOP}/Cargo.toml"), cargo_toml(SPEC).encode()), *extra]))


def body_with(*extra: tuple[tarfile.TarInfo, bytes]) -> bytes:
    return publish_body(metadata_bytes(SPEC), crate_with(*extra))


def metadata_with(**changes: object) -> bytes:
    return publish_body(json.dumps(publish_metadata(SPEC) | changes).encode(), build_crate(SPEC))


def special(name: str, kind: bytes, link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = member(name, kind, link=link)
    info.devmajor, info.devminor = 1, 3
    return info, b""


def bomb(size: int, incompressible: int = 0) -> bytes:
    """SPEC's `.crate` with a file of `incompressible` random bytes then `size` zeros."""
    return crate_with((member(f"{TOP}/big.bin"), os.urandom(incompressible) + bytes(size)))


def hostile() -> list[tuple[str, bytes, int, str]]:
    """(what, body, status, words of the refusal) of every hostile publish."""
    return [
        (
            "a gzip bomb (ratio)",
            publish_body(metadata_bytes(SPEC), bomb(8 << 20)),
            413,
            "more than 200 times its compressed size",
        ),
        (
            "a gzip bomb (size)",
            publish_body(metadata_bytes(SPEC), bomb(4 << 20, incompressible=24 << 10)),
            413,
            "more than this registry's limit of 3 MB",
        ),
        (
            "a tar bomb (member count)",
            body_with(*((member(f"{TOP}/f{i}"), b"") for i in range(60))),
            413,
            "more than 50 entries",
        ),
        ("an absolute path", body_with((member("/etc/cron.d/evil"), b"x")), 400, "absolute path"),
        ("a `..` path", body_with((member(f"{TOP}/../../evil"), b"x")), 400, "'..'"),
        (
            "a symlink",
            body_with(special(f"{TOP}/l", tarfile.SYMTYPE, "/etc/passwd")),
            400,
            "symbolic",
        ),
        (
            "a hard link",
            body_with(special(f"{TOP}/h", tarfile.LNKTYPE, f"{TOP}/Cargo.toml")),
            400,
            "a hard link",
        ),
        ("a character device", body_with(special(f"{TOP}/c", tarfile.CHRTYPE)), 400, "a device"),
        ("a block device", body_with(special(f"{TOP}/b", tarfile.BLKTYPE)), 400, "a device"),
        ("a FIFO", body_with(special(f"{TOP}/p", tarfile.FIFOTYPE)), 400, "a FIFO"),
        (
            "a Cargo.toml with another version",
            publish_body(
                metadata_bytes(SPEC),
                gzip_bytes(
                    tar_bytes(
                        [
                            (
                                member(f"{TOP}/Cargo.toml"),
                                cargo_toml(replace(SPEC, version="9.0.0")).encode(),
                            )
                        ]
                    )
                ),
            ),
            400,
            "version is '9.0.0' in Cargo.toml",
        ),
        (
            "a Cargo.toml with other links",
            metadata_with(links="other"),
            400,
            "links is None in Cargo.toml but 'other'",
        ),
        ("metadata over max_metadata", metadata_with(readme="x" * 70_000), 413, "64 kB"),
        (
            "metadata nested 60,000 deep",
            publish_body(b"[" * 60_000, build_crate(SPEC)),
            400,
            "nested more than 32 levels",
        ),
        (
            "an unterminated string of escaped quotes",
            publish_body(b'{"name":"' + b'\\"' * 30_000, build_crate(SPEC)),
            400,
            "not valid JSON",
        ),
        ("six keywords", metadata_with(keywords=list("abcdef")), 400, "at most 5"),
        ("a bad keyword", metadata_with(keywords=["no spaces"]), 400, "invalid keyword"),
        ("six categories", metadata_with(categories=list("abcdef")), 400, "at most 5"),
        ("a long description", metadata_with(description="d" * 1001), 400, "at most 1000"),
        ("a long license", metadata_with(license="MIT OR " * 200), 400, "at most 1024"),
        ("too many authors", metadata_with(authors=["a"] * 101), 400, "at most 100"),
        ("a non-ASCII name", metadata_with(name="acme-hostilé"), 400, "ASCII only"),
        ("a Cyrillic look-alike", metadata_with(name="\u0430cme-hostile"), 400, "U+0430"),
    ]


def refuse(appliance: Appliance, token: str, body: bytes, status: int, words: str) -> None:
    """Publish `body`: refused with `status` and `words` in cargo's error form, nothing kept."""
    before = stored(appliance), crate_rows(appliance)
    got, answer = appliance.request("PUT", "/api/v1/crates/new", body, {"Authorization": token})
    assert got == status, answer
    assert list(json.loads(answer)) == ["errors"], answer
    assert words in errors(answer), errors(answer)
    assert (stored(appliance), crate_rows(appliance)) == before
    assert not list((appliance.data_dir / "private" / "crates").rglob("*.partial"))


def publish_ok(appliance: Appliance, token: str, spec: CrateSpec) -> None:
    body = publish_body(metadata_bytes(spec), build_crate(spec))
    status, answer = appliance.request("PUT", "/api/v1/crates/new", body, {"Authorization": token})
    assert status == 200, answer


@pytest.fixture
def hostile_target(start_appliance: StartAppliance) -> tuple[Appliance, str]:
    appliance = start_appliance(tables={"private": LIMITS})
    add_user(appliance, "mallory")
    return appliance, create_token(appliance, "mallory")


def test_hostile_publishes_are_refused_and_leave_nothing(
    hostile_target: tuple[Appliance, str],
) -> None:
    appliance, token = hostile_target
    for what, body, status, words in hostile():
        started = time.monotonic()
        try:
            refuse(appliance, token, body, status, words)
        except AssertionError as error:
            raise AssertionError(f"{what}: {error}") from None
        assert time.monotonic() - started < 5, what
    publish_ok(appliance, token, SPEC)  # and the same server still takes a good one
    log = appliance.log.read_text()
    assert "Traceback" not in log
    assert "unhandled error" not in log


def test_look_alike_names_are_refused_and_new_versions_still_publish(
    hostile_target: tuple[Appliance, str],
) -> None:
    appliance, token = hostile_target
    publish_ok(appliance, token, CrateSpec("acme-tokio", "1.0.0"))
    for name, words in [
        ("Acme-Tokio", "already published here as `acme-tokio`"),
        ("acme_tokio", "already published here as `acme-tokio`"),
        ("acme-tok1o", "looks like the existing private crate `acme-tokio`"),
        ("ACME_T0KIO", "looks like the existing private crate `acme-tokio`"),
        ("acrne-tokio", "looks like the existing private crate `acme-tokio`"),
        ("acme-toklo", "looks like the existing private crate `acme-tokio`"),
    ]:
        spec = CrateSpec(name, "2.0.0")
        refuse(appliance, token, publish_body(metadata_bytes(spec), build_crate(spec)), 409, words)
    publish_ok(appliance, token, CrateSpec("acme-wire", "0.1.0"))
    spec = CrateSpec("acme-vvire", "0.1.0")
    body = publish_body(metadata_bytes(spec), build_crate(spec))
    refuse(appliance, token, body, 409, "looks like the existing private crate `acme-wire`")
    # The crate itself takes new versions; an unrelated name is a new crate.
    publish_ok(appliance, token, CrateSpec("acme-tokio", "1.1.0"))
    publish_ok(appliance, token, CrateSpec("acme-tokyo", "0.1.0"))
    assert crate_rows(appliance) == ["acme-tokio", "acme-tokyo", "acme-wire"]


def test_a_taken_version_with_other_bytes_leaves_no_file(
    hostile_target: tuple[Appliance, str],
) -> None:
    appliance, token = hostile_target
    publish_ok(appliance, token, SPEC)
    other = CrateSpec(SPEC.name, SPEC.version, lib_source="pub fn other() {}\n")
    body = publish_body(metadata_bytes(other), build_crate(other))
    refuse(appliance, token, body, 409, "already exists")
