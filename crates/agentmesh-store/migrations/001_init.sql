-- Peers we know: discovered, asked, trusted or blocked.
CREATE TABLE peers (
    agent_id    TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    protocol    TEXT NOT NULL,
    endpoint    TEXT NOT NULL,
    ed25519     BLOB NOT NULL,
    x25519      BLOB,
    fingerprint TEXT NOT NULL,
    card        TEXT,
    trust       TEXT NOT NULL CHECK (trust IN ('discovered', 'pending', 'trusted', 'blocked')),
    first_seen  INTEGER NOT NULL,
    last_seen   INTEGER NOT NULL
) STRICT;

CREATE TABLE contact_requests (
    request_id  TEXT PRIMARY KEY,
    direction   TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    peer_id     TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected')),
    reason      TEXT,
    protocol    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    decided_at  INTEGER
) STRICT;
CREATE INDEX contact_requests_peer ON contact_requests (peer_id);

-- Everything we send, written before any network I/O.
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL,
    peer_id         TEXT NOT NULL,
    protocol        TEXT NOT NULL,
    payload         TEXT NOT NULL,
    text            TEXT,
    content_type    TEXT NOT NULL,
    reply_to        TEXT,
    thread          TEXT,
    encrypted       INTEGER NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('queued', 'sent', 'delivered', 'read', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    delivered_at    INTEGER,
    read_at         INTEGER,
    receipt         TEXT
) STRICT;
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status IN ('queued', 'sent');

-- Every envelope we accepted, with the receipt we answered: a replay gets the same receipt.
CREATE TABLE accepted (
    peer_id     TEXT NOT NULL,
    id          TEXT NOT NULL,
    kind        TEXT NOT NULL,
    receipt     TEXT NOT NULL,
    accepted_at INTEGER NOT NULL,
    PRIMARY KEY (peer_id, id)
) STRICT, WITHOUT ROWID;

-- Messages we received, decrypted.
CREATE TABLE inbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    peer_id      TEXT NOT NULL,
    id           TEXT NOT NULL,
    protocol     TEXT NOT NULL,
    encrypted    INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    text         TEXT NOT NULL,
    reply_to     TEXT,
    thread       TEXT,
    created_at   INTEGER NOT NULL,
    received_at  INTEGER NOT NULL,
    read_at      INTEGER,
    UNIQUE (peer_id, id)
) STRICT;
CREATE INDEX inbox_id ON inbox (id);
