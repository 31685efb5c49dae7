-- TOFU and key rotation: an owner-given alias, and the key a peer rotated away from, still
-- accepted on envelopes until prev_until (ms).
ALTER TABLE peers ADD COLUMN alias TEXT;
ALTER TABLE peers ADD COLUMN prev_ed25519 BLOB;
ALTER TABLE peers ADD COLUMN prev_until INTEGER;

-- Replay state is bounded: an accepted id is remembered until keep_until (ms), after which
-- the envelope would be refused as expired anyway, then pruned.
ALTER TABLE accepted ADD COLUMN keep_until INTEGER NOT NULL DEFAULT 0;
UPDATE accepted SET keep_until = accepted_at + 2 * 86400000;
CREATE INDEX accepted_keep_until ON accepted (keep_until);

-- A pinned agent id that presented another key: refused until the owner runs `repin`.
-- One row per (peer, presented key); `count` and `last_at` grow on repeats.
CREATE TABLE key_mismatches (
    peer_id               TEXT NOT NULL,
    presented_fingerprint TEXT NOT NULL,
    pinned_fingerprint    TEXT NOT NULL,
    presented_ed25519     BLOB NOT NULL,
    presented_x25519      BLOB,
    presented_card        TEXT,
    direction             TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    count                 INTEGER NOT NULL DEFAULT 1,
    first_at              INTEGER NOT NULL,
    last_at               INTEGER NOT NULL,
    resolved_at           INTEGER,
    PRIMARY KEY (peer_id, presented_fingerprint)
) STRICT;

-- Small settings the node keeps across restarts (e.g. the card last announced to contacts).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
