-- ferry schema, version 3, SQLite dialect: the SMS bridge's number claims, opt-outs,
-- inbound texts kept from webhooks, parts of long texts, and media served under /media/.
-- Keep it in step with migrations/postgres/0003_sms.sql.

-- Which user holds which gateway number (one number per user, one user per number).
CREATE TABLE sms_claims (
    number          TEXT PRIMARY KEY,
    jid             TEXT NOT NULL,
    claimed_at_ms   INTEGER NOT NULL
);
CREATE INDEX sms_claims_jid_idx ON sms_claims (jid);

-- Correspondents who texted STOP to a gateway number (until START).
CREATE TABLE sms_opt_outs (
    number      TEXT NOT NULL,
    remote      TEXT NOT NULL,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (number, remote)
);

-- Inbound texts, kept before the webhook is answered; unique per provider message id so
-- a webhook delivered twice is taken once. delivered_at_ms is set once handed to XMPP.
CREATE TABLE sms_inbound (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    provider         TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    account_id       INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    sender           TEXT NOT NULL,
    recipient        TEXT NOT NULL,
    body             TEXT NOT NULL,
    media            TEXT NOT NULL DEFAULT '[]',
    received_at_ms   INTEGER NOT NULL,
    delivered_at_ms  INTEGER,
    UNIQUE (provider, message_id)
);
CREATE INDEX sms_inbound_pending_idx ON sms_inbound (id) WHERE delivered_at_ms IS NULL;
CREATE INDEX sms_inbound_received_idx ON sms_inbound (received_at_ms);

-- Parts of long inbound texts waiting for their siblings.
CREATE TABLE sms_parts (
    provider        TEXT NOT NULL,
    sender          TEXT NOT NULL,
    reference       TEXT NOT NULL,
    part_index      INTEGER NOT NULL,
    total           INTEGER NOT NULL,
    body            TEXT NOT NULL,
    received_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (provider, sender, reference, part_index)
);

-- Attachments served at /media/{token}/{name}.
CREATE TABLE media (
    token           TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    content_type    TEXT NOT NULL,
    data            BLOB NOT NULL,
    created_at_ms   INTEGER NOT NULL
);
CREATE INDEX media_created_idx ON media (created_at_ms);

-- Delivery reports name the provider's id without the account.
CREATE INDEX outbox_bridge_remote_idx ON outbox (bridge, remote_message_id);
-- The rolling daily quota counts an account's recent rows.
CREATE INDEX outbox_account_created_idx ON outbox (account_id, created_at_ms);
