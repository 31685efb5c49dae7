-- A2A clients: callers of our A2A endpoint, each with a bearer token the owner issued. Only the
-- token's SHA-256 is kept. Their tasks are ordinary incoming tasks (peer id `a2a.<name>`), listed
-- here with the A2A context they belong to.
CREATE TABLE a2a_clients (
    name       TEXT PRIMARY KEY,
    token_hash BLOB NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
) STRICT;

CREATE TABLE a2a_tasks (
    task_id    TEXT PRIMARY KEY,
    client     TEXT NOT NULL,
    context_id TEXT NOT NULL
) STRICT;
CREATE INDEX a2a_tasks_client ON a2a_tasks (client, context_id);
