-- Fewer index writes per message (the outbox is written twice for every message).
--
-- Only pending rows are ever looked up by due time, so the due index leaves settled rows
-- out: settling a row removes its entry instead of moving it.
DROP INDEX outbox_due_idx;
CREATE INDEX outbox_due_idx ON outbox (bridge, next_attempt_at_ms) WHERE state = 'pending';

-- Lookups by the foreign side's id (delivery reports, with or without the account) go
-- through one index that holds only rows the foreign side accepted.
DROP INDEX outbox_remote_idx;
DROP INDEX outbox_bridge_remote_idx;
CREATE INDEX outbox_remote_idx ON outbox (remote_message_id) WHERE remote_message_id IS NOT NULL;

-- A sent row is the mapping of its stanza id to the foreign id (it used to be copied into
-- message_map as well, which cost more index writes per message); rows sent before this
-- migration keep their message_map copies.
ALTER TABLE outbox ADD COLUMN thread TEXT;
CREATE INDEX outbox_stanza_idx ON outbox (account_id, stanza_id) WHERE stanza_id IS NOT NULL;
CREATE INDEX outbox_thread_idx ON outbox (account_id, thread) WHERE thread IS NOT NULL;

-- The SMS daily quota counts a user's recent texts; no other bridge needs the index.
DROP INDEX outbox_account_created_idx;
CREATE INDEX outbox_account_created_idx ON outbox (account_id, created_at_ms)
    WHERE bridge = 'sms';

-- Most messages are in no thread.
DROP INDEX message_map_thread_idx;
CREATE INDEX message_map_thread_idx ON message_map (account_id, thread) WHERE thread IS NOT NULL;
