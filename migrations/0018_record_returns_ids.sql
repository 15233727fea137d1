-- Redis is the hot profile (docs/redis.md): the worker reads a customer's
-- known fields, declines, ask counts, tags and agent instructions, and a
-- conversation's asks and last turns, from Redis, and rebuilds them from
-- Postgres on a miss. To know whether its copy is current it needs a number
-- only Postgres knows: customers.state_version, bumped by triggers whenever
-- any part of that state changes, whoever changes it. A copy whose version
-- differs from the one the message's own transaction reads is not used.
--
-- record_chat_message therefore returns only what Postgres alone knows: the
-- stored ids, whether the customer and the conversation are new, the
-- counters (customer turn, message count, tokens spent) and the state
-- version; the decision state and the turns no longer come back with it.

ALTER TABLE enrich.customers ADD COLUMN state_version bigint NOT NULL DEFAULT 0;

-- Bumps the state version of the customers a row of a decision-state table belongs to.
CREATE FUNCTION enrich.bump_state_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        UPDATE enrich.customers SET state_version = state_version + 1 WHERE id = NEW.customer_id;
    END IF;
    IF TG_OP <> 'INSERT' AND (TG_OP = 'DELETE' OR OLD.customer_id IS DISTINCT FROM NEW.customer_id) THEN
        UPDATE enrich.customers SET state_version = state_version + 1 WHERE id = OLD.customer_id;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER customer_fields_bump_state_version
    AFTER INSERT OR UPDATE OR DELETE ON enrich.customer_fields
    FOR EACH ROW EXECUTE FUNCTION enrich.bump_state_version();
CREATE TRIGGER declined_fields_bump_state_version
    AFTER INSERT OR UPDATE OR DELETE ON enrich.declined_fields
    FOR EACH ROW EXECUTE FUNCTION enrich.bump_state_version();
CREATE TRIGGER asks_bump_state_version
    AFTER INSERT OR UPDATE OR DELETE ON enrich.asks
    FOR EACH ROW EXECUTE FUNCTION enrich.bump_state_version();
CREATE TRIGGER tags_bump_state_version
    AFTER INSERT OR UPDATE OR DELETE ON enrich.tags
    FOR EACH ROW EXECUTE FUNCTION enrich.bump_state_version();

-- Agent instructions are part of the hot profile too.
CREATE FUNCTION enrich.bump_own_state_version() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.state_version := OLD.state_version + 1;
    RETURN NEW;
END $$;

CREATE TRIGGER customers_bump_state_version
    BEFORE UPDATE ON enrich.customers
    FOR EACH ROW WHEN (OLD.agent_instructions IS DISTINCT FROM NEW.agent_instructions)
    EXECUTE FUNCTION enrich.bump_own_state_version();

DROP FUNCTION enrich.record_chat_message(text, text, text, text, text, text, text, text, timestamptz, jsonb,
                                         text, text, text, boolean, boolean, integer);

-- Records one chat message: dedupe, workspace, identity, conversation, message,
-- counters (last_customer_message_at moved by the customer's own messages only, as in 0015).
CREATE FUNCTION enrich.record_chat_message(
    p_workspace text, p_event_id text, p_conversation text, p_platform text, p_user text,
    p_sender text, p_text text, p_agent_id text, p_occurred_at timestamptz, p_visitor jsonb,
    p_source text, p_first_message_tag text, p_default_region text, p_enrichment boolean,
    p_await_model boolean,
    OUT duplicate boolean, OUT customer_id uuid, OUT conversation_id bigint, OUT message_id bigint,
    OUT new_customer boolean, OUT new_conversation boolean, OUT enrichment_enabled boolean,
    OUT default_region text, OUT customer_turn integer, OUT message_count integer,
    OUT state_version bigint, OUT spent_tokens bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
AS $$
DECLARE
    v_customer_msgs int := (p_sender = 'customer')::int;
    v_bot_msgs int := (p_sender = 'bot')::int;
    v_agent_msgs int := (p_sender = 'agent')::int;
BEGIN
    INSERT INTO enrich.processed_events (workspace_id, event_id, event_type)
    VALUES (p_workspace, p_event_id, 'chat.message') ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        duplicate := true;
        RETURN;
    END IF;
    duplicate := false;

    INSERT INTO enrich.workspaces (id, enrichment_enabled, default_region)
    VALUES (p_workspace, p_enrichment, p_default_region) ON CONFLICT DO NOTHING;
    SELECT w.enrichment_enabled, w.default_region INTO enrichment_enabled, default_region
      FROM enrich.workspaces w WHERE w.id = p_workspace;

    SELECT c.id, c.customer_id INTO conversation_id, customer_id
      FROM enrich.conversations c
     WHERE c.workspace_id = p_workspace AND c.external_id = p_conversation;
    new_conversation := NOT FOUND;

    IF new_conversation THEN
        SELECT r.customer_id, r.created INTO customer_id, new_customer
          FROM enrich.customer_for_identity(p_workspace, p_platform, p_user, p_occurred_at, p_visitor) r;
        INSERT INTO enrich.conversations (workspace_id, external_id, customer_id, platform, started_at,
                                          last_message_at, source, first_message_tag)
        VALUES (p_workspace, p_conversation, customer_id, p_platform, p_occurred_at, p_occurred_at,
                p_source, p_first_message_tag)
        ON CONFLICT (workspace_id, external_id) DO NOTHING
        RETURNING id INTO conversation_id;
        IF conversation_id IS NULL THEN
            -- A concurrent transaction opened it; join that one.
            SELECT c.id, c.customer_id INTO conversation_id, customer_id
              FROM enrich.conversations c
             WHERE c.workspace_id = p_workspace AND c.external_id = p_conversation;
            new_conversation := false;
        END IF;
    ELSE
        new_customer := false;
        IF p_visitor IS NOT NULL THEN
            UPDATE enrich.customer_identities SET visitor = p_visitor, last_seen_at = greatest(last_seen_at, p_occurred_at)
             WHERE workspace_id = p_workspace AND platform = p_platform AND platform_user_id = p_user;
        END IF;
    END IF;

    UPDATE enrich.conversations c
       SET message_count = c.message_count + 1,
           customer_turns = c.customer_turns + v_customer_msgs,
           last_message_at = greatest(c.last_message_at, p_occurred_at),
           status = CASE WHEN c.status = 'closed' THEN 'active' ELSE c.status END,
           ended_at = CASE WHEN c.status = 'closed' THEN NULL ELSE c.ended_at END
     WHERE c.id = conversation_id
    RETURNING c.customer_turns, c.message_count INTO customer_turn, message_count;

    INSERT INTO enrich.messages (workspace_id, conversation_id, customer_id, event_id, sender, agent_id, text,
                                 occurred_at, ai_status, customer_turn)
    VALUES (p_workspace, conversation_id, customer_id, p_event_id, p_sender, p_agent_id, p_text, p_occurred_at,
            CASE WHEN p_await_model AND p_sender = 'customer' AND enrichment_enabled THEN 'pending' END,
            CASE WHEN p_sender = 'customer' THEN customer_turn END)
    RETURNING id INTO message_id;

    UPDATE enrich.customers u
       SET first_seen_at = least(coalesce(u.first_seen_at, p_occurred_at), p_occurred_at),
           last_seen_at = greatest(coalesce(u.last_seen_at, p_occurred_at), p_occurred_at),
           last_customer_message_at = CASE WHEN p_sender = 'customer'
                                           THEN greatest(coalesce(u.last_customer_message_at, p_occurred_at), p_occurred_at)
                                           ELSE u.last_customer_message_at END,
           conversation_count = u.conversation_count + new_conversation::int,
           customer_message_count = u.customer_message_count + v_customer_msgs,
           bot_message_count = u.bot_message_count + v_bot_msgs,
           agent_message_count = u.agent_message_count + v_agent_msgs,
           last_message = CASE WHEN p_sender = 'customer' THEN left(p_text, 1000) ELSE u.last_message END,
           platforms = CASE WHEN p_platform = ANY (u.platforms) THEN u.platforms ELSE u.platforms || p_platform END,
           source = CASE WHEN u.conversation_count = 0 AND new_conversation THEN coalesce(p_source, u.source, 'organic') ELSE coalesce(u.source, p_source) END,
           first_message_tag = CASE WHEN u.conversation_count = 0 AND new_conversation THEN coalesce(p_first_message_tag, u.first_message_tag) ELSE u.first_message_tag END,
           updated_at = now()
     WHERE u.id = customer_id
    -- The version of the customer's decision state, which tells the worker
    -- whether its Redis copy is current.
    RETURNING u.state_version INTO state_version;

    -- The conversation's spend, for a message left to the model stage's budget check.
    IF p_await_model AND p_sender = 'customer' AND enrichment_enabled THEN
        SELECT coalesce(sum(l.prompt_tokens + l.completion_tokens), 0)::bigint
          INTO spent_tokens FROM enrich.llm_calls l WHERE l.conversation_id = record_chat_message.conversation_id;
    END IF;
END $$;
