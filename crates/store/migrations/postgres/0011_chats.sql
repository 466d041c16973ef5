-- Chat conversations, so that any node takes up any conversation. `memory` is what the
-- conversation remembers (the chat crate's, as JSON), its transcript with it: personal data,
-- deleted once the conversation has been idle past chat.session_idle. A node answering a
-- message holds the conversation until `busy_until`, so two nodes never answer one
-- conversation at once.
CREATE TABLE chats (
    id         UUID PRIMARY KEY,
    client     TEXT NOT NULL,      -- who opened it, as the limits count addresses
    memory     TEXT NOT NULL,
    failures   BIGINT  NOT NULL,   -- failed look-ups in this conversation
    turns      BIGINT  NOT NULL,   -- messages taken
    chars      BIGINT  NOT NULL,   -- and their characters
    last_at    TIMESTAMPTZ NOT NULL,
    busy_until TIMESTAMPTZ
);
CREATE INDEX chats_by_client ON chats (client, last_at);
CREATE INDEX chats_by_last ON chats (last_at);
