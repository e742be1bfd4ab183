"""Session signing keys: file modes, rotation seen by running workers, forged tokens refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ghostcrate.private.signing_keys import key_ids, rotate
from tests.support.appliance import Appliance
from tests.support.private import errors
from tests.support.sessions import jwt_part, me, sign_in

pytestmark = pytest.mark.e2e

StartAppliance = Callable[..., Appliance]
PASSWORD = "correct horse battery"
PROBES = 12


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def add_password_user(appliance: Appliance, name: str) -> None:
    added = appliance.run("user", "add", name, "--password-stdin", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr


def private_key(appliance: Appliance, kid: str) -> Ed25519PrivateKey:
    pem = (appliance.data_dir / "keys" / f"session-{kid}.pem").read_bytes()
    key = serialization.load_pem_private_key(pem, None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def test_keys_are_private_and_a_rotation_reaches_running_workers(
    start_appliance: StartAppliance,
) -> None:
    previous = os.umask(0)  # the modes must not depend on the umask
    try:
        appliance = start_appliance(server={"workers": 2})
    finally:
        os.umask(previous)
    keys = appliance.data_dir / "keys"
    assert mode(keys) == 0o700
    [old] = key_ids(keys)
    assert mode(keys / f"session-{old}.pem") == 0o600
    add_password_user(appliance, "alice")
    before = sign_in(appliance, "alice", PASSWORD)
    assert jwt_part(before["token"], 0)["kid"] == old

    rotated = appliance.run("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip()
    assert key_ids(keys) == [old, new]
    assert mode(keys / f"session-{new}.pem") == 0o600
    # Both workers sign with the new key within a second, and verify both keys' tokens.
    time.sleep(1.0)
    for _ in range(PROBES):
        after = sign_in(appliance, "alice", PASSWORD)
        assert jwt_part(after["token"], 0)["kid"] == new
        assert me(appliance, after["token"])[0] == 200
        assert me(appliance, before["token"])[0] == 200


def test_a_worker_that_missed_the_rotation_verifies_new_tokens(
    start_appliance: StartAppliance,
) -> None:
    """A key made behind the server's back (no change recorded) is read when a token names it."""
    appliance = start_appliance(server={"workers": 2})
    add_password_user(appliance, "alice")
    session = sign_in(appliance, "alice", PASSWORD)
    keys = appliance.data_dir / "keys"
    new = rotate(keys, keep=3600)
    claims = jwt_part(session["token"], 1)
    token = jwt.encode(claims, private_key(appliance, new), algorithm="EdDSA", headers={"kid": new})
    time.sleep(1.1)  # past the least time between reloads for unknown key ids
    assert {me(appliance, token)[0] for _ in range(PROBES)} == {200}


def test_retired_keys_are_removed_once_their_tokens_have_expired(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = rotate(keys, keep=3600)
    second = rotate(keys, keep=3600)
    assert key_ids(keys) == [first, second]  # the first still verifies its tokens
    time.sleep(0.05)
    # The first was retired 50 ms ago (when the second was made): gone; the second was
    # retired just now: kept.
    third = rotate(keys, keep=0.01)
    assert key_ids(keys) == [second, third]
    assert not list(keys.glob(".*.tmp"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, object], claims: dict[str, object]) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def test_forged_session_tokens_are_refused(start_appliance: StartAppliance) -> None:
    appliance = start_appliance()
    add_password_user(appliance, "alice")
    session = sign_in(appliance, "alice", PASSWORD)
    kid = jwt_part(session["token"], 0)["kid"]
    claims = jwt_part(session["token"], 1)
    real = private_key(appliance, kid)
    public_pem = real.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    hs256 = _unsigned({"alg": "HS256", "typ": "JWT", "kid": kid}, claims)
    signature = hmac.new(public_pem, hs256.encode(), hashlib.sha256).digest()
    forged = {
        "another key": jwt.encode(
            claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
        ),
        "alg none": _unsigned({"alg": "none", "typ": "JWT", "kid": kid}, claims) + ".",
        "HS256 with the public key": f"{hs256}.{_b64(signature)}",
        "an unknown kid": jwt.encode(claims, real, algorithm="EdDSA", headers={"kid": "nope"}),
        "another audience": jwt.encode(
            {**claims, "aud": "other"}, real, algorithm="EdDSA", headers={"kid": kid}
        ),
        "another issuer": jwt.encode(
            {**claims, "iss": "http://elsewhere"}, real, algorithm="EdDSA", headers={"kid": kid}
        ),
        "another user": jwt.encode(
            {**claims, "sub": "2"}, real, algorithm="EdDSA", headers={"kid": kid}
        ),
        "no such session": jwt.encode(
            {**claims, "sid": "made-up"}, real, algorithm="EdDSA", headers={"kid": kid}
        ),
        "no expiry": jwt.encode(
            {k: v for k, v in claims.items() if k != "exp"},
            real,
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        "a tampered name": session["token"].split(".")[0]
        + "."
        + _b64(json.dumps({**claims, "name": "root"}).encode())
        + "."
        + session["token"].split(".")[2],
    }
    assert me(appliance, session["token"])[0] == 200
    for what, token in forged.items():
        status, body = me(appliance, token)
        assert status == 403, (what, body)
        assert "authentication failed" in errors(body), what
        # Writes refuse them too.
        status, _ = appliance.request(
            "DELETE", "/api/v1/crates/x/1.0.0/yank", headers={"Authorization": token}
        )
        assert status == 403, what
