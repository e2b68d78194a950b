-- ferry schema, version 1, PostgreSQL dialect. Never edit this file once released: add
-- 0002_*.sql (and its SQLite twin) instead. Times are unix milliseconds.
-- The migration runner applies this inside one transaction, under an advisory lock, and
-- records it in ferry_migrations. Keep it in step with migrations/sqlite/0001_init.sql.

-- A registered user of one bridge. credentials is the XChaCha20-Poly1305 sealed JSON of
-- the bridge's credential map (NULL when the bridge keeps none); its AAD names the
-- (bridge, jid) of the row, so a blob copied to another row does not decrypt.
CREATE TABLE accounts (
    id              BIGSERIAL PRIMARY KEY,
    bridge          TEXT NOT NULL,
    jid             TEXT NOT NULL,
    credentials     BYTEA,
    created_at_ms   BIGINT NOT NULL,
    updated_at_ms   BIGINT NOT NULL,
    UNIQUE (bridge, jid)
);

-- A foreign identity and the JID localpart it goes by, unique both ways per bridge.
CREATE TABLE identities (
    id              BIGSERIAL PRIMARY KEY,
    bridge          TEXT NOT NULL,
    remote_id       TEXT NOT NULL,
    localpart       TEXT NOT NULL,
    display         TEXT,
    created_at_ms   BIGINT NOT NULL,
    UNIQUE (bridge, remote_id),
    UNIQUE (bridge, localpart)
);

-- Which identities each account has been introduced to (roster, nickname sent).
CREATE TABLE contacts (
    account_id        BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    identity_id       BIGINT NOT NULL REFERENCES identities (id) ON DELETE CASCADE,
    introduced_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (account_id, identity_id)
);
CREATE INDEX contacts_identity_idx ON contacts (identity_id);

-- XMPP stanza id <-> foreign message id, for replies, corrections and receipts.
CREATE TABLE message_map (
    id                 BIGSERIAL PRIMARY KEY,
    account_id         BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    direction          TEXT NOT NULL CHECK (direction IN ('in', 'out')),
    xmpp_id            TEXT NOT NULL,
    remote_message_id  TEXT NOT NULL,
    thread             TEXT,
    created_at_ms      BIGINT NOT NULL,
    UNIQUE (account_id, remote_message_id)
);
CREATE INDEX message_map_xmpp_idx ON message_map (account_id, xmpp_id);
CREATE INDEX message_map_created_idx ON message_map (created_at_ms);

-- Foreign message ids already delivered to an account (at-least-once -> exactly-once).
CREATE TABLE inbound_seen (
    account_id         BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    remote_message_id  TEXT NOT NULL,
    seen_at_ms         BIGINT NOT NULL,
    PRIMARY KEY (account_id, remote_message_id)
);
CREATE INDEX inbound_seen_seen_idx ON inbound_seen (seen_at_ms);

-- Messages read from XMPP and not yet accepted by the foreign side (or given up on).
-- A claim sets locked_until_ms; a crashed claimer's rows come back when it passes.
CREATE TABLE outbox (
    id                  BIGSERIAL PRIMARY KEY,
    bridge              TEXT NOT NULL,
    account_id          BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    recipient           TEXT NOT NULL,
    payload             TEXT NOT NULL,
    from_jid            TEXT NOT NULL,
    stanza_id           TEXT,
    want_receipt        BOOLEAN NOT NULL DEFAULT FALSE,
    state               TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state IN ('pending', 'sent', 'failed')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    locked_until_ms     BIGINT NOT NULL DEFAULT 0,
    last_error          TEXT,
    remote_message_id   TEXT,
    created_at_ms       BIGINT NOT NULL,
    updated_at_ms       BIGINT NOT NULL
);
CREATE INDEX outbox_due_idx ON outbox (bridge, state, next_attempt_at_ms);
CREATE INDEX outbox_remote_idx ON outbox (account_id, remote_message_id);

-- Small per-bridge state (cursors, UIDVALIDITY, feed validators).
CREATE TABLE kv (
    scope  TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (scope, key)
);
