-- The model path's own time in microseconds. In whole milliseconds, a call's
-- latency and its wait in the model stage were each truncated by up to a
-- millisecond, which counted the model's time as the worker's. latency_ms
-- stays as it is for the dashboards; stage_queue_ms is replaced.
-- Own time = commit time - event_received_at - latency_us - stage_queue_us.
ALTER TABLE enrich.llm_calls
    ADD COLUMN latency_us     bigint,
    ADD COLUMN stage_queue_us bigint,
    DROP COLUMN stage_queue_ms;
