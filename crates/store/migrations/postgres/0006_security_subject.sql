-- The confirmation ID a failed look-up was for, so guesses at one callback's last four digits
-- are limited however many phones they come from.
ALTER TABLE security_events ADD COLUMN confirmation_id TEXT;
CREATE INDEX security_events_confirmation_id ON security_events (confirmation_id, at);
