"""A real OpenLDAP `slapd` on 127.0.0.1, made from a `slapd.conf` and an LDIF of users and
groups, run in the foreground (its PID known) and stopped by PID."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.support.appliance import free_port
from tests.support.leaks import LEAKS
from tests.support.tls import TestPKI

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root secret"
#: The service account GhostCrate searches with.
SERVICE_DN = f"cn=ghostcrate,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service secret"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
PLACEHOLDER = f"member: cn=nobody,{SUFFIX}"


def slapd_missing() -> str | None:
    """Why the LDAP tests cannot run here, or None."""
    for tool in (SLAPD, SLAPADD):
        if not Path(tool).is_file():
            return f"{tool} is not installed (apt-get install slapd ldap-utils)"
    if shutil.which("ldapmodify") is None:
        return "ldapmodify is not installed (apt-get install ldap-utils)"
    return None


def user_dn(uid: str) -> str:
    return f"uid={uid},{PEOPLE}"


def group_dn(cn: str) -> str:
    return f"cn={cn},{GROUPS}"


class LdapServer:
    """slapd with users (uid, password) and groups (cn -> member uids)."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str],
        groups: dict[str, list[str]],
        pki: TestPKI | None = None,
    ) -> None:
        """With `pki`, StartTLS on `url` and TLS from the first byte on `ldaps_url` too."""
        self.workdir = workdir
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{free_port()}" if pki is not None else None
        self.conf = workdir / "slapd.conf"
        self.log = workdir / "slapd.log"
        self.process: subprocess.Popen[bytes] | None = None
        (workdir / "db").mkdir(parents=True)
        self.conf.write_text(_conf(workdir, pki))
        ldif = workdir / "data.ldif"
        ldif.write_text(_ldif(users, groups))
        subprocess.run(
            [SLAPADD, "-f", str(self.conf), "-l", str(ldif)],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def start(self) -> LdapServer:
        """Start slapd in the foreground, logging each connection, bind and search
        (`-d 256`: stats) to `log`."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [SLAPD, "-d", "256", "-f", str(self.conf), "-h", " ".join(self._listen())],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"slapd exited at start:\n{self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.02)
                continue
            return self
        raise AssertionError(f"slapd did not listen:\n{self.log.read_text()}")

    def _listen(self) -> list[str]:
        return [f"{url}/" for url in (self.url, self.ldaps_url) if url is not None]

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def modify(self, ldif: str) -> None:
        """Change the directory as its administrator (`ldapmodify`)."""
        done = subprocess.run(
            ["ldapmodify", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
            input=ldif.encode(),
            check=False,
            capture_output=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr.decode()

    def binds(self) -> list[str]:
        """The DNs slapd was asked to bind as, in order."""
        return re.findall(r' BIND dn="([^"]*)" method=', self.log.read_text())

    def filters(self) -> list[str]:
        """The search filters slapd received, in order."""
        pattern = r' SRCH base="[^"]*" scope=\d deref=\d filter="([^"]*)"'
        return re.findall(pattern, self.log.read_text())

    def add_member(self, group: str, uid: str) -> None:
        self.modify(
            f"dn: {group_dn(group)}\nchangetype: modify\nadd: member\nmember: {user_dn(uid)}\n"
        )

    def remove_member(self, group: str, uid: str) -> None:
        self.modify(
            f"dn: {group_dn(group)}\nchangetype: modify\ndelete: member\nmember: {user_dn(uid)}\n"
        )


def _conf(workdir: Path, pki: TestPKI | None) -> str:
    schema = "/etc/ldap/schema"
    tls = []
    if pki is not None:
        tls = [
            f"TLSCACertificateFile {pki.ca_path}",
            f"TLSCertificateFile {pki.cert_path}",
            f"TLSCertificateKeyFile {pki.key_path}",
        ]
    return "\n".join(
        [
            *tls,
            f"include {schema}/core.schema",
            f"include {schema}/cosine.schema",
            f"include {schema}/inetorgperson.schema",
            f"pidfile {workdir / 'slapd.pid'}",
            "modulepath /usr/lib/ldap",
            "moduleload back_mdb",
            "database mdb",
            f'suffix "{SUFFIX}"',
            f'rootdn "{ROOT_DN}"',
            f'rootpw "{ROOT_PASSWORD}"',
            f"directory {workdir / 'db'}",
            "maxsize 10485760",
            # Users may bind and read; only the service account and the root may search
            # for others (as a real directory would be set up).
            "access to attrs=userPassword by anonymous auth by self read by * none",
            f'access to * by dn.exact="{SERVICE_DN}" read by self read by anonymous auth by * none',
            "",
        ]
    )


def _ldif(users: dict[str, str], groups: dict[str, list[str]]) -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services",
        f"dn: {SERVICE_DN}\nobjectClass: person\ncn: ghostcrate\nsn: service\n"
        f"userPassword: {SERVICE_PASSWORD}",
    ]
    LEAKS.secret("LDAP bind password", SERVICE_PASSWORD)
    for uid, password in users.items():
        LEAKS.secret("LDAP user password", password)
        entries.append(
            f"dn: {user_dn(uid)}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
            f"sn: {uid}\nmail: {uid}@example.org\nuserPassword: {password}"
        )
    for cn, members in groups.items():
        # groupOfNames needs a member: a placeholder keeps a group valid once empty.
        lines = [f"dn: {group_dn(cn)}", "objectClass: groupOfNames", f"cn: {cn}", PLACEHOLDER]
        lines += [f"member: {user_dn(uid)}" for uid in members]
        entries.append("\n".join(lines))
    return "\n\n".join(entries) + "\n"
