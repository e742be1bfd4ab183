"""The private registry as the appliance sees it: one object per process.

It answers "is this name private?" from memory (`owns`, `reserved`), renders
private index files and finds private `.crate` files, and carries out writes.
Every write records a change; the shared `Generation` then tells every worker
to apply the changes it has not seen (`sync`) before it answers anything, so
a publish is visible everywhere before its answer leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from ghostcrate.config import Settings
from ghostcrate.private import audit, changes
from ghostcrate.private.accounts import Accounts
from ghostcrate.private.blobs import BlobStore, Bucket
from ghostcrate.private.carry import CarriedVersion
from ghostcrate.private.changes import ACCOUNTS, CRATE, Change
from ghostcrate.private.crates import Crates, NewVersion, max_version
from ghostcrate.private.db import Database
from ghostcrate.private.errors import NotFound, RegistryError
from ghostcrate.private.generation import Generation
from ghostcrate.private.identities import Identities, SignedIn
from ghostcrate.private.login_throttle import LoginThrottle
from ghostcrate.private.logins import Logins, OtherSignIn
from ghostcrate.private.metrics import RegistryMetrics
from ghostcrate.private.orgs import Orgs
from ghostcrate.private.publish import Publisher, Upstream
from ghostcrate.private.sessions import Sessions
from ghostcrate.private.signing_keys import SigningKeys, keep_seconds, keys_dir, rotate
from ghostcrate.private.tokens import Actor, canonical, matches
from ghostcrate.private.webhooks import Webhooks

log = logging.getLogger(__name__)

#: How often a worker compares the database's newest change with the shared generation
#: (a process killed between its commit and raising the generation is caught up here).
WATCH_SECONDS = 1.0


def private_dir(settings: Settings) -> Path:
    return settings.data_dir / "private"


def registry_database(settings: Settings) -> Path:
    return private_dir(settings) / "registry.db"


class Registry:
    def __init__(
        self, settings: Settings, db: Database, blobs: BlobStore, metrics: RegistryMetrics
    ) -> None:
        self._settings = settings.private
        self.metrics = metrics
        self.db = db
        self.blobs = blobs
        self.accounts = Accounts(db)
        auth = settings.auth
        session_seconds = auth.session_minutes * 60
        self.sessions = Sessions(
            db,
            SigningKeys(keys_dir(settings.data_dir), keep_seconds(session_seconds)),
            issuer=settings.server.base_url,
            session_seconds=session_seconds,
            refresh_seconds=auth.refresh_days * 86400,
            applied=self._applied,
        )
        throttle = LoginThrottle(
            db,
            account_limit=auth.login_failures,
            address_limit=auth.login_address_failures,
            window=auth.login_window_seconds,
        )
        self.identities = Identities(db)
        self.logins = Logins(self.accounts, self.sessions, throttle, self._directory(settings))
        self.crates = Crates(db)
        self.orgs = Orgs(db)
        self.webhooks = Webhooks(db)
        self.generation = Generation(private_dir(settings) / "generation")
        self._publisher = Publisher(
            settings.private,
            self.crates,
            blobs,
            self.private_versions,
            own_index=f"{settings.server.base_url}/index/",
        )
        #: The newest change this process has applied.
        self.seen = 0
        #: Private crates: canonical name -> name as published.
        self.names: dict[str, str] = {}
        #: Called with the changes `sync` applies (the lanes forget their kept replies).
        self.listeners: list[Callable[[list[Change]], None]] = []
        self._sync_lock = asyncio.Lock()

    def _directory(self, settings: Settings) -> OtherSignIn | None:
        ldap = settings.auth.ldap
        if ldap is None:
            return None
        # Imported here: ldap3 is loaded only where [auth.ldap] is set.
        from ghostcrate.private.ldap_directory import Directory
        from ghostcrate.private.ldap_groups import GroupMapping
        from ghostcrate.private.ldap_logins import DirectoryLogins

        mapping = GroupMapping(self.db, ldap.groups)
        return DirectoryLogins(
            self.identities, Directory.from_settings(ldap), mapping, self._applied
        )

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        settings: Settings,
        bucket: Bucket | None = None,
        metrics: RegistryMetrics | None = None,
    ) -> AsyncIterator[Registry]:
        """The registry; `metrics` where they are served (a command counts for nobody)."""
        root = private_dir(settings)
        metrics = metrics or RegistryMetrics.create(CollectorRegistry())
        async with Database.open(registry_database(settings), metrics.observe_database) as db:
            registry = cls(settings, db, BlobStore(root / "crates", bucket), metrics)
            try:
                await registry._load()
                yield registry
            finally:
                registry.generation.close()

    async def _load(self) -> None:
        row = await self.db.one("SELECT coalesce(max(seq), 0) FROM changes")
        newest = int(row[0]) if row is not None else 0
        self.names = await self.crates.names()
        self.seen = newest
        self.generation.advance(newest)

    # --- the namespace ------------------------------------------------------

    def stale(self) -> bool:
        """Whether another process has made a change this one has not applied yet."""
        return self.generation.view[0] != self.seen

    def owns(self, name: str) -> bool:
        """Whether `name` (in any case or `-`/`_` spelling) is a private crate's."""
        return canonical(name) in self.names

    def reserved_by_pattern(self, name: str) -> bool:
        """Whether `name` matches `[private] reserved`."""
        return matches(self._settings.reserved, name)

    def reserved(self, name: str) -> bool:
        """Whether `name` must never be asked of the upstream (private or reserved)."""
        return canonical(name) in self.names or matches(self._settings.reserved, name)

    async def sync(self) -> None:
        """Apply the changes other processes (or this one) made since the last call."""
        if not self.stale():
            return
        async with self._sync_lock:
            rows = await self.db.all(
                "SELECT seq, kind, name, version FROM changes WHERE seq > ? ORDER BY seq",
                (self.seen,),
            )
            if not rows:
                return
            applied = [Change(row[0], row[1], row[2], row[3]) for row in rows]
            for change in applied:
                if change.kind == CRATE and change.name is not None:
                    self.names[canonical(change.name)] = change.name
                elif change.kind == ACCOUNTS:
                    self.accounts.forget()
                    self.sessions.forget()
            self.seen = applied[-1].seq
            for listener in self.listeners:
                listener(applied)

    async def _applied(self, seq: int) -> None:
        """After a write: tell every process, and apply it here before answering."""
        self.generation.advance(seq)
        await self.sync()

    async def watch(self) -> None:
        """Forever: raise the generation to the database's newest change, once a second."""
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            with contextlib.suppress(Exception):
                row = await self.db.one("SELECT coalesce(max(seq), 0) FROM changes")
                if row is not None:
                    self.generation.advance(int(row[0]))

    async def recover(self) -> int:
        """Remove `.crate` files that no version refers to (left by a crash); how many."""
        known = await self.crates.cksums()
        removed = 0
        for path in self.blobs.orphans(known, older_than=0.0):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
        if removed:
            log.warning("removed private crate files without a version", extra={"files": removed})
        return removed

    # --- reading ------------------------------------------------------------

    async def crate_file(self, name: str, version: str) -> Path | None:
        await self.sync()
        cksum = await self.crates.cksum(name, version)
        return None if cksum is None else await self.blobs.find(cksum)

    async def private_versions(self, name: str) -> list[tuple[str, bool]] | None:
        """(version, yanked) of private crate `name` (exact lowercase), or None."""
        rows = await self.crates.versions(name)
        if not rows or self.names.get(canonical(name), "").lower() != name.lower():
            return None
        return [(row["num"], bool(row["yanked"])) for row in rows]

    async def info(self, name: str) -> dict[str, object]:
        """`GET /api/v1/crates/NAME`: the crate and its versions, in crates.io's shape."""
        crate = await self.crates.crate(name)
        if crate is None or crate["name"].lower() != name.lower():
            raise NotFound(f"crate `{name}` does not exist in this registry")
        versions = await self.crates.versions(name)
        numbers = [row["num"] for row in versions]
        yanked = [row["num"] for row in versions if row["yanked"]]
        newest = max_version(numbers, yanked)
        api = f"/api/v1/crates/{crate['name']}"
        return {
            "crate": {
                "id": crate["name"],
                "name": crate["name"],
                "description": crate["description"],
                "homepage": crate["homepage"],
                "repository": crate["repository"],
                "documentation": crate["documentation"],
                "keywords": crate["keywords"].split(),
                "max_version": newest,
                "newest_version": numbers[-1] if numbers else None,
                "max_stable_version": newest,
                "created_at": _iso(crate["created_at"]),
                "updated_at": _iso(crate["updated_at"]),
            },
            "versions": [
                {
                    "crate": crate["name"],
                    "num": row["num"],
                    "yanked": bool(row["yanked"]),
                    "checksum": row["cksum"],
                    "crate_size": row["size"],
                    "license": row["license"],
                    "created_at": _iso(row["created_at"]),
                    "dl_path": f"{api}/{row['num']}/download",
                    "published_by": {"login": row["publisher"]} if row["publisher"] else None,
                }
                for row in reversed(versions)
            ],
        }

    # --- writing ------------------------------------------------------------

    async def publish(self, body: bytes, actor: Actor, upstream: Upstream) -> NewVersion:
        """Check, store and record a publish; what was published."""
        await self.sync()  # dependencies on crates another worker has just published
        try:
            seq, new = await self._publisher.publish(body, actor, upstream)
        except RegistryError as error:
            self.metrics.publishes.labels("refused" if error.status < 500 else "error").inc()
            raise
        except Exception:
            self.metrics.publishes.labels("error").inc()
            raise
        await self._applied(seq)
        self.metrics.publishes.labels("published").inc()
        return new

    async def set_yanked(self, name: str, version: str, actor: Actor, *, yanked: bool) -> None:
        await self._applied(await self.crates.set_yanked(name, version, actor, yanked=yanked))
        self.metrics.yanks.labels("yank" if yanked else "unyank").inc()

    async def change_owners(
        self, name: str, users: list[str], actor: Actor, *, add: bool
    ) -> list[str]:
        found, seq = await self.crates.change_owners(name, users, actor, add=add)
        await self._applied(seq)
        return found

    async def add_carried(
        self, carried: list[tuple[CarriedVersion, Path]]
    ) -> tuple[list[CarriedVersion], int]:
        """Register the private versions a bundle carried (each with its staged `.crate`)
        that are not here yet: files stored durably first, then all versions in one
        transaction, seen by every worker before this returns. The versions added, and
        how many were already here. Raises `CarryError` on a clash, adding nothing."""
        versions = [version for version, _ in carried]
        files = {version.cksum: path for version, path in carried}
        loop = asyncio.get_running_loop()
        for version in await self.crates.new_of(versions):
            data = await loop.run_in_executor(None, files[version.cksum].read_bytes)
            await self.blobs.put(version.cksum, data)
        added, seq = await self.crates.add_carried(versions)
        if seq:
            await self._applied(seq)
        return added, len(versions) - len(added)

    async def apply(self, seq: int) -> None:
        """After a write through `orgs` (or `accounts`): every process applies it first."""
        await self._applied(seq)

    async def revoke_token(self, token_id: int) -> None:
        await self._applied(await self.accounts.revoke_token(token_id))

    async def rotate_keys(self) -> str:
        """A new session signing key, used by every worker within a second; its id."""
        keys = self.sessions.keys
        kid = await asyncio.get_running_loop().run_in_executor(
            None, rotate, keys.directory, keys.keep
        )
        async with self.db.write() as connection:
            await audit.append(connection, "rotate-key", detail=f"key {kid}")
            seq = await changes.record(connection, ACCOUNTS)
        await self._applied(seq)
        return kid

    async def sign_in(
        self, provider: str, subject: str, name: str, claims: dict[str, Any]
    ) -> SignedIn:
        """A single sign-on's user (registered on the first one), seen by every worker."""
        signed_in = await self.identities.sign_in(provider, subject, name, claims)
        if signed_in.seq is not None:
            await self._applied(signed_in.seq)
        return signed_in


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
