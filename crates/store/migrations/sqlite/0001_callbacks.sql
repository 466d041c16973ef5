-- Callbacks and their append-only history.
-- Times are RFC 3339 text in UTC, which sorts in time order; IDs are 16-byte UUIDs.
CREATE TABLE callbacks (
    id              BLOB PRIMARY KEY,
    confirmation_id TEXT NOT NULL,
    queue           TEXT NOT NULL,
    skill           TEXT NOT NULL,
    media           TEXT NOT NULL CHECK (media IN ('voice', 'sip', 'sms')),
    address         TEXT NOT NULL,
    customer_name   TEXT,
    requested_at    TEXT,            -- NULL: as soon as possible
    time_zone       TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'dialing', 'connected',
                        'completed', 'paused', 'cancelled', 'failed', 'expired')),
    priority        INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at TEXT NOT NULL,
    enqueued_at     TEXT NOT NULL,   -- the place in line
    expires_at      TEXT NOT NULL,
    source          TEXT NOT NULL CHECK (source IN ('ivr', 'api', 'chat')),
    context         TEXT NOT NULL,
    version         INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- A confirmation ID names at most one open callback; closed ones may share it.
CREATE UNIQUE INDEX callbacks_open_confirmation_id ON callbacks (confirmation_id)
    WHERE state NOT IN ('completed', 'cancelled', 'failed', 'expired');
CREATE INDEX callbacks_confirmation_id ON callbacks (confirmation_id, created_at);
-- Dialing order: priority, then the place in line.
CREATE INDEX callbacks_dialing_order ON callbacks (queue, state, priority DESC, enqueued_at, id);
CREATE INDEX callbacks_all_in_order ON callbacks (priority DESC, enqueued_at, id);
CREATE INDEX callbacks_scheduled_due ON callbacks (next_attempt_at) WHERE state = 'scheduled';
CREATE INDEX callbacks_open_expiry ON callbacks (expires_at) WHERE state IN ('scheduled', 'queued');

CREATE TABLE callback_events (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    callback_id     BLOB REFERENCES callbacks (id),   -- NULL: no callback matched
    confirmation_id TEXT,
    at              TEXT NOT NULL,
    channel         TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    receipt         TEXT,
    from_state      TEXT,
    to_state        TEXT,
    changes         TEXT NOT NULL
);
CREATE INDEX callback_events_history ON callback_events (callback_id, seq);
CREATE INDEX callback_events_receipt ON callback_events (receipt) WHERE receipt IS NOT NULL;
