"""Configuration: layering, and errors that name the key and where it was set."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic_core import ErrorDetails

from ghostcrate.config import ConfigError, env_name, load_settings
from ghostcrate.config.loader import _describe
from tests.support.appliance import Appliance


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


def test_session_and_sign_in_keys_have_their_documented_defaults(tmp_path: Path) -> None:
    auth = load_settings(None, {}).settings.auth
    assert (auth.session_minutes, auth.refresh_days) == (15, 7)
    assert (auth.login_failures, auth.login_address_failures) == (5, 20)
    assert auth.login_window_seconds == 300
    path = write(
        tmp_path,
        "[auth]\nsession_minutes = 0.5\nrefresh_days = 1\nlogin_failures = 3\n"
        "login_address_failures = 9\nlogin_window_seconds = 60\n",
    )
    loaded = load_settings(path, {"GHOSTCRATE_AUTH__LOGIN_FAILURES": "4"})
    auth = loaded.settings.auth
    assert (auth.session_minutes, auth.refresh_days) == (0.5, 1)
    assert (auth.login_failures, auth.login_address_failures) == (4, 9)
    assert auth.login_window_seconds == 60
    assert loaded.origins["auth.session_minutes"] == str(path)
    assert loaded.origins["auth.login_failures"] == (
        "environment variable GHOSTCRATE_AUTH__LOGIN_FAILURES"
    )


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
        ("[upstrem]\nindex = 'x'\n", "unknown table [upstrem] (did you mean [upstream]?)"),
        (
            "[upstream]\nindx = 'x'\n",
            "unknown key 'upstream.indx' (did you mean 'upstream.index'?)",
        ),
        ("[server]\nindex_ttl = 5\n", "(did you mean 'upstream.index_ttl'?)"),
        ("[upstream.index]\nx = 1\n", "'upstream.index' must be a value, not a table"),
        ("server = 3\n", "'server' must be a table"),
        ("[upstream]\noffline = 'yes'\n", "'upstream.offline' must be true or false (got 'yes')"),
        ("[upstream]\noffline = 1\n", "'upstream.offline' must be true or false (got 1)"),
        ("[upstream]\noffline = 'true'\n", "must be true or false, without quotes (got 'true')"),
        ("[upstream]\nindex_ttl = '60'\n", "'upstream.index_ttl' must be a number, without quotes"),
        ("[upstream]\nindex_ttl = 'soon'\n", "'upstream.index_ttl' must be a number (got 'soon')"),
        ("[upstream]\nindex_ttl = -1\n", "'upstream.index_ttl' must be 0 or more (got -1)"),
        ("[upstream]\nstale_after = -1\n", "'upstream.stale_after' must be 0 or more (got -1)"),
        ("[server]\nworkers = 0\n", "'server.workers' must be greater than 0 (got 0)"),
        ("[server]\nworkers = 1.5\n", "'server.workers' must be a whole number (got 1.5)"),
        ("[server]\nlisten = 8080\n", "'server.listen' must be a string in quotes"),
        ("data_dir = 3\n", "'data_dir' must be a path in quotes"),
        ("[upstream]\nindex = 'ftp://x'\n", "'upstream.index' must be an http:// or https:// URL"),
        ("[upstream]\nca_bundle = 'absent.pem'\n", "'upstream.ca_bundle' must name an existing"),
        ("[server]\nlisten = 'localhost'\n", "'server.listen' must be HOST:PORT"),
        ("[server]\nlisten = '127.0.0.1:70000'\n", "'server.listen' must be HOST:PORT"),
        ("[server]\nlisten = '[::zz]:80'\n", "must be [IPV6]:PORT for an IPv6 address"),
        ("[cache]\nmemory_bytes = 'lots'\n", "'cache.memory_bytes' must be a size like"),
        ("[cache]\nmemory_bytes = 1.5\n", "'cache.memory_bytes' must be a size like"),
        ("[log]\nlevel = 'loud'\n", "'log.level' must be 'debug', 'info', 'warning' or 'error'"),
        ("[s3]\nprefix = 'x'\n", "'s3.bucket' must be set"),
        ("[s3]\nbucket = 'ab'\n", "'s3.bucket' must be at least 3 characters long"),
        ("[s3]\nbucket = 'abc'\naccess_key_id = 'k'\n", "[s3] must set both access_key_id"),
        ("[private]\nreserved = 'acme-*'\n", "'private.reserved' must be a list of strings"),
        ("[private]\nreserved = ['acme/*']\n", "'acme/*' is not a crate name pattern"),
        ("[auth]\nread_private = ['tokens']\n", "'tokens' is not one of anonymous, token"),
        ("[auth]\npublish = ['10.0.0.0/33']\n", "is not one of anonymous, token, admin"),
        ("[auth]\nrequired = 'yes'\n", "'auth.required' must be true or false"),
        ("[auth]\nsession_minutes = 0\n", "'auth.session_minutes' must be greater than 0"),
        ("[auth]\nrefresh_days = -1\n", "'auth.refresh_days' must be greater than 0"),
        ("[auth]\nlogin_failures = 0\n", "'auth.login_failures' must be greater than 0"),
        ("[auth]\nlogin_failures = 2.5\n", "'auth.login_failures' must be a whole number"),
        (
            "[auth]\nlogin_address_failures = 'many'\n",
            "'auth.login_address_failures' must be a whole number",
        ),
        (
            "[auth]\nlogin_window_seconds = 0\n",
            "'auth.login_window_seconds' must be greater than 0",
        ),
        (
            "[limits.publish]\nper_token = '10 per minute'\n",
            "'limits.publish.per_token' must be a rate like \"10/minute\"",
        ),
        ("[limits.api]\nper_user = '5/fortnight'\n", "'limits.api.per_user' must be a rate"),
        ("[limits.search]\nper_address = 30\n", "a number alone has no period"),
        ("[limits.login]\nper_address = '0/minute'\n", "a count, period or burst of 0"),
        ("[limits.api]\nper_token = '5/m burst 0'\n", "'limits.api.per_token' must be a rate"),
        ("[limits.api]\nper_tokens = '5/m'\n", "(did you mean 'limits.api.per_token'?)"),
        ("[limits]\nenabled = 'no'\n", "'limits.enabled' must be true or false"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_key_and_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: ")
    assert expected in problem
    for library_words in ("Input should", "Value error", "Field required", "validation error"):
        assert library_words not in problem


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "[upstreem]\nindex = 'x'\n[server]\nlistne = 'x'\nworkers = 0\n"
        "[upstream]\noffline = 'yes'\nproxy = 'ftp://bob:hunter2@proxy'\n",
    )
    environ = {"GHOSTCRATE_UPSTREAM_INDEX": "x", "GHOSTCRATE_UPSTREAM__INDEX_TTL": "soon"}
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ)
    variable = "environment variable GHOSTCRATE_UPSTREAM"
    assert caught.value.problems == [
        f"{path}: unknown table [upstreem] (did you mean [upstream]?)",
        f"{path}: unknown key 'server.listne' (did you mean 'server.listen'?)",
        f"{variable}_INDEX: unknown key (did you mean GHOSTCRATE_UPSTREAM__INDEX?)",
        f"{path}: 'server.workers' must be greater than 0 (got 0)",
        f"{variable}__INDEX_TTL: 'upstream.index_ttl' must be a number (got 'soon')",
        f"{path}: 'upstream.offline' must be true or false (got 'yes')",
        f"{path}: 'upstream.proxy' must be an http:// or https:// URL (got 'ftp://bob:****@proxy')",
    ]


@pytest.mark.parametrize(
    ("text", "value"), [("true", True), ("FALSE", False), ("1", True), (" 0 ", False)]
)
def test_environment_booleans(text: str, value: bool) -> None:
    settings = load_settings(None, {"GHOSTCRATE_UPSTREAM__OFFLINE": text}).settings
    assert settings.upstream.offline is value


@pytest.mark.parametrize("text", ["yes", "on", "no", "t", ""])
def test_environment_booleans_are_strict_too(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"GHOSTCRATE_UPSTREAM__OFFLINE": text})
    assert caught.value.problems == [
        "environment variable GHOSTCRATE_UPSTREAM__OFFLINE: "
        f"'upstream.offline' must be true, false, 1 or 0 (got {text!r})"
    ]


def test_environment_values_are_read_as_their_keys_types() -> None:
    environ = {
        "GHOSTCRATE_SERVER__WORKERS": "3",
        "GHOSTCRATE_UPSTREAM__INDEX_TTL": "2.5",
        "GHOSTCRATE_CACHE__MEMORY_BYTES": "1MiB",
        "GHOSTCRATE_CACHE__DISK_MAX_BYTES": "1000",
        "GHOSTCRATE_DATA_DIR": "relative/data",
        "GHOSTCRATE_PRIVATE__RESERVED": "acme-*, corp_*",
        "GHOSTCRATE_AUTH__READ_PRIVATE": "token,10.0.0.0/8",
    }
    settings = load_settings(None, environ).settings
    assert settings.private.reserved == ["acme-*", "corp_*"]
    assert settings.auth.read_private == ["token", "10.0.0.0/8"]
    assert settings.server.workers == 3
    assert settings.upstream.index_ttl == 2.5
    assert settings.cache.memory_bytes == 2**20
    assert settings.cache.disk_max_bytes == 1000
    assert settings.data_dir == Path("relative/data")


def test_an_unforeseen_validation_error_is_still_a_sentence() -> None:
    problem: ErrorDetails = {"type": "uuid_type", "loc": ("log", "level"), "msg": "", "input": 5}
    assert _describe(problem, {}, None) == "default: 'log.level' is not a valid value (got 5)"


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"GHOSTCRATE_UPSTREAM__INDEX_TTL: 'upstream\.index_ttl'"):
        load_settings(None, {"GHOSTCRATE_UPSTREAM__INDEX_TTL": "soon"})
    with pytest.raises(ConfigError, match=r"GHOSTCRATE_SERVER__WORKERS: .* a whole number"):
        load_settings(None, {"GHOSTCRATE_SERVER__WORKERS": "1.5"})
    with pytest.raises(ConfigError, match=r"GHOSTCRATE_NONSENSE: unknown key \(the rule is"):
        load_settings(None, {"GHOSTCRATE_NONSENSE": "x"})


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


def test_check_config_reports_every_problem_at_once(tmp_path: Path) -> None:
    appliance = Appliance(
        tmp_path,
        "http://127.0.0.1:9/",
        server={"workers": 0},
        tables={"upstreem": {"index": "x"}},
        offline="yes",
        index_ttl="60",
    )
    result = appliance.run("check-config", env={"GHOSTCRATE_SERVER__HTTP2": "on"})
    assert result.returncode == 2
    assert result.stdout == ""
    error = f"ghostcrate: configuration error: {appliance.config}:"
    assert result.stderr.splitlines() == [
        f"{error} unknown table [upstreem] (did you mean [upstream]?)",
        f"{error} 'server.workers' must be greater than 0 (got 0)",
        "ghostcrate: configuration error: environment variable GHOSTCRATE_SERVER__HTTP2: "
        "'server.http2' must be true, false, 1 or 0 (got 'on')",
        f"{error} 'upstream.index_ttl' must be a number, without quotes (got '60')",
        f"{error} 'upstream.offline' must be true or false (got 'yes')",
    ]


def test_check_config_shows_derived_values_as_derived(tmp_path: Path) -> None:
    derived = Appliance(tmp_path / "derived", "http://127.0.0.1:9/")
    result = derived.run("check-config")
    assert result.returncode == 0, result.stderr
    assert f"server.public_url = '{derived.url}'  (from server.listen)" in result.stdout
    given = Appliance(
        tmp_path / "given", "http://127.0.0.1:9/", server={"public_url": "https://m.example/"}
    )
    result = given.run("check-config")
    assert result.returncode == 0, result.stderr
    assert f"server.public_url = 'https://m.example'  ({given.config})" in result.stdout


@pytest.mark.parametrize(
    ("env", "keys", "shown"),
    [
        ({}, {}, "None  (default)"),
        ({"HTTP_PROXY": "http://a:1"}, {}, "None  (default)"),  # for http:// upstreams only
        (
            {"HTTPS_PROXY": "http://bob:hunter2@proxy.corp:3128"},
            {},
            "'http://bob:****@proxy.corp:3128'  (from HTTPS_PROXY)",
        ),
        (
            {"https_proxy": "http://a:1", "HTTPS_PROXY": "http://b:2"},
            {},
            "'http://a:1'  (from https_proxy)",
        ),
        (
            {"HTTPS_PROXY": "http://a:1", "NO_PROXY": ".example.com"},
            {},
            "'http://a:1'  (from HTTPS_PROXY; not for index.example.com, which NO_PROXY exempts)",
        ),
        ({"HTTPS_PROXY": "http://a:1"}, {"proxy": "http://c:3"}, "'http://c:3'  ({config})"),
        (
            {"NO_PROXY": "index.example.com"},
            {"proxy": "http://c:3"},
            "'http://c:3'  ({config}; not for index.example.com, which NO_PROXY exempts)",
        ),
    ],
)
def test_check_config_shows_which_proxy_is_used_and_why(
    tmp_path: Path, env: dict[str, str], keys: dict[str, Any], shown: str
) -> None:
    appliance = Appliance(tmp_path, "https://index.example.com/", **keys)
    result = appliance.run("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert f"upstream.proxy = {shown.format(config=appliance.config)}" in result.stdout
    assert "hunter2" not in result.stdout


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


LDAP = """
[auth.ldap]
url = "ldaps://ldap.corp:636"
bind_dn = "cn=ghostcrate,ou=services,dc=corp"
bind_password = "service secret"
user_base = "ou=people,dc=corp"
"""


def test_ldap_keys_are_read_with_their_defaults(tmp_path: Path) -> None:
    assert load_settings(None, {}).settings.auth.ldap is None
    path = write(
        tmp_path,
        LDAP
        + 'group_base = "ou=groups,dc=corp"\n'
        + "[auth.ldap.groups]\n"
        + 'developers = "acme:member"\n'
        + '"cn=Platform,ou=groups,dc=corp" = ["acme:admin", "acme:platform"]\n',
    )
    ldap = load_settings(path, {}).settings.auth.ldap
    assert ldap is not None
    assert ldap.url == "ldaps://ldap.corp:636"
    assert ldap.bind_password is not None
    assert ldap.bind_password.get_secret_value() == "service secret"
    assert (ldap.user_filter, ldap.group_filter) == ("(uid={name})", "(member={dn})")
    assert (ldap.timeout, ldap.start_tls, ldap.ca_file, ldap.groups_attribute) == (
        5.0,
        False,
        None,
        None,
    )
    assert ldap.groups == {
        "developers": ["acme:member"],
        "cn=Platform,ou=groups,dc=corp": ["acme:admin", "acme:platform"],
    }


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ('url = "http://ldap.corp"', "'auth.ldap.url' must be an ldap:// or ldaps:// URL"),
        ('url = "ldap://ldap.corp/dc=corp"', "'auth.ldap.url' must be only ldap[s]://HOST"),
        ('user_filter = "(uid=alice)"', "'auth.ldap.user_filter' must contain {name}"),
        ('user_filter = "uid={name}"', "'auth.ldap.user_filter' must be an LDAP filter in"),
        ('user_filter = "(member={dn})"', "using only {name}"),
        ('group_filter = "(member={user})"', "using only {dn} and {name}"),
        ("start_tls = true", "'start_tls' is for ldap:// URLs"),
        ('bind_password_env = "X"', "set at most one of 'bind_password', 'bind_password_env'"),
        ("timeout = 0", "'auth.ldap.timeout' must be greater than 0"),
        ('[auth.ldap.groups]\ndevs = "acme"', 'a group maps to a list of "ORG:ROLE"'),
        ('[auth.ldap.groups]\ndevs = ["acme:"]', "'auth.ldap.groups' "),
    ],
)
def test_ldap_errors_name_the_key(tmp_path: Path, extra: str, expected: str) -> None:
    text = LDAP.replace('url = "ldaps://ldap.corp:636"\n', "") if "url =" in extra else LDAP
    path = write(tmp_path, text + extra + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    [problem] = caught.value.problems
    assert problem.startswith(f"{path}: ")
    assert expected in problem
    assert "service secret" not in problem


def test_ldap_bind_dn_and_its_password_go_together(tmp_path: Path) -> None:
    without = LDAP.replace('bind_password = "service secret"\n', "")
    with pytest.raises(ConfigError) as caught:
        load_settings(write(tmp_path, without), {})
    assert "'bind_dn' needs its password" in caught.value.problems[0]
    anonymous = without.replace('bind_dn = "cn=ghostcrate,ou=services,dc=corp"\n', "")
    assert load_settings(write(tmp_path, anonymous), {}).settings.auth.ldap is not None


def test_check_config_masks_the_ldap_password_and_names_a_missing_variable(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, LDAP)
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "service secret" not in result.stdout
    assert "auth.ldap.bind_password = '**********'" in result.stdout

    from_env = LDAP.replace('bind_password = "service secret"', 'bind_password_env = "LDAP_PW"')
    path = write(tmp_path, from_env)
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "[auth.ldap] bind_password_env names LDAP_PW, which is not set" in result.stderr
    assert str(path) in result.stderr

    from_file = LDAP.replace(
        'bind_password = "service secret"', f'bind_password_file = "{tmp_path / "none"}"'
    )
    result = run_cli("check-config", "--config", str(write(tmp_path, from_file)))
    assert result.returncode == 2
    assert "[auth.ldap] bind_password_file" in result.stderr
    assert "cannot be read: No such file or directory" in result.stderr


def test_the_documented_ldap_examples_are_valid(tmp_path: Path) -> None:
    root = Path(__file__).parent.parent
    identity = (root / "docs" / "identity.md").read_text()
    blocks = [b.split("```")[0] for b in identity.split("```toml\n")[1:]]
    readme = (root / "README.md").read_text()
    start = readme.index("[auth.ldap]\n")
    blocks.append(readme[start : readme.index("\n[log]", start)])
    examples = [block for block in blocks if "[auth.ldap]" in block]
    assert len(examples) == 3
    for example in examples:
        # A CA file that this machine does not have is the only thing left out.
        text = "\n".join(line for line in example.splitlines() if not line.startswith("ca_file"))
        ldap = load_settings(write(tmp_path, text), {}).settings.auth.ldap
        assert ldap is not None
        assert ldap.groups


def test_an_oidc_provider_may_not_be_named_ldap(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[[auth.oidc]]\nname = "ldap"\nissuer = "https://sso.corp"\nclient_id = "gc"\n'
        'client_secret = "x"\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {})
    assert '[[auth.oidc]] name "ldap" is taken' in caught.value.problems[0]
