-- ferry schema, version 6, PostgreSQL dialect: the RSS settings a user can make per feed,
-- and the entries held back by quiet hours. Keep it in step with
-- migrations/sqlite/0006_feed_settings.sql. (Quiet hours themselves are a per-user value
-- in kv, scope 'rss.quiet', like the user's default delivery in 'rss.delivery'.)

-- A subscription's own delivery, which beats the user's default; NULL: the user's default.
-- `headline` stays the delivery in force, whichever decided it.
ALTER TABLE feed_subscriptions ADD COLUMN delivery TEXT
    CHECK (delivery IS NULL OR delivery = 'chat' OR delivery = 'headline');

-- New entries that arrived during the user's quiet hours, per subscription, sent in id
-- order (and deleted) when the quiet hours end. `entry` is the engine's JSON of the entry.
CREATE TABLE feed_held (
    id          BIGSERIAL PRIMARY KEY,
    account_id  BIGINT NOT NULL,
    feed        TEXT NOT NULL,
    entry       TEXT NOT NULL,
    held_at_ms  BIGINT NOT NULL,
    FOREIGN KEY (account_id, feed)
        REFERENCES feed_subscriptions (account_id, feed) ON DELETE CASCADE
);
CREATE INDEX feed_held_subscription_idx ON feed_held (account_id, feed, id);
