"""Secrets stay secret: owner-only files, and never in check-config, backups' listings or logs."""

from __future__ import annotations

import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.appliance import Appliance
from tests.support.leaks import LEAKS, key_material
from tests.support.private import create_token
from tests.support.sessions import sign_in
from tests.support.upstream import FakeUpstream

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
PASSWORD = "correct horse battery"
S3_SECRET = "s3-secret-key-never-shown"
LDAP_SECRET = "ldap-bind-password-never-shown"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_holding_secrets_are_owner_only(
    start_appliance: StartAppliance, tmp_path: Path
) -> None:
    appliance = start_appliance()
    added = appliance.run("user", "add", "alice", "--password-stdin", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    create_token(appliance, "alice")
    sign_in(appliance, "alice", PASSWORD)  # makes a session signing key
    private, keys = appliance.data_dir / "private", appliance.data_dir / "keys"
    assert mode(private) == 0o700
    database = [private / f"registry.db{suffix}" for suffix in ("", "-wal", "-shm")]
    assert [mode(path) for path in database] == [0o600] * 3
    assert mode(keys) == 0o700
    pems = list(keys.glob("*.pem"))
    assert pems
    assert {mode(pem) for pem in pems} == {0o600}

    backups = tmp_path / "backups"
    backups.mkdir()
    made = appliance.run("backup", "--output", str(backups))
    assert made.returncode == 0, made.stderr
    (backup,) = backups.iterdir()
    assert mode(backup) == 0o600
    verified = appliance.run("backup", "--verify", str(backup))
    assert verified.returncode == 0, verified.stderr
    with tarfile.open(backup) as archive:
        listing = "\n".join(archive.getnames())
    LEAKS.output(f"the member names of {backup}", listing)
    for material in key_material(pems[0].read_text()):
        assert material not in listing
        assert material not in verified.stdout + verified.stderr

    # Modes an older version left wider are narrowed at the next start.
    assert appliance.stop() == 0
    for path in [private, *database[:1]]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    appliance.start()
    assert (mode(private), mode(database[0])) == (0o700, 0o600)


def test_check_config_never_shows_a_secret(tmp_path: Path, upstream: FakeUpstream) -> None:
    appliance = Appliance(
        tmp_path / "appliance",
        upstream.url,
        tables={
            "s3": {
                "bucket": "ghostcrate-secrets",
                "endpoint_url": "http://127.0.0.1:9",
                "access_key_id": "AKIDEXAMPLE",
                "secret_access_key": S3_SECRET,
            },
            "auth.ldap": {
                "url": "ldap://127.0.0.1:9",
                "bind_dn": "cn=ghostcrate,ou=services,dc=example,dc=org",
                "bind_password": LDAP_SECRET,
                "user_base": "ou=people,dc=example,dc=org",
            },
        },
    )
    checked = appliance.run("check-config")
    assert checked.returncode == 0, checked.stderr
    assert "s3.secret_access_key" in checked.stdout
    assert "auth.ldap.bind_password" in checked.stdout
    for secret in (S3_SECRET, LDAP_SECRET):
        assert secret not in checked.stdout + checked.stderr


def test_a_wrong_secret_value_is_not_echoed(tmp_path: Path, upstream: FakeUpstream) -> None:
    """A config error names the key, and shows the value only when it is not a secret."""
    appliance = Appliance(
        tmp_path / "appliance",
        upstream.url,
        tables={
            "auth.ldap": {
                "url": "ldap://127.0.0.1:9",
                "bind_dn": "cn=ghostcrate,dc=example,dc=org",
                "bind_password": 31415926535,  # a number: not a valid password
                "user_base": "dc=example,dc=org",
            },
        },
    )
    checked = appliance.run("check-config")
    assert checked.returncode == 2, checked.stdout
    assert "auth.ldap.bind_password" in checked.stderr
    assert "31415926535" not in checked.stdout + checked.stderr
