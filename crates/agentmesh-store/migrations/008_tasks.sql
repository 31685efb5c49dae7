-- Tasks delegated to a peer (outgoing) or by a peer to us (incoming), under the delegator's id;
-- a task id belongs to one peer. `artifacts` is a JSON array of the results so far; `update_seq`
-- the highest worker update applied (older ones are ignored).
CREATE TABLE tasks (
    task_id             TEXT PRIMARY KEY,
    peer_id             TEXT NOT NULL,
    direction           TEXT NOT NULL CHECK (direction IN ('incoming', 'outgoing')),
    text                TEXT NOT NULL,
    data                TEXT,
    state               TEXT NOT NULL CHECK (state IN ('submitted', 'working', 'input_required',
                            'auth_required', 'completed', 'failed', 'canceled', 'rejected')),
    status_text         TEXT,
    artifacts           TEXT NOT NULL DEFAULT '[]',
    update_seq          INTEGER NOT NULL DEFAULT 0,
    cancel_requested_at INTEGER,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL
) STRICT;
CREATE INDEX tasks_peer ON tasks (peer_id, state);
CREATE INDEX tasks_updated ON tasks (updated_at);

-- Every step of a task, both sides: `entry_id` is the id of the envelope that carried it.
CREATE TABLE task_history (
    task_id     TEXT NOT NULL,
    entry_id    TEXT NOT NULL,
    speaker     TEXT NOT NULL CHECK (speaker IN ('us', 'peer')),
    kind        TEXT NOT NULL,
    state       TEXT,
    text        TEXT,
    artifacts   TEXT,
    at          INTEGER NOT NULL,
    received_at INTEGER,
    PRIMARY KEY (task_id, entry_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX task_history_order ON task_history (task_id, at, entry_id);

-- Our agent's questions to our owner about a call or a task.
CREATE TABLE escalations (
    escalation_id   TEXT PRIMARY KEY,
    conversation_id TEXT NOT NULL,
    peer_id         TEXT NOT NULL,
    reason          TEXT NOT NULL,
    options         TEXT NOT NULL DEFAULT '[]',
    state           TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
    answer          TEXT,
    created_at      INTEGER NOT NULL,
    resolved_at     INTEGER,
    reminded_at     INTEGER NOT NULL,
    reminders       INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX escalations_conversation ON escalations (conversation_id) WHERE state = 'open';
CREATE INDEX escalations_remind ON escalations (reminded_at) WHERE state = 'open';
