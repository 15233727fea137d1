-- The dashboards' second wave (SPEC §5): notes, clearing a field, tag history,
-- the customer's own last message time, escalations that resolve, the views
-- `identities`, `conversation_messages`, `escalations` and `notes`, new
-- columns at the end of `customer_profiles`, `conversation_overview` and
-- `field_history`, and the indexes behind the documented search queries
-- (docs/dashboards-search.md).

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- The contract's views `enrich.identities` and `enrich.escalations` take the
-- names of two tables; the tables keep their data under new names. Views that
-- read them follow the rename; the functions that write them are recreated
-- below with the new names.
ALTER TABLE enrich.identities RENAME TO customer_identities;
ALTER TABLE enrich.escalations RENAME TO escalation_requests;

-- An escalation is resolved when its conversation leaves `requesting`
-- (`active`, `intervened` or `closed`); `handled_by` is the agent of the
-- `intervened` status.
ALTER TABLE enrich.escalation_requests
    ADD COLUMN resolved_at timestamptz,
    ADD COLUMN handled_by  text;
CREATE INDEX escalation_requests_open ON enrich.escalation_requests (conversation_id)
    WHERE resolved_at IS NULL;

-- The customer's own last message; `last_seen_at` also moves with bot and
-- agent messages.
ALTER TABLE enrich.customers ADD COLUMN last_customer_message_at timestamptz;
UPDATE enrich.customers c
   SET last_customer_message_at = m.at
  FROM (SELECT customer_id, max(occurred_at) AS at FROM enrich.messages
         WHERE sender = 'customer' GROUP BY customer_id) m
 WHERE m.customer_id = c.id;

-- Notes agents write about a customer; they go with the customer.
CREATE TABLE enrich.customer_notes (
    id           bigserial PRIMARY KEY,
    workspace_id text        NOT NULL,
    customer_id  uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    text         text        NOT NULL CHECK (char_length(text) BETWEEN 1 AND 2000),
    author       text        NOT NULL,
    event_id     text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customer_notes_customer ON enrich.customer_notes (customer_id, created_at);

-- Who added a tag, and every tag change (append-only, like field_changes).
ALTER TABLE enrich.tags ADD COLUMN actor text;
CREATE TABLE enrich.tag_changes (
    id           bigserial PRIMARY KEY,
    workspace_id text        NOT NULL,
    customer_id  uuid        NOT NULL REFERENCES enrich.customers (id) ON DELETE CASCADE,
    tag          text        NOT NULL,
    change       text        NOT NULL CHECK (change IN ('added', 'removed')),
    source       text,
    actor        text,
    changed_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tag_changes_customer ON enrich.tag_changes (customer_id, changed_at);
CREATE TRIGGER tag_changes_append_only BEFORE UPDATE ON enrich.tag_changes
    FOR EACH ROW EXECUTE FUNCTION enrich.forbid_update();

-- Search (docs/dashboards-search.md): any part of the name (trigram), the
-- phone in E.164, the platform user id on any platform, a tag. Emails are
-- stored lower-case and already indexed (customer_fields_email).
CREATE INDEX customer_fields_name_trgm ON enrich.customer_fields USING gin (value gin_trgm_ops)
    WHERE field = 'name';
CREATE INDEX customer_fields_phone ON enrich.customer_fields (value) WHERE field = 'phone';
CREATE INDEX customer_identities_user ON enrich.customer_identities (workspace_id, platform_user_id);
CREATE INDEX tags_tag ON enrich.tags (tag);

-- Clears one field if the clearing source ranks at least as high as the
-- current value's: the value goes, the history keeps it (new_value NULL)
-- with the clearing source and actor. Returns whether it was cleared, the
-- value it had, and the source that outranks the clear.
CREATE FUNCTION enrich.clear_field(
    p_workspace text, p_customer uuid, p_field text, p_source text, p_actor text,
    OUT changed boolean, OUT old_value text, OUT blocked_by text)
LANGUAGE plpgsql AS $$
DECLARE
    v_current enrich.customer_fields%ROWTYPE;
BEGIN
    changed := false;
    SELECT * INTO v_current FROM enrich.customer_fields
     WHERE customer_id = p_customer AND field = p_field FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    old_value := v_current.value;
    IF v_current.source_rank > enrich.source_rank(p_source) THEN
        blocked_by := v_current.source;
        RETURN;
    END IF;
    DELETE FROM enrich.customer_fields WHERE customer_id = p_customer AND field = p_field;
    INSERT INTO enrich.field_changes (workspace_id, customer_id, field, old_value, new_value, source, actor)
    VALUES (p_workspace, p_customer, p_field, old_value, NULL, p_source, p_actor);
    UPDATE enrich.customers SET updated_at = now() WHERE id = p_customer;
    changed := true;
END $$;

-- As in 0002, on the renamed identities table.
CREATE OR REPLACE FUNCTION enrich.customer_for_identity(
    p_workspace text, p_platform text, p_user text, p_at timestamptz, p_visitor jsonb,
    OUT customer_id uuid, OUT created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_new uuid;
BEGIN
    UPDATE enrich.customer_identities
       SET last_seen_at = greatest(last_seen_at, p_at),
           visitor = coalesce(p_visitor, visitor)
     WHERE workspace_id = p_workspace AND platform = p_platform AND platform_user_id = p_user
    RETURNING customer_identities.customer_id INTO customer_id;
    IF FOUND THEN
        created := false;
        RETURN;
    END IF;
    v_new := gen_random_uuid();
    INSERT INTO enrich.customers (id, workspace_id, created_at, first_seen_at, last_seen_at)
    VALUES (v_new, p_workspace, now(), p_at, p_at);
    INSERT INTO enrich.customer_identities (workspace_id, platform, platform_user_id, customer_id, visitor,
                                            first_seen_at, last_seen_at)
    VALUES (p_workspace, p_platform, p_user, v_new, p_visitor, p_at, p_at)
    ON CONFLICT DO NOTHING;
    IF FOUND THEN
        customer_id := v_new;
        created := true;
        RETURN;
    END IF;
    -- Another transaction created this identity first: use its customer.
    DELETE FROM enrich.customers WHERE id = v_new;
    SELECT i.customer_id INTO customer_id FROM enrich.customer_identities i
     WHERE i.workspace_id = p_workspace AND i.platform = p_platform AND i.platform_user_id = p_user;
    created := false;
END $$;

-- The body of 0014 with two changes, each marked "0015:": the identities
-- table's new name, and last_customer_message_at moved by customer messages
-- only. Keeps enable_seqscan = off (see 0013).
CREATE OR REPLACE FUNCTION enrich.record_chat_message(
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
            -- 0015: the identities table is enrich.customer_identities.
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
           -- 0015: moved by the customer's own messages only.
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

-- The body of 0007 on the renamed tables, also moving notes and tag history
-- and keeping the later of the two customers' last customer messages.
CREATE OR REPLACE FUNCTION enrich.merge_customers(p_workspace text, p_into uuid, p_from uuid, p_reason text)
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

    UPDATE enrich.customer_identities SET customer_id = p_into WHERE customer_id = p_from;
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
    UPDATE enrich.escalation_requests SET customer_id = p_into WHERE customer_id = p_from;
    UPDATE enrich.llm_calls SET customer_id = p_into WHERE customer_id = p_from;
    UPDATE enrich.field_changes SET customer_id = p_into WHERE customer_id = p_from;
    UPDATE enrich.tag_changes SET customer_id = p_into WHERE customer_id = p_from;
    UPDATE enrich.customer_notes SET customer_id = p_into WHERE customer_id = p_from;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_moved := v_moved || jsonb_build_object('notes', v_n);

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
    INSERT INTO enrich.tags (customer_id, tag, source, actor, added_at)
    SELECT p_into, tag, source, actor, added_at FROM enrich.tags WHERE customer_id = p_from
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS v_n = ROW_COUNT;
    v_moved := v_moved || jsonb_build_object('tags', v_n);
    INSERT INTO enrich.customer_insights (customer_id, insights, model, prompt_version, updated_at)
    SELECT p_into, insights, model, prompt_version, updated_at FROM enrich.customer_insights WHERE customer_id = p_from
    ON CONFLICT DO NOTHING;

    UPDATE enrich.customers c
       SET first_seen_at = least(c.first_seen_at, v_from.first_seen_at),
           last_seen_at = greatest(c.last_seen_at, v_from.last_seen_at),
           last_customer_message_at = greatest(c.last_customer_message_at, v_from.last_customer_message_at),
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

-- Views (SPEC §3 and §5). Columns only grow: new ones go at the end.

-- The builtin fields come from one index lookup each (customer_fields' key)
-- instead of a per-customer aggregate, so a filter on name, email or phone
-- can start from that field's index instead of reading every customer of
-- the workspace. Browser, os, device and visitor_country are the visitor
-- metadata of the customer's most recently seen identity that has any.
-- Identities keep only their latest session's metadata, so first_visit_at is
-- the earliest session start they show or the first message if that is
-- earlier (the first message falls inside the first session); NULL for a
-- customer without visitor metadata (e.g. WhatsApp only).
CREATE OR REPLACE VIEW enrich.customer_profiles AS
SELECT c.id                                             AS customer_id,
       c.workspace_id,
       coalesce(fn.value, 'Guest User')                 AS display_name,
       fn.value                                         AS name,
       fe.value                                         AS email,
       fp.value                                         AS phone,
       fl.value                                         AS language,
       fc.value                                         AS country,
       fo.value                                         AS location,
       c.profile_picture_url,
       c.platforms,
       c.source,
       c.first_message_tag,
       c.created_at,
       c.first_seen_at,
       c.last_seen_at,
       c.conversation_count,
       c.customer_message_count                         AS message_count,
       c.unresolved_queries,
       c.last_message,
       c.avg_sentiment,
       coalesce(a.attributes, '{}'::jsonb)              AS attributes,
       coalesce(t.tags, '{}'::text[])                   AS tags,
       c.agent_instructions,
       i.insights,
       c.updated_at,
       c.bot_message_count,
       c.agent_message_count,
       (fe.value IS NOT NULL)                           AS identified,
       c.last_customer_message_at,
       v.latest ->> 'browser'                           AS browser,
       v.latest ->> 'os'                                AS os,
       v.latest ->> 'device'                            AS device,
       v.latest ->> 'country'                           AS visitor_country,
       CASE WHEN v.any_visitor THEN least(v.first_session, c.first_seen_at) END AS first_visit_at
  FROM enrich.customers c
  LEFT JOIN enrich.customer_fields fn ON fn.customer_id = c.id AND fn.field = 'name'
  LEFT JOIN enrich.customer_fields fe ON fe.customer_id = c.id AND fe.field = 'email'
  LEFT JOIN enrich.customer_fields fp ON fp.customer_id = c.id AND fp.field = 'phone'
  LEFT JOIN enrich.customer_fields fl ON fl.customer_id = c.id AND fl.field = 'language'
  LEFT JOIN enrich.customer_fields fc ON fc.customer_id = c.id AND fc.field = 'country'
  LEFT JOIN enrich.customer_fields fo ON fo.customer_id = c.id AND fo.field = 'location'
  LEFT JOIN LATERAL (SELECT jsonb_object_agg(cf.field, cf.value) AS attributes
                       FROM enrich.customer_fields cf
                      WHERE cf.customer_id = c.id
                        AND cf.field <> ALL (ARRAY['name','email','phone','language','country','location'])) a ON true
  LEFT JOIN LATERAL (SELECT array_agg(tg.tag ORDER BY tg.tag) AS tags
                       FROM enrich.tags tg WHERE tg.customer_id = c.id) t ON true
  LEFT JOIN enrich.customer_insights i ON i.customer_id = c.id
  LEFT JOIN LATERAL (SELECT (array_agg(ci.visitor ORDER BY ci.last_seen_at DESC)
                                 FILTER (WHERE ci.visitor IS NOT NULL))[1]              AS latest,
                            min((ci.visitor ->> 'session_started_at')::timestamptz)     AS first_session,
                            bool_or(ci.visitor IS NOT NULL)                             AS any_visitor
                       FROM enrich.customer_identities ci WHERE ci.customer_id = c.id) v ON true;

CREATE OR REPLACE VIEW enrich.conversation_overview AS
SELECT cv.external_id                                   AS conversation_id,
       cv.workspace_id,
       cv.customer_id,
       cv.platform,
       cv.status,
       cv.started_at,
       cv.last_message_at,
       cv.ended_at,
       cv.message_count,
       cv.summary,
       cv.sentiment,
       cv.sentiment_score,
       cv.topics,
       cv.resolution,
       (SELECT count(*) FROM enrich.escalation_requests e WHERE e.conversation_id = cv.id)::int AS escalations,
       cv.resolved_by,
       cv.customer_turns,
       cv.resolved_at
  FROM enrich.conversations cv;

CREATE OR REPLACE VIEW enrich.field_history AS
SELECT h.customer_id, h.field, h.old_value, h.new_value, h.source, h.actor, h.message_id,
       h.model, h.prompt_version, h.changed_at, h.workspace_id, h.id AS change_id,
       m.event_id AS message_event_id
  FROM enrich.field_changes h
  LEFT JOIN enrich.messages m ON m.id = h.message_id;

CREATE VIEW enrich.identities AS
SELECT i.customer_id,
       i.workspace_id,
       i.platform,
       i.platform_user_id,
       i.first_seen_at,
       i.last_seen_at,
       i.visitor ->> 'ip'                                    AS ip,
       i.visitor ->> 'user_agent'                            AS user_agent,
       i.visitor ->> 'browser'                               AS browser,
       i.visitor ->> 'os'                                    AS os,
       i.visitor ->> 'device'                                AS device,
       i.visitor ->> 'country'                               AS country,
       i.visitor ->> 'locale'                                AS locale,
       i.visitor ->> 'page_url'                              AS page_url,
       i.visitor ->> 'referrer'                              AS referrer,
       (i.visitor ->> 'session_started_at')::timestamptz     AS session_started_at
  FROM enrich.customer_identities i;

CREATE VIEW enrich.conversation_messages AS
SELECT cv.external_id AS conversation_id,
       m.workspace_id,
       m.customer_id,
       m.event_id,
       m.sender,
       m.agent_id,
       m.text,
       m.occurred_at,
       m.id           AS message_id
  FROM enrich.messages m
  JOIN enrich.conversations cv ON cv.id = m.conversation_id;

CREATE VIEW enrich.escalations AS
SELECT cv.external_id AS conversation_id,
       e.workspace_id,
       e.customer_id,
       cv.platform,
       e.reason,
       e.occurred_at  AS escalated_at,
       e.resolved_at,
       e.handled_by,
       e.id           AS escalation_id
  FROM enrich.escalation_requests e
  JOIN enrich.conversations cv ON cv.id = e.conversation_id;

CREATE VIEW enrich.notes AS
SELECT n.id AS note_id,
       n.customer_id,
       n.workspace_id,
       n.text,
       n.author,
       n.created_at
  FROM enrich.customer_notes n;
