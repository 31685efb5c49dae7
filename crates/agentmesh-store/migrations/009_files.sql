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

-- Calls may carry small files inline: a transcript line of kind 'file'. SQLite cannot change a
-- CHECK constraint in place, so the table is rebuilt with the same rows.
CREATE TABLE call_lines_new (
    call_id     TEXT NOT NULL,
    line_id     TEXT NOT NULL,
    speaker     TEXT NOT NULL CHECK (speaker IN ('us', 'peer')),
    kind        TEXT NOT NULL CHECK (kind IN ('invite', 'accept', 'reject', 'say', 'end', 'file')),
    text        TEXT,
    at          INTEGER NOT NULL,
    received_at INTEGER,
    PRIMARY KEY (call_id, line_id)
) STRICT, WITHOUT ROWID;
INSERT INTO call_lines_new (call_id, line_id, speaker, kind, text, at, received_at)
    SELECT call_id, line_id, speaker, kind, text, at, received_at FROM call_lines;
DROP TABLE call_lines;
ALTER TABLE call_lines_new RENAME TO call_lines;
CREATE INDEX call_lines_order ON call_lines (call_id, at, line_id);
