-- A look-up is counted before it is made (a reservation) and is a failure only once it is
-- found wrong (`settled`); a right one is deleted. The hourly counts of everyone's failures
-- (past `limits.failed_lookups_per_hour` caller ID alone is not enough; past
-- `limits.lockdown_failures_per_hour` look-ups stop) count settled failures only, so that many
-- callers looking up at once under a busy hour do not look like an attack. Events recorded
-- before this migration were all counted, and stay so.
ALTER TABLE security_events ADD COLUMN settled BOOLEAN NOT NULL DEFAULT TRUE;
DROP INDEX security_events_kind;
CREATE INDEX security_events_failures ON security_events (kind, at) WHERE settled;
