-- Agents learnt of through discovery (bootstrap, gossip, LAN): never trusted by being here.
-- `record` is the signed peer record (or card) as received, verified before it was stored.
CREATE TABLE directory (
    agent_id     TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    protocol     TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    ed25519      BLOB NOT NULL,
    capabilities TEXT NOT NULL,
    record       TEXT NOT NULL,
    source       TEXT NOT NULL,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX directory_last_seen ON directory (last_seen);
CREATE INDEX directory_expires_at ON directory (expires_at);
