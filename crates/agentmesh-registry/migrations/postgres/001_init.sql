-- Registry schema, version 1 (PostgreSQL). Also run on databases made before versioning (tables
-- present, no registry_schema row), so every statement must be safe to repeat.
CREATE TABLE IF NOT EXISTS agents (
    id               TEXT PRIMARY KEY,
    hostname         TEXT NOT NULL UNIQUE,
    display_name     TEXT NOT NULL,
    description      TEXT NOT NULL,
    capabilities     TEXT[] NOT NULL,
    capabilities_txt TEXT NOT NULL,
    p2p_endpoint     TEXT NOT NULL,
    visibility       TEXT NOT NULL CHECK (visibility IN ('public', 'private')),
    public_key       BYTEA NOT NULL,
    registered_at    BIGINT NOT NULL,
    last_seen        BIGINT NOT NULL,
    last_request     BIGINT NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('simple', display_name), 'A') ||
        setweight(to_tsvector('simple', capabilities_txt), 'B') ||
        setweight(to_tsvector('simple', description), 'C')) STORED
) WITH (fillfactor = 70);
CREATE INDEX IF NOT EXISTS agents_tsv ON agents USING GIN (tsv);
CREATE INDEX IF NOT EXISTS agents_capabilities ON agents USING GIN (capabilities);
-- No index on last_seen or last_request: a heartbeat then updates no indexed column, so
-- PostgreSQL keeps it a heap-only (HOT) update and leaves the GIN indexes alone.
DROP INDEX IF EXISTS agents_last_seen;
