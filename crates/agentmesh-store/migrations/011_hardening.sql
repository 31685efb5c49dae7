-- A peer's contact envelopes (requests, responses, updates) leave one at a time, oldest first:
-- the outbox worker asks for the oldest one still pending per peer, so a change never overtakes
-- an earlier one (a retry keeps its place).
CREATE INDEX outbox_contact_pending ON outbox (peer_id, seq)
    WHERE status IN ('queued', 'sent') AND kind IN ('contact_request', 'contact_response', 'contact_update');

-- A small file a contact sent inline in a call: its bytes, kept until the owner accepts (then
-- written out like a downloaded file) or declines it; NULL for every other transfer.
ALTER TABLE transfers ADD COLUMN inline BLOB;
