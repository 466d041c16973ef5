-- Chat conversations, so that any node takes up any conversation. `memory` is what the
-- conversation remembers (the chat crate's, as JSON), its transcript with it: personal data,
-- deleted once the conversation has been idle past chat.session_idle. A node answering a
-- message holds the conversation until `busy_until`, so two nodes never answer one
-- conversation at once.
CREATE TABLE chats (
    id         BLOB PRIMARY KEY,
    client     TEXT NOT NULL,      -- who opened it, as the limits count addresses
    memory     TEXT NOT NULL,
    failures   INTEGER NOT NULL,   -- failed look-ups in this conversation
    turns      INTEGER NOT NULL,   -- messages taken
    chars      INTEGER NOT NULL,   -- and their characters
    last_at    TEXT NOT NULL,
    busy_until TEXT
);
CREATE INDEX chats_by_client ON chats (client, last_at);
CREATE INDEX chats_by_last ON chats (last_at);
