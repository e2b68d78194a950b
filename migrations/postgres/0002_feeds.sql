-- ferry schema, version 2, PostgreSQL dialect: the RSS bridge's feeds, who follows them, and
-- the entry keys already seen. Keep it in step with migrations/sqlite/0002_feeds.sql.

-- One row per feed (its id is the canonical address its JID maps to). The engine claims
-- a due feed by setting lease_until_ms; a crashed claimer's feeds come back when it passes.
CREATE TABLE feeds (
    feed            TEXT PRIMARY KEY,
    fetch_url       TEXT,
    title           TEXT,
    icon            TEXT,
    etag            TEXT,
    last_modified   TEXT,
    next_fetch_ms   BIGINT NOT NULL,
    lease_until_ms  BIGINT NOT NULL DEFAULT 0,
    failures        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    last_ok_ms      BIGINT,
    updated_ms      BIGINT,
    recent          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX feeds_due_idx ON feeds (next_fetch_ms);

-- Who follows which feed. pending is true until the user has been told it is in place.
CREATE TABLE feed_subscriptions (
    account_id     BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    feed           TEXT NOT NULL REFERENCES feeds (feed) ON DELETE CASCADE,
    headline       BOOLEAN NOT NULL DEFAULT FALSE,
    pending        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (account_id, feed)
);
CREATE INDEX feed_subscriptions_feed_idx ON feed_subscriptions (feed);
CREATE INDEX feed_subscriptions_pending_idx ON feed_subscriptions (pending);

-- Entry keys (id, link or content hash) each feed has shown, so nothing is delivered twice.
CREATE TABLE feed_entries (
    feed        TEXT NOT NULL REFERENCES feeds (feed) ON DELETE CASCADE,
    entry_key   TEXT NOT NULL,
    seen_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (feed, entry_key)
);
