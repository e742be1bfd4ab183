"""`[[auth.oidc]]`: each preset's issuer and discovery rules, and errors that name the key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ghostcrate.appliance.sso.providers import (
    Endpoints,
    Provider,
    ProviderUnavailable,
    client_secret,
    discovered,
    parse_object,
)
from ghostcrate.appliance.sso.roles import org_roles
from ghostcrate.config import ConfigError, load_settings
from ghostcrate.config.model import OidcProviderSettings

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
BASE = "https://crates.example.com"


def loaded(tmp_path: Path, entry: str) -> list[OidcProviderSettings]:
    config = tmp_path / "ghostcrate.toml"
    config.write_text("[[auth.oidc]]\n" + entry)
    return load_settings(config).settings.auth.oidc


def problems(tmp_path: Path, entry: str) -> str:
    with pytest.raises(ConfigError) as error:
        loaded(tmp_path, entry)
    return str(error.value)


def provider(**values: object) -> Provider:
    settings = OidcProviderSettings.model_validate(
        {"name": "sso", "client_id": "app", "client_secret": "s"} | values
    )
    return Provider(settings, "s", BASE)


def document(issuer: str, **extra: object) -> dict[str, object]:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/keys",
        **extra,
    }


def test_entra_uses_the_tenant_specific_issuer() -> None:
    entra = provider(preset="entra", tenant=TENANT)
    issuer = f"https://login.microsoftonline.com/{TENANT}/v2.0"
    assert entra.expected_issuer == issuer
    assert entra.discovery_url == f"{issuer}/.well-known/openid-configuration"
    assert entra.redirect_uri == f"{BASE}/api/v1/sso/sso/callback"
    assert entra.scopes == ["openid", "profile", "email"]
    found = discovered(document(issuer), "url", issuer, "entra")
    assert found.issuers == frozenset({issuer})
    # A document that speaks for another tenant (or the {tenantid} template) is refused.
    other = "https://login.microsoftonline.com/{tenantid}/v2.0"
    with pytest.raises(ProviderUnavailable, match="names issuer"):
        discovered(document(other), "url", issuer, "entra")


@pytest.mark.parametrize("tenant", ["common", "organizations", "consumers", "contoso.com"])
def test_entra_refuses_a_tenant_without_a_single_issuer(tmp_path: Path, tenant: str) -> None:
    found = problems(
        tmp_path,
        f'name = "ms"\npreset = "entra"\ntenant = "{tenant}"\n'
        'client_id = "x"\nclient_secret = "s"\n',
    )
    assert "'auth.oidc.0'" in found
    assert "'tenant' must be the directory (tenant) ID, a GUID" in found


def test_google_accepts_both_spellings_of_its_issuer() -> None:
    google = provider(preset="google")
    assert google.expected_issuer == "https://accounts.google.com"
    found = discovered(
        document("https://accounts.google.com"),
        "url",
        "https://accounts.google.com",
        "google",
    )
    assert found.issuers == frozenset({"https://accounts.google.com", "accounts.google.com"})


def test_generic_takes_the_issuer_and_its_trailing_slash_as_the_document_says() -> None:
    generic = provider(issuer="https://idp.example.com/realms/corp/")
    assert generic.discovery_url == (
        "https://idp.example.com/realms/corp/.well-known/openid-configuration"
    )
    found = discovered(
        document("https://idp.example.com/realms/corp/"),
        "url",
        "https://idp.example.com/realms/corp",
        "generic",
    )
    assert found.issuers == frozenset({"https://idp.example.com/realms/corp/"})
    assert found.basic_auth is True


def test_client_secret_post_is_used_when_basic_is_not_offered() -> None:
    found = discovered(
        document("https://idp", token_endpoint_auth_methods_supported=["client_secret_post"]),
        "url",
        "https://idp",
        "generic",
    )
    assert found == Endpoints(
        "https://idp/authorize",
        "https://idp/token",
        "https://idp/keys",
        frozenset({"https://idp"}),
        basic_auth=False,
    )


async def test_github_has_fixed_endpoints_unless_overridden() -> None:
    github = provider(preset="github")
    assert github.expected_issuer is None
    assert github.scopes == ["read:user", "user:email", "read:org"]
    endpoints = await github.endpoints(None)  # type: ignore[arg-type]  # nothing is fetched
    assert endpoints.authorization == "https://github.com/login/oauth/authorize"
    assert endpoints.token == "https://github.com/login/oauth/access_token"
    assert github.api_url == "https://api.github.com"
    enterprise = provider(preset="github", api_url="https://ghe.example.com/api/v3/")
    assert enterprise.api_url == "https://ghe.example.com/api/v3"


@pytest.mark.parametrize(
    ("entry", "named"),
    [
        ('name = "x"\nclient_id = "a"\nclient_secret = "s"\n', "'issuer' must be set"),
        (
            'name = "x"\nissuer = "https://i"\nclient_id = "a"\n',
            "set exactly one of 'client_secret', 'client_secret_env' and 'client_secret_file'",
        ),
        (
            'name = "Bad Name"\nissuer = "https://i"\nclient_id = "a"\nclient_secret = "s"\n',
            "'name' must be lowercase letters",
        ),
        (
            'name = "x"\npreset = "github"\ntenant = "t"\nclient_id = "a"\nclient_secret = "s"\n',
            "'tenant' is only for preset \"entra\"",
        ),
        (
            'name = "x"\nissuer = "https://i"\napi_url = "https://a"\nclient_id = "a"\n'
            'client_secret = "s"\n',
            "'authorize_url', 'token_url' and 'api_url' are only for preset \"github\"",
        ),
        (
            'name = "x"\nissuer = "https://i"\nclient_id = "a"\nclient_secret = "s"\n'
            'org_roles = { eng = "acme:boss" }\n',
            "'auth.oidc.0.org_roles'",
        ),
        (
            'name = "x"\npreset = "okta"\nclient_id = "a"\nclient_secret = "s"\n',
            "'auth.oidc.0.preset' must be 'generic', 'entra', 'google' or 'github'",
        ),
    ],
)
def test_a_bad_entry_is_refused_naming_the_key(tmp_path: Path, entry: str, named: str) -> None:
    found = problems(tmp_path, entry)
    assert named in found, found
    assert str(tmp_path / "ghostcrate.toml") in found  # where it was set


def test_two_providers_may_not_share_a_name(tmp_path: Path) -> None:
    entry = 'name = "x"\nissuer = "https://i"\nclient_id = "a"\nclient_secret = "s"\n'
    found = problems(tmp_path, entry + "[[auth.oidc]]\n" + entry)
    assert "[[auth.oidc]] names must differ; used twice: x" in found


def test_the_secret_comes_from_the_config_an_environment_variable_or_a_file(
    tmp_path: Path,
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file\n")
    entries = loaded(
        tmp_path,
        'name = "a"\nissuer = "https://i"\nclient_id = "x"\nclient_secret = "inline"\n'
        '[[auth.oidc]]\nname = "b"\nissuer = "https://i"\nclient_id = "x"\n'
        'client_secret_env = "B_SECRET"\n'
        f'[[auth.oidc]]\nname = "c"\nissuer = "https://i"\nclient_id = "x"\n'
        f'client_secret_file = "{secret_file}"\n',
    )
    environ = {"B_SECRET": "from-the-environment"}
    assert [client_secret(entry, environ) for entry in entries] == [
        "inline",
        "from-the-environment",
        "from-a-file",
    ]
    assert client_secret(entries[1], {}) is None


def test_check_config_names_an_unset_secret_variable_and_never_shows_a_secret(
    tmp_path: Path,
) -> None:
    config = tmp_path / "ghostcrate.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\n'
        '[[auth.oidc]]\nname = "a"\nissuer = "https://i"\nclient_id = "x"\n'
        'client_secret = "very-secret-value"\n'
        '[[auth.oidc]]\nname = "b"\nissuer = "https://i"\nclient_id = "x"\n'
        'client_secret_env = "B_SECRET_UNSET"\n'
    )

    def check() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ghostcrate", "check-config", "--config", str(config)],
            capture_output=True,
            text=True,
            check=False,
        )

    unset = check()
    assert unset.returncode == 2
    assert "'client_secret_env' names B_SECRET_UNSET, which is unset" in unset.stderr
    config.write_text(config.read_text().replace("B_SECRET_UNSET", "PATH"))
    valid = check()
    assert valid.returncode == 0, valid.stderr
    assert "auth.oidc" in valid.stdout
    assert "very-secret-value" not in valid.stdout + valid.stderr


def test_org_roles_give_the_strongest_role_per_organisation() -> None:
    mapping = {"eng": "acme:member", "leads": "acme:admin", "ops": "infra:contributor"}
    assert org_roles(mapping, ("eng", "leads", "ops", "other")) == {
        "acme": "admin",
        "infra": "contributor",
    }
    assert org_roles(mapping, ()) == {}


@pytest.mark.parametrize("body", [b"[" * 100_000, b"not json", b"[1, 2]"])
def test_a_provider_document_that_is_no_json_object_is_refused_not_a_crash(body: bytes) -> None:
    with pytest.raises(ProviderUnavailable, match="is not a JSON object"):
        parse_object(body, "the discovery document")
