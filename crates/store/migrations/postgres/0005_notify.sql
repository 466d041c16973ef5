-- Every node hears of every change to a callback or an agent within milliseconds, through
-- LISTEN/NOTIFY: a wake-up hint only (the payload is the ID); nodes also look again every
-- second, so a notification lost with a connection strands nothing. Lease renewals do not
-- change the version and notify nobody.
CREATE FUNCTION callbackd_notify() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify(TG_ARGV[0], NEW.id::text);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER callbacks_changed AFTER INSERT OR UPDATE OF version ON callbacks
    FOR EACH ROW EXECUTE FUNCTION callbackd_notify('callbackd_callbacks');
CREATE TRIGGER agents_changed AFTER INSERT OR UPDATE OF version ON agents
    FOR EACH ROW EXECUTE FUNCTION callbackd_notify('callbackd_agents');
