-- Which customer message an enrichment call was about, so cost and latency can
-- be traced per message.
ALTER TABLE enrich.llm_calls ADD COLUMN message_id bigint;
CREATE INDEX llm_calls_conversation ON enrich.llm_calls (conversation_id);
