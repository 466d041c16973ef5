-- Settings callbackd keeps for itself, shared by every node on the store: the API token it
-- generated at first start when none was configured.
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
