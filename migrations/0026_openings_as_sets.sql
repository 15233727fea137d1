-- record_chat_messages (0024) opened a run's new conversations one after
-- another: for each, a claim of its event id, the workspace row, the
-- customer through enrich.customer_for_identity and the conversation, about
-- seven statements per message. Openings come in bursts (every new visitor's
-- first message), and their statements were most of what such a burst cost
-- Postgres. The body of 0024 with the loop replaced, marked "0026:": the
-- openings are written as sets, one statement per table for the whole run;
-- what each returns is unchanged.
CREATE OR REPLACE FUNCTION enrich.record_chat_messages(
    p_workspace text[], p_event_id text[], p_conversation text[], p_platform text[], p_user text[],
    p_sender text[], p_text text[], p_agent_id text[], p_occurred_at timestamptz[], p_visitor jsonb[],
    p_source text[], p_first_message_tag text[], p_default_region text[], p_enrichment boolean[],
    p_await_model boolean)
RETURNS TABLE (ord integer, duplicate boolean, customer_id uuid, conversation_id bigint, message_id bigint,
               new_customer boolean, new_conversation boolean, enrichment_enabled boolean,
               default_region text, customer_turn integer, message_count integer,
               state_version bigint, spent_tokens bigint)
LANGUAGE plpgsql
SET enable_seqscan = off
-- Planned once per session, not per call: with a custom plan every call
-- planned the set statement again, which cost about 1.2 ms, more than
-- recording a run of two messages one by one (measured in a loop of calls
-- in psql: 1.49 against 0.44 ms per message for a run of one, 0.78 against
-- 0.31 for a run of two, 0.13 against 0.10 for a run of 32). The arrays'
-- sizes do not change which plan is right: every row is found by its key.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    v_count int := coalesce(cardinality(p_event_id), 0);
    -- The first message after the openings.
    v_start int := 1;
    -- The openings whose event ids were new, and what opening them found.
    v_ords int[] := '{}';
    v_new_customers boolean[] := '{}';
    v_new_conversations boolean[] := '{}';
    -- Conversations of the openings, as length-prefixed keys.
    v_opened text[] := '{}';
    -- 0026: the openings' customers, found through their identities or made.
    v_found_ords int[];
    v_found_customers uuid[];
    v_made_ords int[];
    v_made_customers uuid[];
    v_kept uuid[];
    v_customers uuid[];
    v_opened_ords int[];
    v_customer uuid;
    v_ord int;
BEGIN
    IF v_count = 0 THEN
        RETURN;
    END IF;

    -- 0026: the openings are written as sets, one statement per table,
    -- instead of one after another. They are the leading messages whose
    -- conversation does not exist, up to the first conversation or identity
    -- seen twice (each customer this call creates has one message here).
    -- Most runs open nothing: one lookup tells.
    IF EXISTS (SELECT 1 FROM enrich.conversations c
                WHERE c.workspace_id = p_workspace[1] AND c.external_id = p_conversation[1]) THEN
        v_start := 1;
    ELSE
        SELECT coalesce(min(x.ord)::int, v_count + 1) INTO v_start
          FROM (SELECT i.ord,
                       EXISTS (SELECT 1 FROM enrich.conversations c
                                WHERE c.workspace_id = i.workspace_id AND c.external_id = i.conversation) AS existing,
                       row_number() OVER (PARTITION BY i.workspace_id, i.platform, i.platform_user_id ORDER BY i.ord)
                           AS nth_of_identity,
                       row_number() OVER (PARTITION BY i.workspace_id, i.conversation ORDER BY i.ord)
                           AS nth_of_conversation
                  FROM unnest(p_workspace, p_conversation, p_platform, p_user) WITH ORDINALITY
                       AS i(workspace_id, conversation, platform, platform_user_id, ord)) x
         WHERE x.existing OR x.nth_of_identity > 1 OR x.nth_of_conversation > 1;
    END IF;
    IF v_start > 1 THEN
        v_opened := ARRAY(SELECT format('%s:%s%s', length(p_workspace[o]), p_workspace[o], p_conversation[o])
                            FROM generate_series(1, v_start - 1) o);
        -- The openings not seen before (an id given twice counts once, first).
        WITH claimed AS (
            INSERT INTO enrich.processed_events (workspace_id, event_id, event_type)
            SELECT p_workspace[o], p_event_id[o], 'chat.message' FROM generate_series(1, v_start - 1) o ORDER BY o
            ON CONFLICT DO NOTHING
            RETURNING workspace_id, event_id
        )
        SELECT coalesce(array_agg(f.o ORDER BY f.o), '{}') INTO v_ords
          FROM (SELECT DISTINCT ON (k.workspace_id, k.event_id) o
                  FROM claimed k
                  JOIN generate_series(1, v_start - 1) o
                    ON p_workspace[o] = k.workspace_id AND p_event_id[o] = k.event_id
                 ORDER BY k.workspace_id, k.event_id, o) f;
    END IF;
    IF cardinality(v_ords) > 0 THEN
        INSERT INTO enrich.workspaces (id, enrichment_enabled, default_region)
        SELECT DISTINCT ON (p_workspace[o]) p_workspace[o], p_enrichment[o], p_default_region[o]
          FROM unnest(v_ords) o ORDER BY p_workspace[o], o
        ON CONFLICT DO NOTHING;
        -- Identities seen before: their customer, and this visit on them
        -- (as enrich.customer_for_identity does).
        WITH found AS (
            UPDATE enrich.customer_identities i
               SET last_seen_at = greatest(i.last_seen_at, p_occurred_at[o]),
                   visitor = coalesce(p_visitor[o], i.visitor)
              FROM unnest(v_ords) o
             WHERE i.workspace_id = p_workspace[o] AND i.platform = p_platform[o]
               AND i.platform_user_id = p_user[o]
            RETURNING o, i.customer_id
        )
        SELECT coalesce(array_agg(o), '{}'), coalesce(array_agg(customer_id), '{}')
          INTO v_found_ords, v_found_customers FROM found;
        -- New identities: a new customer each, in the identities' order so
        -- that lanes creating the same ones wait for each other, not in a cycle.
        SELECT coalesce(array_agg(o ORDER BY p_workspace[o], p_platform[o], p_user[o]), '{}')
          INTO v_made_ords FROM unnest(v_ords) o WHERE o <> ALL (v_found_ords);
        v_made_customers := ARRAY(SELECT gen_random_uuid() FROM unnest(v_made_ords));
        INSERT INTO enrich.customers (id, workspace_id, created_at, first_seen_at, last_seen_at)
        SELECT n.id, p_workspace[n.o], now(), p_occurred_at[n.o], p_occurred_at[n.o]
          FROM unnest(v_made_ords, v_made_customers) AS n(o, id);
        WITH made AS (
            INSERT INTO enrich.customer_identities (workspace_id, platform, platform_user_id, customer_id, visitor,
                                                    first_seen_at, last_seen_at)
            SELECT p_workspace[n.o], p_platform[n.o], p_user[n.o], n.id, p_visitor[n.o], p_occurred_at[n.o],
                   p_occurred_at[n.o]
              FROM unnest(v_made_ords, v_made_customers) WITH ORDINALITY AS n(o, id, nth)
             ORDER BY n.nth
            ON CONFLICT DO NOTHING
            RETURNING customer_id
        )
        SELECT coalesce(array_agg(customer_id), '{}') INTO v_kept FROM made;
        -- Another transaction created some of these identities first: their
        -- customers are the ones to use (enrich.customer_for_identity keeps
        -- this visit on the identity and returns the customer).
        FOR v_ord, v_customer IN
            SELECT n.o, n.id FROM unnest(v_made_ords, v_made_customers) AS n(o, id) WHERE n.id <> ALL (v_kept)
        LOOP
            DELETE FROM enrich.customers WHERE id = v_customer;
            v_found_ords := v_found_ords || v_ord;
            v_found_customers := v_found_customers
                || (SELECT r.customer_id FROM enrich.customer_for_identity(p_workspace[v_ord], p_platform[v_ord],
                        p_user[v_ord], p_occurred_at[v_ord], p_visitor[v_ord]) r);
        END LOOP;
        -- Each opening's customer and whether it was created, in order.
        SELECT array_agg(coalesce(f.customer_id, m.id) ORDER BY x.o), array_agg(m.id IS NOT NULL ORDER BY x.o)
          INTO v_customers, v_new_customers
          FROM unnest(v_ords) AS x(o)
          LEFT JOIN unnest(v_found_ords, v_found_customers) AS f(o, customer_id) ON f.o = x.o
          LEFT JOIN unnest(v_made_ords, v_made_customers) AS m(o, id) ON m.o = x.o AND m.id = ANY (v_kept);
        -- The conversations; one a concurrent transaction opened first is
        -- joined instead.
        WITH opened AS (
            INSERT INTO enrich.conversations (workspace_id, external_id, customer_id, platform, started_at,
                                              last_message_at, source, first_message_tag)
            SELECT p_workspace[x.o], p_conversation[x.o], x.customer_id, p_platform[x.o], p_occurred_at[x.o],
                   p_occurred_at[x.o], p_source[x.o], p_first_message_tag[x.o]
              FROM unnest(v_ords, v_customers) AS x(o, customer_id)
             ORDER BY p_workspace[x.o], p_conversation[x.o]
            ON CONFLICT (workspace_id, external_id) DO NOTHING
            RETURNING workspace_id, external_id
        )
        SELECT coalesce(array_agg(o), '{}') INTO v_opened_ords
          FROM opened k JOIN unnest(v_ords) o
            ON p_workspace[o] = k.workspace_id AND p_conversation[o] = k.external_id;
        v_new_conversations := ARRAY(SELECT o = ANY (v_opened_ords) FROM unnest(v_ords) o ORDER BY o);
    END IF;

    RETURN QUERY
    WITH input AS (
        SELECT i.*, c.id AS conv_id
          FROM unnest(p_workspace, p_event_id, p_conversation, p_platform, p_user, p_sender, p_text,
                      p_agent_id, p_occurred_at, p_visitor, p_source, p_first_message_tag) WITH ORDINALITY
               AS i(workspace_id, event_id, conversation, platform, platform_user_id, sender, body,
                    agent_id, occurred_at, visitor, source, first_message_tag, ord)
          LEFT JOIN enrich.conversations c
            ON c.workspace_id = i.workspace_id AND c.external_id = i.conversation
    ),
    openings AS (
        SELECT o.* FROM unnest(v_ords, v_new_customers, v_new_conversations)
                        AS o(ord, new_customer, new_conversation)
    ),
    -- After the openings, the run ends at the first message of a
    -- conversation that does not exist or that this call has just opened.
    run AS (
        SELECT * FROM input
         WHERE input.ord < coalesce((SELECT min(x.ord) FROM input x
                                      WHERE x.ord >= v_start
                                        AND (x.conv_id IS NULL
                                             OR format('%s:%s%s', length(x.workspace_id), x.workspace_id,
                                                       x.conversation) = ANY (v_opened))),
                                    v_count + 1)
    ),
    claimed AS (
        INSERT INTO enrich.processed_events (workspace_id, event_id, event_type)
        SELECT r.workspace_id, r.event_id, 'chat.message' FROM run r WHERE r.ord >= v_start ORDER BY r.ord
        ON CONFLICT DO NOTHING
        RETURNING workspace_id, event_id
    ),
    -- The messages not seen before (an id given twice counts once, first).
    fresh AS (
        SELECT r.*, o.new_customer, o.new_conversation
          FROM run r JOIN openings o ON o.ord = r.ord
        UNION ALL
        (SELECT DISTINCT ON (r.workspace_id, r.event_id) r.*, false, false
           FROM run r
           JOIN claimed k ON k.workspace_id = r.workspace_id AND k.event_id = r.event_id
          ORDER BY r.workspace_id, r.event_id, r.ord)
    ),
    counted AS (
        SELECT f.*,
               row_number() OVER w AS nth,
               count(*) FILTER (WHERE f.sender = 'customer') OVER w AS customer_nth
          FROM fresh f
        WINDOW w AS (PARTITION BY f.conv_id ORDER BY f.ord)
    ),
    conversation_totals AS (
        SELECT f.conv_id, count(*) AS messages, count(*) FILTER (WHERE f.sender = 'customer') AS turns,
               max(f.occurred_at) AS last_at
          FROM fresh f
         GROUP BY f.conv_id
    ),
    conversations_after AS (
        UPDATE enrich.conversations c
           SET message_count = c.message_count + t.messages,
               customer_turns = c.customer_turns + t.turns,
               last_message_at = greatest(c.last_message_at, t.last_at),
               status = CASE WHEN c.status = 'closed' THEN 'active' ELSE c.status END,
               ended_at = CASE WHEN c.status = 'closed' THEN NULL ELSE c.ended_at END
          FROM conversation_totals t
         WHERE c.id = t.conv_id
        RETURNING c.id, c.customer_id, c.message_count - t.messages AS count_before,
                  c.customer_turns - t.turns AS turns_before
    ),
    stored AS (
        INSERT INTO enrich.messages (workspace_id, conversation_id, customer_id, event_id, sender, agent_id,
                                     text, occurred_at, ai_status, customer_turn)
        SELECT k.workspace_id, a.id, a.customer_id, k.event_id, k.sender, k.agent_id, k.body, k.occurred_at,
               CASE WHEN p_await_model AND k.sender = 'customer' AND w.enrichment_enabled THEN 'pending' END,
               CASE WHEN k.sender = 'customer' THEN (a.turns_before + k.customer_nth)::int END
          FROM counted k
          JOIN conversations_after a ON a.id = k.conv_id
          JOIN enrich.workspaces w ON w.id = k.workspace_id
         ORDER BY k.ord
        RETURNING id, workspace_id, event_id
    ),
    customer_totals AS (
        SELECT a.customer_id,
               min(k.occurred_at) AS first_at,
               max(k.occurred_at) AS last_at,
               max(k.occurred_at) FILTER (WHERE k.sender = 'customer') AS last_customer_at,
               count(*) FILTER (WHERE k.sender = 'customer') AS customer_messages,
               count(*) FILTER (WHERE k.sender = 'bot') AS bot_messages,
               count(*) FILTER (WHERE k.sender = 'agent') AS agent_messages,
               count(*) FILTER (WHERE k.new_conversation) AS opened,
               (array_agg(left(k.body, 1000) ORDER BY k.ord DESC) FILTER (WHERE k.sender = 'customer'))[1]
                   AS last_message,
               array_agg(k.platform ORDER BY k.ord) AS platforms,
               (array_agg(k.source ORDER BY k.ord) FILTER (WHERE k.source IS NOT NULL))[1] AS source,
               -- The first conversation's source and tag become the customer's.
               (array_agg(k.source ORDER BY k.ord) FILTER (WHERE k.new_conversation))[1] AS opening_source,
               (array_agg(k.first_message_tag ORDER BY k.ord) FILTER (WHERE k.new_conversation))[1]
                   AS opening_tag
          FROM counted k
          JOIN conversations_after a ON a.id = k.conv_id
         GROUP BY a.customer_id
    ),
    customers_after AS (
        UPDATE enrich.customers u
           SET first_seen_at = least(coalesce(u.first_seen_at, t.first_at), t.first_at),
               last_seen_at = greatest(coalesce(u.last_seen_at, t.last_at), t.last_at),
               last_customer_message_at = CASE WHEN t.last_customer_at IS NULL THEN u.last_customer_message_at
                                               ELSE greatest(coalesce(u.last_customer_message_at, t.last_customer_at),
                                                             t.last_customer_at) END,
               conversation_count = u.conversation_count + t.opened,
               customer_message_count = u.customer_message_count + t.customer_messages,
               bot_message_count = u.bot_message_count + t.bot_messages,
               agent_message_count = u.agent_message_count + t.agent_messages,
               last_message = coalesce(t.last_message, u.last_message),
               platforms = u.platforms || ARRAY(SELECT p FROM unnest(t.platforms) WITH ORDINALITY AS x(p, o)
                                                 WHERE p <> ALL (u.platforms) GROUP BY p ORDER BY min(o)),
               source = CASE WHEN u.conversation_count = 0 AND t.opened > 0
                             THEN coalesce(t.opening_source, u.source, 'organic')
                             ELSE coalesce(u.source, t.source) END,
               first_message_tag = CASE WHEN u.conversation_count = 0 AND t.opened > 0
                                        THEN coalesce(t.opening_tag, u.first_message_tag)
                                        ELSE u.first_message_tag END,
               updated_at = now()
          FROM customer_totals t
         WHERE u.id = t.customer_id
        -- The version of the customer's decision state, which tells the
        -- worker whether its Redis copy is current.
        RETURNING u.id, u.state_version
    ),
    -- A message in a conversation that exists keeps its visitor on its
    -- identity (an opening did, finding or creating the identity).
    visitors AS (
        UPDATE enrich.customer_identities i
           SET visitor = v.visitor, last_seen_at = greatest(i.last_seen_at, v.last_at)
          FROM (SELECT f.workspace_id, f.platform, f.platform_user_id,
                       (array_agg(f.visitor ORDER BY f.ord DESC))[1] AS visitor, max(f.occurred_at) AS last_at
                  FROM fresh f
                 WHERE f.visitor IS NOT NULL AND f.ord >= v_start
                 GROUP BY f.workspace_id, f.platform, f.platform_user_id) v
         WHERE i.workspace_id = v.workspace_id AND i.platform = v.platform
           AND i.platform_user_id = v.platform_user_id
        RETURNING i.customer_id
    )
    SELECT r.ord::int,
           k.event_id IS NULL,
           a.customer_id,
           a.id,
           s.id,
           k.new_customer,
           k.new_conversation,
           w.enrichment_enabled,
           w.default_region,
           (a.turns_before + k.customer_nth)::int,
           (a.count_before + k.nth)::int,
           cu.state_version,
           -- The conversation's spend, for a message left to the model stage's budget check.
           CASE WHEN p_await_model AND k.sender = 'customer' AND w.enrichment_enabled THEN
               (SELECT coalesce(sum(l.prompt_tokens + l.completion_tokens), 0)::bigint
                  FROM enrich.llm_calls l WHERE l.conversation_id = a.id)
           END
      FROM run r
      LEFT JOIN counted k ON k.ord = r.ord
      LEFT JOIN conversations_after a ON a.id = k.conv_id
      LEFT JOIN stored s ON s.workspace_id = k.workspace_id AND s.event_id = k.event_id
      LEFT JOIN customers_after cu ON cu.id = a.customer_id
      LEFT JOIN enrich.workspaces w ON w.id = k.workspace_id
     ORDER BY r.ord;
END $$;
