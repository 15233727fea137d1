-- Store-side units of work. Each call is one round trip that keeps counters,
-- identities and history consistent inside the caller's transaction; the worker
-- batches many calls into one transaction, so a message costs about one round trip.

-- Source ranks: agent 4 > form = api 3 > customer 2 > system 1.
CREATE FUNCTION enrich.source_rank(p_source text) RETURNS smallint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE p_source WHEN 'agent' THEN 4 WHEN 'form' THEN 3 WHEN 'api' THEN 3
                         WHEN 'customer' THEN 2 ELSE 1 END::smallint
$$;

-- Finds the customer behind an identity, creating an anonymous customer when the
-- identity is new. Safe when two transactions see the same new identity at once.
CREATE FUNCTION enrich.customer_for_identity(
    p_workspace text, p_platform text, p_user text, p_at timestamptz, p_visitor jsonb,
    OUT customer_id uuid, OUT created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_new uuid;
BEGIN
    UPDATE enrich.identities
       SET last_seen_at = greatest(last_seen_at, p_at),
           visitor = coalesce(p_visitor, visitor)
     WHERE workspace_id = p_workspace AND platform = p_platform AND platform_user_id = p_user
    RETURNING identities.customer_id INTO customer_id;
    IF FOUND THEN
        created := false;
        RETURN;
    END IF;
    v_new := gen_random_uuid();
    INSERT INTO enrich.customers (id, workspace_id, created_at, first_seen_at, last_seen_at)
    VALUES (v_new, p_workspace, now(), p_at, p_at);
    INSERT INTO enrich.identities (workspace_id, platform, platform_user_id, customer_id, visitor, first_seen_at, last_seen_at)
    VALUES (p_workspace, p_platform, p_user, v_new, p_visitor, p_at, p_at)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        customer_id := v_new;
        created := true;
        RETURN;
    END IF;
    -- Another transaction created this identity first: use its customer.
    DELETE FROM enrich.customers WHERE id = v_new;
    SELECT i.customer_id INTO customer_id FROM enrich.identities i
     WHERE i.workspace_id = p_workspace AND i.platform = p_platform AND i.platform_user_id = p_user;
    created := false;
END $$;

-- Records one chat message: dedupe, workspace, identity, conversation, message, counters.
CREATE FUNCTION enrich.record_chat_message(
    p_workspace text, p_event_id text, p_conversation text, p_platform text, p_user text,
    p_sender text, p_text text, p_agent_id text, p_occurred_at timestamptz, p_visitor jsonb,
    p_source text, p_first_message_tag text, p_default_region text, p_enrichment boolean,
    OUT duplicate boolean, OUT customer_id uuid, OUT conversation_id bigint, OUT message_id bigint,
    OUT new_customer boolean, OUT new_conversation boolean, OUT enrichment_enabled boolean,
    OUT default_region text, OUT customer_turn integer)
LANGUAGE plpgsql AS $$
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

    INSERT INTO enrich.messages (workspace_id, conversation_id, customer_id, event_id, sender, agent_id, text, occurred_at)
    VALUES (p_workspace, conversation_id, customer_id, p_event_id, p_sender, p_agent_id, p_text, p_occurred_at)
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
END $$;

-- Writes one field value if its source ranks at least as high as the current one's.
-- Returns whether the value changed, and the previous value.
CREATE FUNCTION enrich.apply_field(
    p_workspace text, p_customer uuid, p_field text, p_value text, p_source text, p_actor text,
    p_evidence text, p_message_id bigint, p_confidence real, p_model text, p_prompt_version text,
    OUT changed boolean, OUT old_value text, OUT blocked_by text)
LANGUAGE plpgsql AS $$
DECLARE
    v_rank smallint := enrich.source_rank(p_source);
    v_current enrich.customer_fields%ROWTYPE;
BEGIN
    SELECT * INTO v_current FROM enrich.customer_fields
     WHERE customer_id = p_customer AND field = p_field FOR UPDATE;
    IF FOUND THEN
        old_value := v_current.value;
        IF v_current.source_rank > v_rank THEN
            changed := false;
            blocked_by := v_current.source;
            RETURN;
        END IF;
        IF v_current.value = p_value THEN
            changed := false;
            IF v_current.source_rank < v_rank THEN
                UPDATE enrich.customer_fields SET source = p_source, source_rank = v_rank, actor = p_actor,
                       updated_at = now()
                 WHERE customer_id = p_customer AND field = p_field;
            END IF;
            RETURN;
        END IF;
    END IF;
    INSERT INTO enrich.customer_fields AS f (customer_id, field, value, source, source_rank, actor, evidence,
                                             message_id, confidence, model, prompt_version, updated_at)
    VALUES (p_customer, p_field, p_value, p_source, v_rank, p_actor, p_evidence, p_message_id,
            p_confidence, p_model, p_prompt_version, now())
    ON CONFLICT (customer_id, field) DO UPDATE
       SET value = excluded.value, source = excluded.source, source_rank = excluded.source_rank,
           actor = excluded.actor, evidence = excluded.evidence, message_id = excluded.message_id,
           confidence = excluded.confidence, model = excluded.model,
           prompt_version = excluded.prompt_version, updated_at = now();
    INSERT INTO enrich.field_changes (workspace_id, customer_id, field, old_value, new_value, source, actor,
                                      message_id, model, prompt_version)
    VALUES (p_workspace, p_customer, p_field, old_value, p_value, p_source, p_actor, p_message_id,
            p_model, p_prompt_version);
    UPDATE enrich.asks SET outcome = 'answered', outcome_at = now()
     WHERE customer_id = p_customer AND field = p_field AND outcome = 'pending';
    UPDATE enrich.customers SET updated_at = now() WHERE id = p_customer;
    changed := true;
END $$;
