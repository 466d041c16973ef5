-- Failed callback look-ups by phone (an unknown confirmation ID or wrong verification digits),
-- kept to lock out a caller who keeps trying and to watch the whole line's failure rate.
CREATE TABLE security_events (
    id        BIGSERIAL PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    kind      TEXT NOT NULL,
    caller_id TEXT NOT NULL,
    source    TEXT NOT NULL,          -- ip:port the call came from
    call_id   TEXT NOT NULL
);
CREATE INDEX security_events_caller ON security_events (caller_id, at);
CREATE INDEX security_events_at ON security_events (at);
