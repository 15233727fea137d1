-- The HTTP API: bearer tokens per workspace (only the SHA-256 of a token is
-- stored), the `import` source ranked with form and api, and the index that
-- lists a workspace's customers newest activity first.

CREATE TABLE enrich.api_tokens (
    id           uuid PRIMARY KEY,
    workspace_id text        NOT NULL,
    name         text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    scopes       text[]      NOT NULL,
    token_sha256 bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE UNIQUE INDEX api_tokens_active_name ON enrich.api_tokens (workspace_id, name)
    WHERE revoked_at IS NULL;

ALTER TABLE enrich.customer_fields DROP CONSTRAINT customer_fields_source_check;
ALTER TABLE enrich.customer_fields ADD CONSTRAINT customer_fields_source_check
    CHECK (source IN ('agent','form','api','import','customer','system'));

-- Source ranks: agent 4 > form = api = import 3 > customer 2 > system 1.
CREATE OR REPLACE FUNCTION enrich.source_rank(p_source text) RETURNS smallint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_source WHEN 'agent' THEN 4 WHEN 'form' THEN 3 WHEN 'api' THEN 3
                         WHEN 'import' THEN 3 WHEN 'customer' THEN 2 ELSE 1 END::smallint
$$;

-- Customer lists: newest activity first (imported customers have no message yet).
CREATE INDEX customers_workspace_activity
    ON enrich.customers (workspace_id, (coalesce(last_seen_at, created_at)) DESC, id DESC);
