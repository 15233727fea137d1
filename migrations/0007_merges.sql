-- History stays append-only, but a merge may move rows to the surviving
-- customer: an update that changes anything besides customer_id is refused.
CREATE OR REPLACE FUNCTION enrich.forbid_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (to_jsonb(NEW) - 'customer_id') IS DISTINCT FROM (to_jsonb(OLD) - 'customer_id') THEN
        RAISE EXCEPTION 'enrich.% is append-only', TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END $$;

-- Merging two customers of one workspace into the older one, in the caller's
-- transaction: identities, conversations, messages, asks, escalations, calls,
-- history, fields (higher source rank wins, then the more recent), declines,
-- tags, insights and counters. Returns what moved; NULL if `from` is gone.
CREATE FUNCTION enrich.merge_customers(p_workspace text, p_into uuid, p_from uuid, p_reason text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_from    enrich.customers%ROWTYPE;
    v_field   enrich.customer_fields%ROWTYPE;
    v_current enrich.customer_fields%ROWTYPE;
    v_has     boolean;
    v_n       integer;
    v_moved   jsonb := '{}';
    v_fields  text[] := '{}';
BEGIN
    -- Lock both customers in one order so concurrent merges cannot deadlock on them.
    PERFORM 1 FROM enrich.customers WHERE id IN (p_into, p_from) ORDER BY id FOR UPDATE;
    SELECT * INTO v_from FROM enrich.customers WHERE id = p_from AND workspace_id = p_workspace;
    IF NOT FOUND OR p_into = p_from THEN
        RETURN NULL;
    END IF;
    PERFORM 1 FROM enrich.customers WHERE id = p_into AND workspace_id = p_workspace;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    UPDATE enrich.identities SET customer_id = p_into WHERE customer_id = p_from;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_moved := v_moved || jsonb_build_object('identities', v_n);
    UPDATE enrich.conversations SET customer_id = p_into WHERE customer_id = p_from;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_moved := v_moved || jsonb_build_object('conversations', v_n);
    UPDATE enrich.messages SET customer_id = p_into WHERE customer_id = p_from;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_moved := v_moved || jsonb_build_object('messages', v_n);
    UPDATE enrich.asks SET customer_id = p_into WHERE customer_id = p_from;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_moved := v_moved || jsonb_build_object('asks', v_n);
    UPDATE enrich.escalations SET customer_id = p_into WHERE customer_id = p_from;
    UPDATE enrich.llm_calls SET customer_id = p_into WHERE customer_id = p_from;
    UPDATE enrich.field_changes SET customer_id = p_into WHERE customer_id = p_from;

    FOR v_field IN SELECT * FROM enrich.customer_fields WHERE customer_id = p_from LOOP
        SELECT * INTO v_current FROM enrich.customer_fields
         WHERE customer_id = p_into AND field = v_field.field FOR UPDATE;
        v_has := FOUND;
        IF NOT v_has
           OR v_field.source_rank > v_current.source_rank
           OR (v_field.source_rank = v_current.source_rank AND v_field.updated_at > v_current.updated_at) THEN
            IF NOT v_has OR v_current.value IS DISTINCT FROM v_field.value THEN
                INSERT INTO enrich.field_changes (workspace_id, customer_id, field, old_value, new_value, source,
                                                  actor, message_id, model, prompt_version)
                VALUES (p_workspace, p_into, v_field.field, CASE WHEN v_has THEN v_current.value END,
                        v_field.value, v_field.source, 'merge', v_field.message_id, v_field.model,
                        v_field.prompt_version);
                v_fields := v_fields || v_field.field;
            END IF;
            INSERT INTO enrich.customer_fields (customer_id, field, value, source, source_rank, actor, evidence,
                                                message_id, confidence, model, prompt_version, updated_at)
            VALUES (p_into, v_field.field, v_field.value, v_field.source, v_field.source_rank, v_field.actor,
                    v_field.evidence, v_field.message_id, v_field.confidence, v_field.model,
                    v_field.prompt_version, v_field.updated_at)
            ON CONFLICT (customer_id, field) DO UPDATE
               SET value = excluded.value, source = excluded.source, source_rank = excluded.source_rank,
                   actor = excluded.actor, evidence = excluded.evidence, message_id = excluded.message_id,
                   confidence = excluded.confidence, model = excluded.model,
                   prompt_version = excluded.prompt_version, updated_at = excluded.updated_at;
        END IF;
    END LOOP;
    v_moved := v_moved || jsonb_build_object('fields', to_jsonb(v_fields));

    INSERT INTO enrich.declined_fields (customer_id, field, message_id, declined_at)
    SELECT p_into, field, message_id, declined_at FROM enrich.declined_fields WHERE customer_id = p_from
    ON CONFLICT DO NOTHING;
    INSERT INTO enrich.tags (customer_id, tag, source, added_at)
    SELECT p_into, tag, source, added_at FROM enrich.tags WHERE customer_id = p_from
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_moved := v_moved || jsonb_build_object('tags', v_n);
    INSERT INTO enrich.customer_insights (customer_id, insights, model, prompt_version, updated_at)
    SELECT p_into, insights, model, prompt_version, updated_at FROM enrich.customer_insights WHERE customer_id = p_from
    ON CONFLICT DO NOTHING;

    UPDATE enrich.customers c
       SET first_seen_at = least(c.first_seen_at, v_from.first_seen_at),
           last_seen_at = greatest(c.last_seen_at, v_from.last_seen_at),
           conversation_count = c.conversation_count + v_from.conversation_count,
           customer_message_count = c.customer_message_count + v_from.customer_message_count,
           bot_message_count = c.bot_message_count + v_from.bot_message_count,
           agent_message_count = c.agent_message_count + v_from.agent_message_count,
           unresolved_queries = c.unresolved_queries + v_from.unresolved_queries,
           last_message = CASE WHEN v_from.last_seen_at > c.last_seen_at THEN coalesce(v_from.last_message, c.last_message)
                               ELSE coalesce(c.last_message, v_from.last_message) END,
           platforms = ARRAY(SELECT DISTINCT unnest(c.platforms || v_from.platforms) ORDER BY 1),
           source = coalesce(c.source, v_from.source),
           first_message_tag = coalesce(c.first_message_tag, v_from.first_message_tag),
           profile_picture_url = coalesce(c.profile_picture_url, v_from.profile_picture_url),
           agent_instructions = coalesce(c.agent_instructions, v_from.agent_instructions),
           updated_at = now()
     WHERE c.id = p_into;

    DELETE FROM enrich.customers WHERE id = p_from;
    INSERT INTO enrich.merges (workspace_id, into_customer, from_customer, reason, moved)
    VALUES (p_workspace, p_into, p_from, p_reason, v_moved);
    RETURN v_moved;
END $$;
