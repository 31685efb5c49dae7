-- File transfers, both directions. The bytes never pass through SQLite: an outgoing transfer
-- names its source file (with the size and modification time it had when offered, so a changed
-- file is not served), an incoming one its partial file under <home>/files/.partial/ and, once
-- verified, its final path. `chunks_done` is the receiver's committed prefix: the partial file
-- holds at least that many chunks, synced to disk before the row was written.
CREATE TABLE transfers (
    transfer_id  TEXT PRIMARY KEY,
    peer_id      TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    name         TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    sha256       TEXT NOT NULL,
    chunk_size   INTEGER NOT NULL CHECK (chunk_size > 0),
    key          BLOB NOT NULL CHECK (length(key) = 32),
    call_id      TEXT,
    state        TEXT NOT NULL CHECK (state IN ('offered', 'transferring', 'done', 'declined', 'cancelled', 'failed')),
    chunks_done  INTEGER NOT NULL DEFAULT 0,
    bytes_done   INTEGER NOT NULL DEFAULT 0,
    source_path  TEXT,
    source_mtime INTEGER,
    final_path   TEXT,
    error        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX transfers_peer ON transfers (peer_id, created_at);
CREATE INDEX transfers_open ON transfers (direction, state) WHERE state IN ('offered', 'transferring');
