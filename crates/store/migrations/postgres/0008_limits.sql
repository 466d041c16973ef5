-- The limiter's counts (guesses at confirmation IDs, bookings from callers and the chat):
-- `client` is who is counted (an address, or a trusted trunk and the identity it asserts),
-- `subject` what was aimed at (the confirmation ID guessed, the number booked).
ALTER TABLE security_events RENAME COLUMN confirmation_id TO subject;
ALTER TABLE security_events ADD COLUMN client TEXT NOT NULL DEFAULT '';
DROP INDEX security_events_caller;
DROP INDEX security_events_confirmation_id;
CREATE INDEX security_events_client ON security_events (kind, client, at);
CREATE INDEX security_events_subject ON security_events (kind, subject, at);
CREATE INDEX security_events_kind ON security_events (kind, at);

-- A caller or the chat booking a number that already has an open callback in the queue gets
-- that one, not a second.
CREATE INDEX callbacks_open_address ON callbacks (address)
    WHERE state NOT IN ('completed', 'cancelled', 'failed', 'expired');
