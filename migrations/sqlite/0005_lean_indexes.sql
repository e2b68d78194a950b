-- Less work for SQLite per message (the outbox is written twice for every message).

-- The outbox is rebuilt because its CHECK on `state` used `IN` with three values, which
-- SQLite evaluates by building a temporary b-tree on every insert and update; the same
-- rule as comparisons costs nothing. It gains `thread`: a sent row now is the mapping of
-- its stanza id to the foreign id (it used to be copied into message_map as well, which
-- cost five more b-tree writes per message). No table refers to the outbox, and the ids
-- are kept, with the AUTOINCREMENT counter: a Message-ID built from a row id is never
-- reused. Rows sent before this migration keep their message_map copies.
CREATE TABLE outbox_rebuilt (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    bridge              TEXT NOT NULL,
    account_id          INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    recipient           TEXT NOT NULL,
    payload             TEXT NOT NULL,
    from_jid            TEXT NOT NULL,
    stanza_id           TEXT,
    want_receipt        INTEGER NOT NULL DEFAULT 0 CHECK (want_receipt = 0 OR want_receipt = 1),
    state               TEXT NOT NULL DEFAULT 'pending'
                        CHECK (state = 'pending' OR state = 'sent' OR state = 'failed'),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER NOT NULL,
    locked_until_ms     INTEGER NOT NULL DEFAULT 0,
    last_error          TEXT,
    remote_message_id   TEXT,
    thread              TEXT,
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
);
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_rebuilt', seq FROM sqlite_sequence WHERE name = 'outbox';
INSERT INTO outbox_rebuilt (id, bridge, account_id, recipient, payload, from_jid, stanza_id,
        want_receipt, state, attempts, next_attempt_at_ms, locked_until_ms, last_error,
        remote_message_id, created_at_ms, updated_at_ms)
    SELECT id, bridge, account_id, recipient, payload, from_jid, stanza_id,
        want_receipt, state, attempts, next_attempt_at_ms, locked_until_ms, last_error,
        remote_message_id, created_at_ms, updated_at_ms
    FROM outbox;
DROP TABLE outbox;
ALTER TABLE outbox_rebuilt RENAME TO outbox;

-- Only pending rows are ever looked up by due time, so the due index leaves settled rows
-- out: settling a row removes its entry instead of moving it.
CREATE INDEX outbox_due_idx ON outbox (bridge, next_attempt_at_ms) WHERE state = 'pending';

-- Lookups by the foreign side's id (delivery reports, with or without the account) go
-- through one index that holds only rows the foreign side accepted.
CREATE INDEX outbox_remote_idx ON outbox (remote_message_id) WHERE remote_message_id IS NOT NULL;

-- A sent message found by its stanza id or its thread (replies, corrections, threads).
CREATE INDEX outbox_stanza_idx ON outbox (account_id, stanza_id) WHERE stanza_id IS NOT NULL;
CREATE INDEX outbox_thread_idx ON outbox (account_id, thread) WHERE thread IS NOT NULL;

-- The SMS daily quota counts a user's recent texts; no other bridge needs the index.
CREATE INDEX outbox_account_created_idx ON outbox (account_id, created_at_ms)
    WHERE bridge = 'sms';

-- Most messages are in no thread.
DROP INDEX message_map_thread_idx;
CREATE INDEX message_map_thread_idx ON message_map (account_id, thread) WHERE thread IS NOT NULL;
