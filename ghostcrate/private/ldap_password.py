"""The password of `[auth.ldap]`'s service account: in the config, in an environment
variable, or in a file. Never logged; `check-config` shows it masked."""

from __future__ import annotations

from pathlib import Path

from ghostcrate.config.model import LdapSettings


def bind_password_problem(settings: LdapSettings, environ: dict[str, str]) -> str | None:
    """Why the service account's password cannot be read, naming the key; or None."""
    if settings.bind_password_env is not None and settings.bind_password_env not in environ:
        return (
            f"[auth.ldap] bind_password_env names {settings.bind_password_env}, "
            "which is not set in the environment"
        )
    if settings.bind_password_file is not None:
        try:
            settings.bind_password_file.read_text()
        except OSError as error:
            return (
                f"[auth.ldap] bind_password_file {settings.bind_password_file} cannot be "
                f"read: {error.strerror}"
            )
    return None


def bind_password(settings: LdapSettings, environ: dict[str, str]) -> str | None:
    """The service account's password, from the config, the environment or a file."""
    if settings.bind_password is not None:
        return settings.bind_password.get_secret_value()
    if settings.bind_password_env is not None:
        return environ[settings.bind_password_env]
    if settings.bind_password_file is not None:
        return Path(settings.bind_password_file).read_text().strip()
    return None
