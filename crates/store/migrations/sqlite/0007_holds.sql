-- Callers holding on the line for an agent, in the same line as the callbacks (by skill,
-- priority, then the time they called). A hold lives as long as its call, on the node that
-- has the call, which renews expires_at while the caller holds; a node that stops leaves its
-- holds to expire.
CREATE TABLE holds (
    id          BLOB PRIMARY KEY,
    node        TEXT NOT NULL,
    queue       TEXT NOT NULL,
    skill       TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    enqueued_at TEXT NOT NULL,
    caller_id   TEXT NOT NULL,
    expires_at  TEXT NOT NULL,
    agent_id    TEXT              -- the agent being connected, while one is
);
CREATE INDEX holds_line ON holds (skill, priority DESC, enqueued_at, id);
