-- One trust state machine (agentmesh_node::trust): the states of a peer, why it was declined,
-- the new request states, peer ids compared without case (no `Agent-1` next to `agent-1`), the
-- capabilities of each peer's card, and the error code of a delivery refusal.

CREATE TABLE peers_new (
    agent_id     TEXT PRIMARY KEY COLLATE NOCASE,
    name         TEXT NOT NULL,
    protocol     TEXT NOT NULL CHECK (protocol IN ('agentmesh/1', 'openclaw-agent-mesh/v1')),
    endpoint     TEXT NOT NULL,
    ed25519      BLOB NOT NULL,
    x25519       BLOB,
    fingerprint  TEXT NOT NULL,
    card         TEXT,
    capabilities TEXT NOT NULL DEFAULT '[]',
    trust        TEXT NOT NULL CHECK (trust IN ('discovered', 'requested_out', 'requested_in', 'trusted',
                                                'rejected', 'blocked', 'removed')),
    trust_by     TEXT CHECK (trust_by IN ('us', 'peer')),
    trust_code   TEXT,
    -- While trusted: the peer's request whose approval made us contacts (void if it turns out to
    -- be withdrawn), and our own request approved with it when both asked.
    trust_via    TEXT,
    trust_mutual TEXT,
    first_seen   INTEGER NOT NULL,
    last_seen    INTEGER NOT NULL,
    alias        TEXT,
    prev_ed25519 BLOB,
    prev_until   INTEGER
) STRICT;

INSERT INTO peers_new (agent_id, name, protocol, endpoint, ed25519, x25519, fingerprint, card, capabilities, trust,
                       first_seen, last_seen, alias, prev_ed25519, prev_until)
SELECT p.agent_id, p.name, p.protocol, p.endpoint, p.ed25519, p.x25519, p.fingerprint, p.card,
       COALESCE(CASE WHEN json_valid(p.card) THEN json_extract(p.card, '$.capabilities') END, '[]'),
       CASE
           WHEN p.trust = 'pending' AND EXISTS (SELECT 1 FROM contact_requests r WHERE r.peer_id = p.agent_id
                AND r.direction = 'incoming' AND r.status = 'pending') THEN 'requested_in'
           WHEN p.trust = 'pending' THEN 'requested_out'
           ELSE p.trust
       END,
       p.first_seen, p.last_seen, p.alias, p.prev_ed25519, p.prev_until
FROM peers p;
DROP TABLE peers;
ALTER TABLE peers_new RENAME TO peers;
-- Aliases name one peer each (an older database may hold duplicates: the oldest keeps it).
UPDATE peers SET alias = NULL WHERE alias IS NOT NULL AND rowid NOT IN
    (SELECT MIN(rowid) FROM peers WHERE alias IS NOT NULL GROUP BY alias COLLATE NOCASE);
CREATE UNIQUE INDEX peers_alias ON peers (alias COLLATE NOCASE) WHERE alias IS NOT NULL;

CREATE TABLE contact_requests_new (
    request_id  TEXT PRIMARY KEY,
    direction   TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    peer_id     TEXT NOT NULL COLLATE NOCASE,
    purpose     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'refused', 'withdrawn',
                                                'superseded', 'failed', 'expired')),
    reason      TEXT,
    reason_code TEXT,
    protocol    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    decided_at  INTEGER
) STRICT;
INSERT INTO contact_requests_new (request_id, direction, peer_id, purpose, status, reason, protocol, created_at, decided_at)
SELECT request_id, direction, peer_id, purpose, status, reason, protocol, created_at, decided_at FROM contact_requests;
DROP TABLE contact_requests;
ALTER TABLE contact_requests_new RENAME TO contact_requests;
CREATE INDEX contact_requests_peer ON contact_requests (peer_id, direction, status);
CREATE INDEX contact_requests_open ON contact_requests (status, direction, created_at);

-- The machine code of the last delivery error (a peer's refusal code, `expired`, …).
ALTER TABLE outbox ADD COLUMN last_error_code TEXT;
CREATE INDEX outbox_peer ON outbox (peer_id, status);
