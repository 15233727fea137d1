-- What the worker itself spent on an enrichment call's message, apart from
-- the model: when it received the event from the broker, and how long the
-- message waited in the model stage behind earlier messages of its
-- conversation (whose calls were in flight). The model path's own time is
-- then commit time - event_received_at - latency_ms - stage_queue_ms.
-- Null for summary and insights calls and for messages resumed after a restart.
ALTER TABLE enrich.llm_calls
    ADD COLUMN event_received_at timestamptz,
    ADD COLUMN stage_queue_ms    integer;
