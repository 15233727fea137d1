-- Dead letters, moved off the dead-letter queue by the worker so operators
-- can list, replay and purge them, and so erasing a customer erases theirs.
-- The keys that say whom an event is about are copied out of the body
-- (when it parses) for `customer.forget` to find them.
CREATE TABLE enrich.dead_letters (
    id               bigserial PRIMARY KEY,
    routing_key      text        NOT NULL,
    body             bytea       NOT NULL,
    reason           text        NOT NULL,
    workspace_id     text,
    event_id         text,
    event_type       text,
    conversation_id  text,
    platform         text,
    platform_user_id text,
    customer_id      text,
    email            text,
    occurred_at      timestamptz,
    dead_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_workspace ON enrich.dead_letters (workspace_id, id);

-- What an erasure covered, as SHA-256 digests of its subjects (customer id,
-- identities, emails, conversations), and when the erasure was asked for at
-- the source: an event about one of them that occurred before is a retry or
-- a redelivery, and is dropped instead of recreating the customer.
ALTER TABLE enrich.erasures ADD COLUMN subject_digests text[] NOT NULL DEFAULT '{}';
ALTER TABLE enrich.erasures ADD COLUMN occurred_at timestamptz;
CREATE INDEX erasures_subjects ON enrich.erasures USING gin (subject_digests);
