"""The registry database's schema, as numbered migrations applied in order.

`PRAGMA user_version` records how many have been applied; opening a database
applies the missing ones in one transaction each, so a database made by an
older GhostCrate is upgraded in place. Never edit a migration that has shipped:
add the next one. The SQL keeps to what PostgreSQL also has (no SQLite-only
types), so the same model can move to a shared database later.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: users, their API tokens, private crates, their versions and owners, and the
    # feed of changes that tells every worker what to forget.
    """
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        admin INTEGER NOT NULL DEFAULT 0,
        disabled INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX users_name ON users (lower(name));

    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id),
        name TEXT NOT NULL,
        hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        crates TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL,
        revoked_at REAL
    );

    CREATE TABLE crates (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        canonical TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );

    CREATE TABLE versions (
        id INTEGER PRIMARY KEY,
        crate_id INTEGER NOT NULL REFERENCES crates (id),
        num TEXT NOT NULL,
        num_no_build TEXT NOT NULL,
        cksum TEXT NOT NULL,
        size INTEGER NOT NULL,
        entry TEXT NOT NULL,
        yanked INTEGER NOT NULL DEFAULT 0,
        published_by INTEGER REFERENCES users (id),
        created_at REAL NOT NULL,
        UNIQUE (crate_id, num_no_build)
    );

    CREATE TABLE owners (
        crate_id INTEGER NOT NULL REFERENCES crates (id),
        user_id INTEGER NOT NULL REFERENCES users (id),
        PRIMARY KEY (crate_id, user_id)
    );

    CREATE TABLE changes (
        seq INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT,
        version TEXT,
        at REAL NOT NULL
    );
    """,
    # 2: what `cargo search` and `GET /api/v1/crates/NAME` show, from the newest version.
    """
    ALTER TABLE crates ADD COLUMN description TEXT;
    ALTER TABLE crates ADD COLUMN keywords TEXT NOT NULL DEFAULT '';
    ALTER TABLE crates ADD COLUMN repository TEXT;
    ALTER TABLE crates ADD COLUMN homepage TEXT;
    ALTER TABLE crates ADD COLUMN documentation TEXT;
    ALTER TABLE versions ADD COLUMN license TEXT;
    """,
    # Local sign-in: a password hash per user, sessions (one per sign-in, refreshed by
    # rotating refresh tokens stored only as hashes) and the failed sign-ins that
    # throttle guessing, kept here so that every worker (and later every node) counts them.
    """
    ALTER TABLE users ADD COLUMN password_hash TEXT;

    CREATE TABLE sessions (
        id TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users (id),
        via TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE INDEX sessions_user ON sessions (user_id);

    CREATE TABLE refresh_tokens (
        hash TEXT PRIMARY KEY,
        session_id TEXT NOT NULL REFERENCES sessions (id),
        created_at REAL NOT NULL,
        used_at REAL
    );
    CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

    CREATE TABLE login_failures (
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL,
        at REAL NOT NULL
    );
    CREATE INDEX login_failures_key ON login_failures (key, at);
    """,
    # Organisations: members with roles, teams that own crates, tokens limited to one org.
    """
    CREATE TABLE orgs (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        namespaces TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX orgs_name ON orgs (lower(name));

    CREATE TABLE org_members (
        org_id INTEGER NOT NULL REFERENCES orgs (id),
        user_id INTEGER NOT NULL REFERENCES users (id),
        role TEXT NOT NULL,
        PRIMARY KEY (org_id, user_id)
    );

    CREATE TABLE teams (
        id INTEGER PRIMARY KEY,
        org_id INTEGER NOT NULL REFERENCES orgs (id),
        name TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE UNIQUE INDEX teams_name ON teams (org_id, lower(name));

    CREATE TABLE team_members (
        team_id INTEGER NOT NULL REFERENCES teams (id),
        user_id INTEGER NOT NULL REFERENCES users (id),
        PRIMARY KEY (team_id, user_id)
    );

    CREATE TABLE team_owners (
        crate_id INTEGER NOT NULL REFERENCES crates (id),
        team_id INTEGER NOT NULL REFERENCES teams (id),
        PRIMARY KEY (crate_id, team_id)
    );

    ALTER TABLE tokens ADD COLUMN org_id INTEGER REFERENCES orgs (id);
    """,
    # Single sign-on: who each provider's subject is here (and the claims of their last
    # sign-in), and the logins begun but not finished (one-time, short-lived, shared by
    # every worker: the provider may send the browser back to another one).
    """
    CREATE TABLE identities (
        provider TEXT NOT NULL,
        subject TEXT NOT NULL,
        user_id INTEGER NOT NULL REFERENCES users (id),
        claims TEXT NOT NULL,
        created_at REAL NOT NULL,
        signed_in_at REAL NOT NULL,
        PRIMARY KEY (provider, subject)
    );
    CREATE INDEX identities_user ON identities (user_id);

    CREATE TABLE sso_logins (
        state_hash TEXT PRIMARY KEY,
        provider TEXT NOT NULL,
        nonce TEXT NOT NULL,
        verifier TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    """,
    # LDAP sign-in: the org roles and team memberships its group mapping made, so that
    # each sign-in adds and removes those and never one an administrator set. (The users
    # it registers are identities of provider "ldap". No foreign keys to orgs or teams:
    # a team removed by hand leaves a row that the next sign-in drops.)
    """
    CREATE TABLE ldap_roles (
        user_id INTEGER NOT NULL REFERENCES users (id),
        org_id INTEGER NOT NULL,
        role TEXT NOT NULL,
        PRIMARY KEY (user_id, org_id)
    );

    CREATE TABLE ldap_teams (
        user_id INTEGER NOT NULL REFERENCES users (id),
        team_id INTEGER NOT NULL,
        PRIMARY KEY (user_id, team_id)
    );
    """,
    # The audit log: every write and every refusal, append-only (the triggers refuse
    # UPDATE and DELETE) and chained (each record's hash covers the one before it), so a
    # record removed or edited by hand is found by `ghostcrate audit --verify`.
    # AUTOINCREMENT: sqlite_sequence keeps the highest id, so removing the newest
    # records shows too. `at` is ISO-8601 UTC text: it sorts, and it hashes the same
    # everywhere.
    """
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT,
        credential TEXT,
        remote TEXT,
        request_id TEXT,
        action TEXT NOT NULL,
        crate TEXT,
        version TEXT,
        org TEXT,
        team TEXT,
        target TEXT,
        outcome TEXT NOT NULL,
        rule TEXT,
        detail TEXT,
        count INTEGER NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    );
    CREATE INDEX audit_at ON audit (at);

    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be changed');
    END;

    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
    BEGIN
        SELECT RAISE(ABORT, 'the audit log is append-only: records cannot be removed');
    END;
    """,
    # Webhooks: the receivers (an organisation's, or the config's by name, whose secret
    # stays in the config) and the outbox of their deliveries, written in the transaction
    # of the publish, yank or owner change they tell of, and delivered in order per webhook.
    """
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        org_id INTEGER REFERENCES orgs (id),
        name TEXT,
        url TEXT NOT NULL,
        secret TEXT,
        events TEXT NOT NULL,
        created_at REAL NOT NULL,
        removed_at REAL
    );
    CREATE UNIQUE INDEX webhooks_name ON webhooks (name);

    CREATE TABLE webhook_deliveries (
        id INTEGER PRIMARY KEY,
        webhook_id INTEGER NOT NULL REFERENCES webhooks (id),
        delivery TEXT NOT NULL UNIQUE,
        event TEXT NOT NULL,
        crate TEXT NOT NULL,
        version TEXT,
        body TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        last_status INTEGER,
        last_error TEXT,
        created_at REAL NOT NULL,
        last_attempt_at REAL,
        done_at REAL
    );
    CREATE INDEX webhook_deliveries_state ON webhook_deliveries (state, webhook_id, id);
    CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
    """,
)
