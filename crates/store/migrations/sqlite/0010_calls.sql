-- One record per call, inbound or placed, written once it has ended. Records name callers'
-- numbers: they are purged past the retention's age (retention.calls).
CREATE TABLE calls (
    id           BLOB PRIMARY KEY,
    call_id      TEXT NOT NULL,
    node         TEXT NOT NULL,
    direction    TEXT NOT NULL CHECK (direction IN ('inbound', 'outbound')),
    from_user    TEXT NOT NULL,
    to_user      TEXT NOT NULL,
    entry        TEXT,               -- the dialplan entry an inbound call started at
    attempt_id   BLOB,               -- the dial attempt a placed call was part of
    trunk        TEXT,               -- the trunk a placed call went through
    started_at   TEXT NOT NULL,
    answered_at  TEXT,
    ended_at     TEXT NOT NULL,
    end_reason   TEXT NOT NULL,
    sip_status   INTEGER,            -- the refusal's or failure's status
    keys_source  TEXT,               -- how the call's first key came (never the keys)
    rtp_sent     INTEGER NOT NULL,
    rtp_received INTEGER NOT NULL,
    rtp_lost     INTEGER NOT NULL
);
CREATE INDEX calls_by_time ON calls (started_at, id);
CREATE INDEX calls_by_attempt ON calls (attempt_id);
