-- The dialer: leases on callbacks being dialed, every attempt, agents and their history.

-- A callback being dialed is leased to one node until lease_expires_at; the node renews the
-- lease while the call lasts. lease_generation goes up with every new lease and is the
-- fencing token: a write from a node whose lease was taken over no longer matches.
ALTER TABLE callbacks ADD COLUMN lease_owner TEXT;
ALTER TABLE callbacks ADD COLUMN lease_expires_at TIMESTAMPTZ;
ALTER TABLE callbacks ADD COLUMN lease_generation BIGINT NOT NULL DEFAULT 0;
CREATE INDEX callbacks_leases ON callbacks (lease_expires_at) WHERE lease_owner IS NOT NULL;
-- The dialer serves, and counts places in line, by skill across queues.
CREATE INDEX callbacks_skill_order ON callbacks (skill, state, priority DESC, enqueued_at, id);

-- One row per attempt, committed before its first INVITE; one attempt per lease.
CREATE TABLE attempts (
    id          UUID PRIMARY KEY,
    callback_id UUID NOT NULL REFERENCES callbacks (id),
    number      INTEGER NOT NULL,
    generation  BIGINT NOT NULL,
    node        TEXT NOT NULL,
    agent_id    TEXT,
    started_at  TIMESTAMPTZ NOT NULL,
    ended_at    TIMESTAMPTZ,
    outcome     TEXT,                  -- NULL while the attempt is under way
    sip_status  INTEGER,
    UNIQUE (callback_id, generation)
);
-- The latest connected calls give the average handle time.
CREATE INDEX attempts_connected ON attempts (ended_at) WHERE outcome = 'connected';

CREATE TABLE agents (
    id      TEXT PRIMARY KEY,
    name    TEXT NOT NULL,
    skills  JSONB NOT NULL,
    address TEXT NOT NULL,
    state   TEXT NOT NULL CHECK (state IN ('logged_out', 'ready', 'reserved', 'on_call',
                'wrap_up', 'not_ready')),
    reason  TEXT,
    attempt_id UUID,               -- the attempt a reserved or busy agent is on
    since   TIMESTAMPTZ NOT NULL,
    version BIGINT NOT NULL
);

CREATE TABLE agent_events (
    seq        BIGSERIAL PRIMARY KEY,
    agent_id   TEXT NOT NULL REFERENCES agents (id),
    at         TIMESTAMPTZ NOT NULL,
    actor      TEXT NOT NULL,
    from_state TEXT,                    -- NULL: the agent was created
    to_state   TEXT NOT NULL,
    reason     TEXT
);
CREATE INDEX agent_events_history ON agent_events (agent_id, seq);
