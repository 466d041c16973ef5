-- Where agents' phones registered (callbackd's registrar), so a restart keeps them.
CREATE TABLE sip_bindings (
    username   TEXT NOT NULL,
    contact    TEXT NOT NULL,
    source     TEXT NOT NULL,          -- ip:port the REGISTER came from
    transport  TEXT NOT NULL CHECK (transport IN ('udp', 'tcp')),
    expires_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (username, contact)
);
CREATE INDEX sip_bindings_expiry ON sip_bindings (expires_at);
