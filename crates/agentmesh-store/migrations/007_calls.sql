-- Calls: conversations with a peer under one id (the caller's), and the lines of each. A call id
-- belongs to one peer: an envelope about it from any other peer is refused.
CREATE TABLE calls (
    call_id     TEXT PRIMARY KEY,
    peer_id     TEXT NOT NULL,
    direction   TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    topic       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('ringing', 'active', 'rejected', 'ended', 'missed')),
    reason      TEXT,
    ended_by    TEXT CHECK (ended_by IN ('us', 'peer')),
    created_at  INTEGER NOT NULL,
    ring_until  INTEGER NOT NULL,
    answered_at INTEGER,
    ended_at    INTEGER,
    lines       INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX calls_peer ON calls (peer_id, state);
CREATE INDEX calls_ringing ON calls (ring_until) WHERE state = 'ringing';

-- Every step of a call, both sides: `line_id` is the id of the envelope that carried it (the
-- outbox entry for ours), the same on both sides; `at` is when its speaker said it.
CREATE TABLE call_lines (
    call_id     TEXT NOT NULL,
    line_id     TEXT NOT NULL,
    speaker     TEXT NOT NULL CHECK (speaker IN ('us', 'peer')),
    kind        TEXT NOT NULL,
    text        TEXT,
    at          INTEGER NOT NULL,
    received_at INTEGER,
    PRIMARY KEY (call_id, line_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX call_lines_order ON call_lines (call_id, at, line_id);
