-- Registry schema, version 1 (SQLite). Also run on databases made before versioning (tables
-- present, user_version 0), so every statement must be safe to repeat: IF NOT EXISTS
-- everywhere, and the FTS5 'rank' option is a configuration write that sets the same value again.
CREATE TABLE IF NOT EXISTS agents (
    rowid         INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    hostname      TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    description   TEXT NOT NULL,
    capabilities  TEXT NOT NULL,
    p2p_endpoint  TEXT NOT NULL,
    visibility    TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    public_key    BLOB NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    last_request  INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS agents_last_seen ON agents (last_seen);
CREATE TABLE IF NOT EXISTS agent_capabilities (
    agent      INTEGER NOT NULL REFERENCES agents (rowid) ON DELETE CASCADE,
    capability TEXT NOT NULL,
    PRIMARY KEY (capability, agent)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS agent_capabilities_agent ON agent_capabilities (agent);
CREATE VIRTUAL TABLE IF NOT EXISTS agents_fts USING fts5 (
    display_name, capabilities, description, content = 'agents', content_rowid = 'rowid',
    tokenize = 'unicode61', prefix = '2 3'
);
INSERT INTO agents_fts (agents_fts, rank) VALUES ('rank', 'bm25(10.0, 5.0, 1.0)');
CREATE TRIGGER IF NOT EXISTS agents_ai AFTER INSERT ON agents BEGIN
    INSERT INTO agents_fts (rowid, display_name, capabilities, description)
    VALUES (new.rowid, new.display_name, new.capabilities, new.description);
END;
CREATE TRIGGER IF NOT EXISTS agents_ad AFTER DELETE ON agents BEGIN
    INSERT INTO agents_fts (agents_fts, rowid, display_name, capabilities, description)
    VALUES ('delete', old.rowid, old.display_name, old.capabilities, old.description);
END;
CREATE TRIGGER IF NOT EXISTS agents_au AFTER UPDATE OF display_name, capabilities, description ON agents BEGIN
    INSERT INTO agents_fts (agents_fts, rowid, display_name, capabilities, description)
    VALUES ('delete', old.rowid, old.display_name, old.capabilities, old.description);
    INSERT INTO agents_fts (rowid, display_name, capabilities, description)
    VALUES (new.rowid, new.display_name, new.capabilities, new.description);
END;
