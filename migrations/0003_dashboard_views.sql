-- The views dashboards read (SPEC §3). Their columns only ever grow.

CREATE VIEW enrich.customer_profiles AS
SELECT c.id                                             AS customer_id,
       c.workspace_id,
       coalesce(f.values ->> 'name', 'Guest User')      AS display_name,
       f.values ->> 'name'                              AS name,
       f.values ->> 'email'                             AS email,
       f.values ->> 'phone'                             AS phone,
       f.values ->> 'language'                          AS language,
       f.values ->> 'country'                           AS country,
       f.values ->> 'location'                          AS location,
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
       coalesce(f.values - ARRAY['name','email','phone','language','country','location'], '{}'::jsonb) AS attributes,
       coalesce(t.tags, '{}'::text[])                   AS tags,
       c.agent_instructions,
       i.insights,
       c.updated_at,
       c.bot_message_count,
       c.agent_message_count,
       (f.values ? 'email')                             AS identified
  FROM enrich.customers c
  LEFT JOIN LATERAL (SELECT jsonb_object_agg(cf.field, cf.value) AS values
                       FROM enrich.customer_fields cf WHERE cf.customer_id = c.id) f ON true
  LEFT JOIN LATERAL (SELECT array_agg(tg.tag ORDER BY tg.tag) AS tags
                       FROM enrich.tags tg WHERE tg.customer_id = c.id) t ON true
  LEFT JOIN enrich.customer_insights i ON i.customer_id = c.id;

CREATE VIEW enrich.conversation_overview AS
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
       (SELECT count(*) FROM enrich.escalations e WHERE e.conversation_id = cv.id)::int AS escalations,
       cv.resolved_by,
       cv.customer_turns
  FROM enrich.conversations cv;

CREATE VIEW enrich.field_history AS
SELECT h.customer_id, h.field, h.old_value, h.new_value, h.source, h.actor, h.message_id,
       h.model, h.prompt_version, h.changed_at, h.workspace_id, h.id AS change_id
  FROM enrich.field_changes h;

CREATE VIEW enrich.ask_log AS
SELECT cv.external_id AS conversation_id, a.customer_id, a.field, a.question, a.reason,
       a.asked_at, a.outcome, a.workspace_id, a.language, a.in_reply_to, a.outcome_at
  FROM enrich.asks a
  JOIN enrich.conversations cv ON cv.id = a.conversation_id;

CREATE VIEW enrich.llm_usage AS
SELECT date_trunc('day', l.created_at)::date                              AS day,
       l.workspace_id,
       l.purpose,
       l.model,
       count(*)::int                                                      AS calls,
       sum(l.prompt_tokens)::bigint                                       AS prompt_tokens,
       sum(l.completion_tokens)::bigint                                   AS completion_tokens,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY l.latency_ms)          AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY l.latency_ms)         AS p95_ms,
       (count(*) FILTER (WHERE l.outcome <> 'ok'))::int                   AS failures
  FROM enrich.llm_calls l
 GROUP BY 1, 2, 3, 4;
