-- The event log: what happened on the node, in order, for watchers that resume after a restart
-- (`GET /v1/events`, `agentmesh events`) and for the hooks push. `seq` is the cursor: it only
-- grows (AUTOINCREMENT never reuses a number, even after pruning). `body` is the event's JSON.
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX events_at ON events (at);
