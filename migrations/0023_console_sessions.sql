-- Sessions of the web console (`/ui`): a signed-in browser holds a random
-- secret in an HttpOnly cookie; only its SHA-256 is stored here, with the API
-- token it was opened with. Revoking that token ends its sessions (sessions
-- are read joined to the active token); deleting the token row deletes them.
CREATE TABLE enrich.console_sessions (
    secret_sha256 bytea       PRIMARY KEY,
    token_id      uuid        NOT NULL REFERENCES enrich.api_tokens (id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_at ON enrich.console_sessions (expires_at);
