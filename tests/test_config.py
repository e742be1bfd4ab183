"""Configuration: layering, and errors that name the key and where it was set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ghostcrate.config import ConfigError, env_name, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ghostcrate.toml"
    path.write_text(text)
    return path


def test_defaults_need_no_file() -> None:
    settings = load_settings(None, {}).settings
    assert settings.server.listen == "127.0.0.1:8080"
    assert settings.server.base_url == "http://127.0.0.1:8080"
    assert settings.upstream.index == "https://index.crates.io/"
    assert settings.upstream.index_ttl == 60
    assert settings.data_dir == Path("ghostcrate-data")


def test_documented_keys_are_read_from_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
data_dir = "./cache-here"
[server]
listen = "0.0.0.0:9000"
public_url = "https://mirror.example.com/"
[upstream]
index = "http://127.0.0.1:1234"
index_ttl = 5
""",
    )
    loaded = load_settings(path, {})
    settings = loaded.settings
    assert settings.data_dir == tmp_path / "cache-here"
    assert settings.server.port == 9000
    assert settings.server.base_url == "https://mirror.example.com"
    assert settings.upstream.index == "http://127.0.0.1:1234/"
    assert settings.upstream.index_ttl == 5
    assert loaded.origins["upstream.index_ttl"] == str(path)
    assert loaded.origins["upstream.read_timeout"] == "default"


def test_environment_overrides_file_and_command_line_overrides_both(tmp_path: Path) -> None:
    path = write(tmp_path, "[upstream]\nindex_ttl = 5\n[server]\nlisten = '127.0.0.1:1'\n")
    loaded = load_settings(
        path,
        {"GHOSTCRATE_UPSTREAM__INDEX_TTL": "7", "GHOSTCRATE_SERVER__LISTEN": "127.0.0.1:2"},
        {"server.listen": "127.0.0.1:3"},
    )
    assert loaded.settings.upstream.index_ttl == 7
    assert (
        loaded.origins["upstream.index_ttl"]
        == "environment variable GHOSTCRATE_UPSTREAM__INDEX_TTL"
    )
    assert loaded.settings.server.listen == "127.0.0.1:3"
    assert loaded.origins["server.listen"] == "command line"


def test_stale_after_defaults_to_2_s_and_0_is_allowed() -> None:
    assert load_settings(None, {}).settings.upstream.stale_after == 2
    loaded = load_settings(None, {"GHOSTCRATE_UPSTREAM__STALE_AFTER": "0"})
    assert loaded.settings.upstream.stale_after == 0
    assert (
        loaded.origins["upstream.stale_after"]
        == "environment variable GHOSTCRATE_UPSTREAM__STALE_AFTER"
    )


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[upstream]\nindex_ttl = 3\n")
    settings = load_settings(None, {"GHOSTCRATE_CONFIG": str(path)}).settings
    assert settings.upstream.index_ttl == 3


def test_env_rule() -> None:
    assert env_name("data_dir") == "GHOSTCRATE_DATA_DIR"
    assert env_name("upstream.index_ttl") == "GHOSTCRATE_UPSTREAM__INDEX_TTL"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[upstrem]\nindex = 'x'\n", "unknown key 'upstrem'"),
        ("[upstream]\nindx = 'x'\n", "unknown key 'upstream.indx'"),
        ("server = 3\n", "key 'server' must be a table"),
        ("[upstream]\nindex_ttl = 'soon'\n", "key 'upstream.index_ttl'"),
        ("[upstream]\nindex_ttl = -1\n", "key 'upstream.index_ttl'"),
        ("[upstream]\nstale_after = -1\n", "key 'upstream.stale_after'"),
        ("[upstream]\nindex = 'ftp://x'\n", "key 'upstream.index': expected an http"),
        ("[server]\nlisten = 'localhost'\n", "key 'server.listen': expected HOST:PORT"),
        ("[server]\nlisten = '127.0.0.1:70000'\n", "key 'server.listen'"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert str(path) in str(caught.value)
    assert expected in str(caught.value)


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"GHOSTCRATE_UPSTREAM__INDEX_TTL.*upstream\.index_ttl"):
        load_settings(None, {"GHOSTCRATE_UPSTREAM__INDEX_TTL": "soon"})
    with pytest.raises(ConfigError, match="GHOSTCRATE_UPSTREAM_INDEX: unknown key"):
        load_settings(None, {"GHOSTCRATE_UPSTREAM_INDEX": "http://x"})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.toml", {})


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ghostcrate", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_check_config_reports_the_bad_key_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "[upstream]\nindex_ttl = 'soon'\n")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert str(path) in result.stderr
    assert "upstream.index_ttl" in result.stderr


def test_check_config_prints_values_and_origins(tmp_path: Path) -> None:
    path = write(tmp_path, "[upstream]\nindex_ttl = 9\n")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert f"upstream.index_ttl = 9.0  ({path})" in result.stdout
    assert "upstream.index = 'https://index.crates.io/'  (default)" in result.stdout


def test_serve_refuses_a_bad_config_before_listening(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nlisten = 'nowhere'\n")
    result = run_cli("serve", "--config", str(path))
    assert result.returncode == 2
    assert "server.listen" in result.stderr


def test_version_and_help() -> None:
    assert run_cli("--version").stdout.startswith("ghostcrate ")
    help_text = run_cli("serve", "--help").stdout
    assert "--config" in help_text
    assert "--listen" in help_text


def test_check_config_does_not_print_passwords(tmp_path: Path) -> None:
    path = write(tmp_path, '[upstream]\nproxy = "http://bob:hunter2@proxy.corp:3128"\n')
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "http://bob:****@proxy.corp:3128" in result.stdout
