"""The `.crate` archive: real ones pass, hostile ones are refused without unbounded memory."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tracemalloc
import zlib
from dataclasses import replace
from pathlib import Path

import pytest

from ghostcrate.private.archive import Manifest, check_archive
from ghostcrate.private.errors import PublishRejected
from ghostcrate.private.metadata import PublishMeta, parse_metadata
from tests.support.crates import CrateSpec, built, cargo_toml, corpus
from tests.support.publish import gzip_bytes, member, metadata_bytes, tar_bytes

META = PublishMeta(name="Demo", vers="1.0.0")
TOP = "Demo-1.0.0"
MANIFEST = b'[package]\nname = "Demo"\nversion = "1.0.0"\n'


def crate_of(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    """A gzip'd tar of `members`."""
    return gzip_bytes(tar_bytes(members))


def good_members() -> list[tuple[tarfile.TarInfo, bytes]]:
    return [(member(f"{TOP}/Cargo.toml"), MANIFEST), (member(f"{TOP}/src/lib.rs"), b"")]


def refused(data: bytes, match: str, meta: PublishMeta = META, **limits: int) -> PublishRejected:
    with pytest.raises(PublishRejected, match=match) as caught:
        check_archive(data, meta, **limits)
    return caught.value


# --- real archives ---------------------------------------------------------


@pytest.mark.parametrize("spec", corpus(), ids=lambda s: f"{s.name}-{s.version}")
def test_corpus_crates_pass(spec: CrateSpec) -> None:
    crate = built(spec)
    manifest = check_archive(crate.data, parse_metadata(metadata_bytes(spec)))
    assert (manifest.name, manifest.version) == (spec.name, spec.version)
    assert manifest.links == spec.links
    assert manifest.rust_version == spec.rust_version
    assert manifest.dependencies == tuple(sorted({d.name for d in spec.deps}))


def test_archive_made_by_cargo_package(tmp_path: Path) -> None:
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is not installed")
    package = tmp_path / "pkg"
    (package / "src").mkdir(parents=True)
    (package / "Cargo.toml").write_text(
        '[package]\nname = "Tiny-Pkg"\nversion = "0.3.1-beta.2"\nedition = "2021"\n'
        'description = "t"\nlicense = "MIT"\nlinks = "tinyz"\nrust-version = "1.60"\n\n'
        "[features]\nfast = []\n"
    )
    (package / "build.rs").write_text("fn main() {}\n")
    (package / "src" / "lib.rs").write_text("pub fn f() {}\n")
    env = {**os.environ, "CARGO_HOME": str(tmp_path / "cargo-home")}
    subprocess.run(
        [cargo, "package", "--offline", "--allow-dirty", "--no-verify", "--quiet"],
        cwd=package,
        env=env,
        check=True,
        capture_output=True,
    )
    data = (package / "target" / "package" / "Tiny-Pkg-0.3.1-beta.2.crate").read_bytes()
    meta = PublishMeta(name="Tiny-Pkg", vers="0.3.1-beta.2", links="tinyz", rust_version="1.60")
    assert check_archive(data, meta) == Manifest("Tiny-Pkg", "0.3.1-beta.2", "tinyz", "1.60", ())
    refused(data, "outside tiny-pkg-0.3.1-beta.2/", replace(meta, name="tiny-pkg"))


def test_directory_entries_and_the_top_directory_are_fine() -> None:
    data = crate_of(
        (member(TOP, tarfile.DIRTYPE), b""),
        (member(f"{TOP}/src", tarfile.DIRTYPE), b""),
        *good_members(),
    )
    assert check_archive(data, META).name == "Demo"


def test_cargo_toml_orig_is_not_required_but_allowed() -> None:
    data = crate_of(*good_members(), (member(f"{TOP}/Cargo.toml.orig"), b"not toml ["))
    assert check_archive(data, META).version == "1.0.0"


# --- the gzip layer --------------------------------------------------------


def test_non_gzip_is_refused() -> None:
    refused(tar_bytes(good_members()), "not gzip-compressed")


def test_truncated_gzip_is_refused() -> None:
    data = crate_of(*good_members())
    for cut in (10, len(data) // 2, len(data) - 4, len(data) - 1):
        refused(data[:cut], "not a valid gzip stream")


def test_corrupt_gzip_is_refused() -> None:
    data = bytearray(crate_of(*good_members()))
    data[-6] ^= 0xFF  # the CRC-32 in the trailer
    refused(bytes(data), "not a valid gzip stream")


def test_data_after_the_gzip_stream_is_refused() -> None:
    refused(crate_of(*good_members()) + b"junk", "data after its gzip stream")
    refused(crate_of(*good_members()) * 2, "data after its gzip stream")


def streamed_bomb(size: int) -> bytes:
    """A valid gzip'd tar holding `size` zero bytes, built without ever holding them.

    Each 1 MiB of zeros is deflated once after a full flush, which resets the history, so the
    same compressed chunk stands for every further MiB; only the CRC walks the whole data.
    """
    header = tarfile.TarInfo(f"{TOP}/zeros.bin")
    header.size = size
    head = header.tobuf(format=tarfile.GNU_FORMAT)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff", deflate.compress(head)]
    parts.append(deflate.flush(zlib.Z_FULL_FLUSH))
    block = bytes(1 << 20)
    chunk = deflate.compress(block) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = zlib.crc32(head)
    for _ in range(size >> 20):
        parts.append(chunk)
        crc = zlib.crc32(block, crc)
    tail = bytes(1024)
    parts += [deflate.compress(tail), deflate.flush()]
    total = len(head) + size + len(tail)
    trailer = zlib.crc32(tail, crc).to_bytes(4, "little") + (total % 2**32).to_bytes(4, "little")
    return b"".join([*parts, trailer])


def test_streamed_bomb_is_a_valid_gzip_tar() -> None:
    data = streamed_bomb(3 << 20)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        (info,) = tar.getmembers()
        assert info.size == 3 << 20


@pytest.fixture(scope="module")
def gigabyte_bomb() -> bytes:
    return streamed_bomb(1 << 30)


def test_gzip_bomb_is_stopped_while_inflating(gigabyte_bomb: bytes) -> None:
    assert len(gigabyte_bomb) < 2 << 20
    tracemalloc.start()
    try:
        error = refused(gigabyte_bomb, "more than 200 times its compressed size")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert error.status == 413
    assert peak < 16 << 20


def test_absolute_unpacked_limit(gigabyte_bomb: bytes) -> None:
    error = refused(gigabyte_bomb, "limit of 8 MB", max_unpacked=8 << 20, max_ratio=10_000)
    assert error.status == 413


def test_ratio_limit_on_an_ordinary_crate() -> None:
    data = crate_of(*good_members(), (member(f"{TOP}/zeros"), bytes(4 << 20)))
    refused(data, "times its compressed size")
    assert check_archive(data, META, max_ratio=100_000).name == "Demo"


# --- members ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "what"),
    [
        (tarfile.SYMTYPE, "symbolic link"),
        (tarfile.LNKTYPE, "hard link"),
        (tarfile.CHRTYPE, "device"),
        (tarfile.BLKTYPE, "device"),
        (tarfile.FIFOTYPE, "FIFO"),
        (tarfile.CONTTYPE, "unsupported tar type"),
    ],
)
def test_special_members_are_refused(kind: bytes, what: str) -> None:
    link = f"{TOP}/Cargo.toml" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
    data = crate_of(*good_members(), (member(f"{TOP}/special", kind, link=link), b""))
    refused(data, what)


@pytest.mark.parametrize(
    ("path", "match"),
    [
        (f"{TOP}/../x", "'..'"),
        (f"{TOP}/src/../../x", "'..'"),
        (f"{TOP}/./x", "'.'"),
        (f"{TOP}//x", "empty"),
        (f"{TOP}/a\\..\\x", "backslash"),
        ("/etc/passwd", "absolute path"),
        (f"/{TOP}/x", "absolute path"),
        ("other-1.0.0/x", "outside Demo-1.0.0/"),
        ("demo-1.0.0/x", "outside Demo-1.0.0/"),
        (f"{TOP}x/y", "outside Demo-1.0.0/"),
        (TOP, "outside Demo-1.0.0/"),
        ("x", "outside Demo-1.0.0/"),
    ],
)
def test_bad_paths_are_refused(path: str, match: str) -> None:
    refused(crate_of(*good_members(), (member(path), b"x")), match)


def test_long_paths_use_gnu_long_names_and_pass() -> None:
    deep = f"{TOP}/" + "/".join(["d" * 60] * 5) + "/file.rs"
    assert check_archive(crate_of(*good_members(), (member(deep), b"")), META).name == "Demo"


def test_oversized_long_name_header_is_refused() -> None:
    refused(crate_of(*good_members(), (member(f"{TOP}/" + "n" * 100_000), b"")), "extension header")


def test_duplicate_members_are_refused() -> None:
    refused(crate_of(*good_members(), (member(f"{TOP}/src/lib.rs"), b"again")), "twice")


def test_too_many_members_are_refused() -> None:
    files = [(member(f"{TOP}/f{i}"), b"") for i in range(50)]
    error = refused(crate_of(*good_members(), *files), "more than 40 entries", max_members=40)
    assert error.status == 413
    assert check_archive(crate_of(*good_members(), *files), META, max_members=52).name == "Demo"


def test_tar_bomb_by_member_count_stops_at_the_limit() -> None:
    files = [(member(f"{TOP}/f{i}"), b"") for i in range(20_000)]
    refused(crate_of(*good_members(), *files), "more than 10000 entries")


def test_empty_archive_is_refused() -> None:
    refused(gzip_bytes(b""), "no Demo-1.0.0/Cargo.toml|not a valid tar")
    refused(gzip_bytes(bytes(10240)), "no Demo-1.0.0/Cargo.toml")


def test_garbage_tar_is_refused() -> None:
    refused(gzip_bytes(b"x" * 5000), "not a valid tar")


# --- Cargo.toml ------------------------------------------------------------


def test_missing_manifest_is_refused() -> None:
    refused(crate_of((member(f"{TOP}/src/lib.rs"), b"")), "no Demo-1.0.0/Cargo.toml")
    refused(crate_of((member(f"{TOP}/sub/Cargo.toml"), MANIFEST)), "no Demo-1.0.0/Cargo.toml")


@pytest.mark.parametrize("name", ["cargo.toml", "CARGO.TOML", "Cargo.Toml"])
def test_other_cased_manifests_are_refused(name: str) -> None:
    refused(crate_of(*good_members(), (member(f"{TOP}/{name}"), MANIFEST)), "exactly Cargo.toml")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"[package\nname = 1", "not valid TOML"),
        (b"\xff\xfe", "not UTF-8"),
        (b"a = " + b"[" * 5000 + b"]" * 5000, "nested too deeply|not valid TOML"),
        (b'[lib]\npath = "x"\n', "no \\[package\\] table"),
        (b'package = "x"\n', "no \\[package\\] table"),
        (b'[package]\nname = "Demo"\n', "package.name and package.version as strings"),
        (b'[package]\nname = "Demo"\nversion.workspace = true\n', "as strings"),
        (MANIFEST + b"links = 3\n", "package.links and package.rust-version"),
    ],
)
def test_invalid_manifests_are_refused(content: bytes, match: str) -> None:
    refused(crate_of((member(f"{TOP}/Cargo.toml"), content)), match)


@pytest.mark.parametrize(
    ("manifest", "meta", "match"),
    [
        (b'[package]\nname = "demo"\nversion = "1.0.0"\n', META, "name is 'demo' in Cargo.toml"),
        (b'[package]\nname = "Demo"\nversion = "1.0.1"\n', META, "version is '1.0.1'"),
        (MANIFEST + b'links = "z"\n', META, "links is 'z' in Cargo.toml but None"),
        (MANIFEST, replace(META, links="z"), "links is None in Cargo.toml but 'z'"),
        (
            MANIFEST + b'rust-version = "1.70"\n',
            replace(META, rust_version="1.60"),
            "rust-version is '1.70'",
        ),
    ],
)
def test_manifest_must_agree_with_metadata(manifest: bytes, meta: PublishMeta, match: str) -> None:
    refused(crate_of((member(f"{TOP}/Cargo.toml"), manifest)), match, meta)


def test_rust_version_only_in_one_place_is_fine() -> None:
    data = crate_of((member(f"{TOP}/Cargo.toml"), MANIFEST + b'rust-version = "1.70"\n'))
    assert check_archive(data, META).rust_version == "1.70"


def test_oversized_manifest_is_refused() -> None:
    big = MANIFEST + b"#" * (5 << 20) + b"\n"
    assert refused(crate_of((member(f"{TOP}/Cargo.toml"), big)), "reads at most 4 MB").status == 413


def test_legacy_project_table_and_target_dependencies() -> None:
    spec = CrateSpec("Demo", "1.0.0")
    text = cargo_toml(spec).replace("[package]", "[project]")
    text += '\n[target."cfg(unix)".dependencies]\nlibc = "0.2"\n[dev_dependencies]\nold = "1"\n'
    manifest = check_archive(crate_of((member(f"{TOP}/Cargo.toml"), text.encode())), META)
    assert manifest.dependencies == ("libc", "old")
