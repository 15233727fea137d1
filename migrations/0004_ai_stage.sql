-- Customer messages waiting for the model. The message itself is committed and
-- acked first; this marker makes the model step survive a crash or restart.
ALTER TABLE enrich.messages
    ADD COLUMN ai_status     text CHECK (ai_status IN ('pending', 'running', 'done', 'skipped', 'failed')),
    ADD COLUMN ai_claimed_at timestamptz,
    ADD COLUMN customer_turn integer;
CREATE INDEX messages_ai_open ON enrich.messages (stored_at) WHERE ai_status IN ('pending', 'running');
