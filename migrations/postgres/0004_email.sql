-- The email bridge: finding the latest message of a thread (a reply in the chat without
-- an explicit XEP-0461 reference answers the thread's latest mail).
CREATE INDEX message_map_thread_idx ON message_map (account_id, thread);
