-- Conversation summaries and customer insights (src/insights). A sweeper in
-- every worker claims ended conversations (closed, or idle) one at a time with
-- FOR UPDATE SKIP LOCKED, so each gets exactly one summary call however many
-- workers run; a claim whose worker died is taken over after a timeout, and
-- the claim token keeps a late writer from overwriting the new claimant.
--
-- summary_status: claimed → done | failed (the call failed; not retried) |
--                 offline (no model configured: no AI text) | skipped (nothing
--                 to summarise, or enrichment off for the workspace).
-- summarized_at:  when the conversation left the sweeper (any final status).
-- insights_status: pending → done | failed, the customer-insights update that
--                  follows a summary, one conversation at a time per customer.
ALTER TABLE enrich.conversations
    ADD COLUMN summary_status     text CHECK (summary_status IN ('claimed', 'done', 'failed', 'offline', 'skipped')),
    ADD COLUMN summary_claim      uuid,
    ADD COLUMN summary_claimed_at timestamptz,
    ADD COLUMN resolved_at        timestamptz,
    ADD COLUMN insights_status    text CHECK (insights_status IN ('pending', 'done', 'failed'));

-- What the sweeper scans: conversations not yet summarised.
CREATE INDEX conversations_summary_due ON enrich.conversations (last_message_at)
    WHERE summarized_at IS NULL;
CREATE INDEX conversations_insights_pending ON enrich.conversations (customer_id)
    WHERE insights_status = 'pending';

-- A close wakes the sweepers at once (LISTEN enrich_conversation_closed)
-- instead of waiting for their next tick; delivered on commit.
CREATE FUNCTION enrich.notify_conversation_closed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('enrich_conversation_closed', '');
    RETURN NULL;
END $$;
CREATE TRIGGER conversations_closed_notify AFTER UPDATE OF status ON enrich.conversations
    FOR EACH ROW WHEN (NEW.status = 'closed' AND OLD.status IS DISTINCT FROM 'closed')
    EXECUTE FUNCTION enrich.notify_conversation_closed();
