-- Callbacks and their append-only history.
CREATE TABLE callbacks (
    id              UUID PRIMARY KEY,
    confirmation_id TEXT NOT NULL,
    queue           TEXT NOT NULL,
    skill           TEXT NOT NULL,
    media           TEXT NOT NULL CHECK (media IN ('voice', 'sip', 'sms')),
    address         TEXT NOT NULL,
    customer_name   TEXT,
    requested_at    TIMESTAMPTZ,            -- NULL: as soon as possible
    time_zone       TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('scheduled', 'queued', 'dialing', 'connected',
                        'completed', 'paused', 'cancelled', 'failed', 'expired')),
    priority        INTEGER NOT NULL,
    attempts        INTEGER NOT NULL,
    max_attempts    INTEGER NOT NULL,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    enqueued_at     TIMESTAMPTZ NOT NULL,   -- the place in line
    expires_at      TIMESTAMPTZ NOT NULL,
    source          TEXT NOT NULL CHECK (source IN ('ivr', 'api', 'chat')),
    context         JSONB NOT NULL,
    version         BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
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
    seq             BIGSERIAL PRIMARY KEY,
    callback_id     UUID REFERENCES callbacks (id),   -- NULL: no callback matched
    confirmation_id TEXT,
    at              TIMESTAMPTZ NOT NULL,
    channel         TEXT NOT NULL,
    actor           TEXT NOT NULL,
    action          TEXT NOT NULL,
    outcome         TEXT NOT NULL,
    receipt         TEXT,
    from_state      TEXT,
    to_state        TEXT,
    changes         JSONB NOT NULL
);
CREATE INDEX callback_events_history ON callback_events (callback_id, seq);
CREATE INDEX callback_events_receipt ON callback_events (receipt) WHERE receipt IS NOT NULL;
