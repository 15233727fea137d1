-- record_chat_message also returns, for a message it marks 'pending' for the
-- model stage, the rest of what the stage needs before it calls the model:
-- the tokens the conversation has spent on the model, the customer's agent
-- instructions and the conversation's last p_recent_turns turns before the
-- message. The lane reads them in the statement that records the message, so
-- the stage can build the prompt and start the call while the lane's commit
-- is still being flushed, instead of reading them in a round trip of its own
-- after the commit. The function keeps enable_seqscan = off (see 0013).
DROP FUNCTION enrich.record_chat_message(text, text, text, text, text, text, text, text, timestamptz, jsonb,
                                         text, text, text, boolean, boolean);

-- Records one chat message: dedupe, workspace, identity, conversation, message, counters.
CREATE FUNCTION enrich.record_chat_message(
    p_workspace text, p_event_id text, p_conversation text, p_platform text, p_user text,
    p_sender text, p_text text, p_agent_id text, p_occurred_at timestamptz, p_visitor jsonb,
    p_source text, p_first_message_tag text, p_default_region text, p_enrichment boolean,
    p_await_model boolean, p_recent_turns integer,
    OUT duplicate boolean, OUT customer_id uuid, OUT conversation_id bigint, OUT message_id bigint,
    OUT new_customer boolean, OUT new_conversation boolean, OUT enrichment_enabled boolean,
    OUT default_region text, OUT customer_turn integer,
    OUT known jsonb, OUT declined text[], OUT asks jsonb, OUT field_attempts jsonb,
    OUT spent_tokens bigint, OUT agent_instructions text, OUT recent_turns jsonb)
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
            UPDATE enrich.identities SET visitor = p_visitor, last_seen_at = greatest(last_seen_at, p_occurred_at)
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
    RETURNING c.customer_turns INTO customer_turn;

    INSERT INTO enrich.messages (workspace_id, conversation_id, customer_id, event_id, sender, agent_id, text,
                                 occurred_at, ai_status, customer_turn)
    VALUES (p_workspace, conversation_id, customer_id, p_event_id, p_sender, p_agent_id, p_text, p_occurred_at,
            CASE WHEN p_await_model AND p_sender = 'customer' AND enrichment_enabled THEN 'pending' END,
            CASE WHEN p_sender = 'customer' THEN customer_turn END)
    RETURNING id INTO message_id;

    UPDATE enrich.customers u
       SET first_seen_at = least(coalesce(u.first_seen_at, p_occurred_at), p_occurred_at),
           last_seen_at = greatest(coalesce(u.last_seen_at, p_occurred_at), p_occurred_at),
           conversation_count = u.conversation_count + new_conversation::int,
           customer_message_count = u.customer_message_count + v_customer_msgs,
           bot_message_count = u.bot_message_count + v_bot_msgs,
           agent_message_count = u.agent_message_count + v_agent_msgs,
           last_message = CASE WHEN p_sender = 'customer' THEN left(p_text, 1000) ELSE u.last_message END,
           platforms = CASE WHEN p_platform = ANY (u.platforms) THEN u.platforms ELSE u.platforms || p_platform END,
           source = CASE WHEN u.conversation_count = 0 AND new_conversation THEN coalesce(p_source, u.source, 'organic') ELSE coalesce(u.source, p_source) END,
           first_message_tag = CASE WHEN u.conversation_count = 0 AND new_conversation THEN coalesce(p_first_message_tag, u.first_message_tag) ELSE u.first_message_tag END,
           updated_at = now()
     WHERE u.id = customer_id;

    -- What the decision core needs about a customer message, in the same round trip.
    IF p_sender = 'customer' AND enrichment_enabled THEN
        SELECT coalesce(jsonb_object_agg(f.field, jsonb_build_object('value', f.value, 'source', f.source)), '{}')
          INTO known FROM enrich.customer_fields f WHERE f.customer_id = record_chat_message.customer_id;
        SELECT coalesce(array_agg(d.field ORDER BY d.field), '{}')
          INTO declined FROM enrich.declined_fields d WHERE d.customer_id = record_chat_message.customer_id;
        SELECT coalesce(jsonb_agg(jsonb_build_object('field', a.field, 'customer_turn', a.customer_turn,
                                                     'pending', a.outcome = 'pending') ORDER BY a.id), '[]')
          INTO asks FROM enrich.asks a WHERE a.conversation_id = record_chat_message.conversation_id;
        SELECT coalesce(jsonb_object_agg(n.field, n.c), '{}')
          INTO field_attempts
          FROM (SELECT a.field, count(*) AS c FROM enrich.asks a
                 WHERE a.customer_id = record_chat_message.customer_id GROUP BY a.field) n;
    END IF;

    -- What the model stage needs besides, for a message left to it.
    IF p_await_model AND p_sender = 'customer' AND enrichment_enabled THEN
        SELECT coalesce(sum(l.prompt_tokens + l.completion_tokens), 0)::bigint
          INTO spent_tokens FROM enrich.llm_calls l WHERE l.conversation_id = record_chat_message.conversation_id;
        SELECT u.agent_instructions INTO agent_instructions
          FROM enrich.customers u WHERE u.id = record_chat_message.customer_id;
        SELECT coalesce(jsonb_agg(jsonb_build_object('sender', t.sender, 'text', t.text) ORDER BY t.id), '[]')
          INTO recent_turns
          FROM (SELECT m.id, m.sender, m.text FROM enrich.messages m
                 WHERE m.conversation_id = record_chat_message.conversation_id
                   AND m.id < record_chat_message.message_id
                 ORDER BY m.id DESC LIMIT greatest(p_recent_turns, 0)) t;
    END IF;
END $$;

