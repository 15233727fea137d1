-- The model queue's states are the ones the worker writes (see
-- `store::model_queue::AiStatus`): a customer message is stored 'pending',
-- and the model stage finishes it 'done', 'skipped' or 'failed'. Migration
-- 0004 also allowed 'running' and a claim time, `ai_claimed_at`, for a claim
-- step that the model stage never had: it holds the messages it works on in
-- memory, and its writes land only while a message is still pending. Both
-- were read but never written; they go, and the index of open messages
-- follows the one open state.

-- No row can hold 'running' (nothing ever wrote it); this keeps the new
-- constraint valid whatever a database saw.
UPDATE enrich.messages SET ai_status = 'pending' WHERE ai_status = 'running';

ALTER TABLE enrich.messages DROP CONSTRAINT messages_ai_status_check;
ALTER TABLE enrich.messages
    ADD CONSTRAINT messages_ai_status_check
    CHECK (ai_status IN ('pending', 'done', 'skipped', 'failed'));

ALTER TABLE enrich.messages DROP COLUMN ai_claimed_at;

-- The model stage pages through pending messages by id at start-up and
-- while it runs.
DROP INDEX enrich.messages_ai_open;
CREATE INDEX messages_ai_pending ON enrich.messages (id) WHERE ai_status = 'pending';
