"""The secret-leak scanner finds a planted leak, says where and what kind, never the secret."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.support.leaks import Leak, LeakRegistry, key_material, report

TOKEN = "gcr_plantedPlantedPlanted0123456789"


def test_a_planted_leak_in_a_log_file_is_found(tmp_path: Path) -> None:
    registry = LeakRegistry()
    registry.secret("API token", TOKEN)
    log = tmp_path / "ghostcrate.log"
    log.write_text(f'{{"msg": "published", "credential": "{TOKEN}"}}\n')
    registry.log_file(log)
    clean = tmp_path / "clean.log"
    clean.write_text('{"msg": "published"}\n')
    registry.log_file(clean)
    leaks = registry.leaks()
    assert leaks == [Leak(str(log), "API token")]
    message = report(leaks)
    assert str(log) in message
    assert "API token" in message
    assert TOKEN not in message


def test_output_that_shows_its_own_secret_is_exempt_but_no_other() -> None:
    registry = LeakRegistry()
    stdout = f"{TOKEN}\n"
    registry.output("token create's stdout", stdout)
    registry.secret("API token", TOKEN, shown_in=stdout)
    assert registry.leaks() == []
    registry.output("the 403 answer to PUT /api/v1/crates/new", f'{{"detail": "{TOKEN}"}}')
    assert registry.leaks() == [Leak("the 403 answer to PUT /api/v1/crates/new", "API token")]


def test_short_values_are_not_secrets_and_config_pointers_are_not_values() -> None:
    registry = LeakRegistry()
    registry.secret("password", "alice")
    registry.config_secrets(
        "",
        {"ldap": {"bind_password": "service secret", "bind_password_file": "/etc/pw"}},
    )
    assert set(registry.secrets) == {"service secret"}
    assert registry.secrets["service secret"][0] == "config value ldap.bind_password"


def test_signing_keys_are_read_from_data_dirs(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    (tmp_path / "data" / "keys").mkdir(parents=True)
    (tmp_path / "data" / "keys" / "session-1.pem").write_text(pem)
    log = tmp_path / "ghostcrate.log"
    seed = key_material(pem)[-1]
    log.write_text(f"debug dump d={seed}\n")
    registry = LeakRegistry()
    registry.data_dir(tmp_path / "data")
    registry.log_file(log)
    assert registry.leaks() == [Leak(str(log), "session signing key")]
