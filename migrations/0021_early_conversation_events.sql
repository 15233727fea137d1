-- A conversation.status or conversation.closed that arrives before the
-- conversation's first message (a conversation row needs the customer and
-- platform only a message carries) waits here instead of being dead-lettered,
-- and is applied, in arrival order, when that message creates the
-- conversation.
CREATE TABLE enrich.early_conversation_events (
    id           bigserial   PRIMARY KEY,
    workspace_id text        NOT NULL,
    external_id  text        NOT NULL,
    event_type   text        NOT NULL CHECK (event_type IN ('conversation.status', 'conversation.closed')),
    status       text,
    agent_id     text,
    reason       text,
    resolved_by  text,
    resolution   text,
    occurred_at  timestamptz NOT NULL
);
CREATE INDEX early_conversation_events_conversation
    ON enrich.early_conversation_events (workspace_id, external_id, id);
