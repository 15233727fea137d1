-- The customer list and its search (docs/dashboards-search.md), the raw
-- visitor metadata on enrich.identities, and customer_profiles rebuilt so
-- that queries can join it.

-- The identities view ends with the raw metadata (`visitor`, as the table
-- held it before 0015 renamed it), so callers that read other keys of it,
-- or the whole object, keep working.
CREATE OR REPLACE VIEW enrich.identities AS
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
       (i.visitor ->> 'session_started_at')::timestamptz     AS session_started_at,
       i.visitor
  FROM enrich.customer_identities i;

-- The columns a customer list shows, from the customer's row and three key
-- lookups. A query that joins this view to identities or tags, or filters
-- it by name, email or phone, is planned as one join problem and starts
-- from the selective index; it reads less per row than customer_profiles.
-- last_active_at is the list's order: the last message, or the creation of
-- a customer that has none yet (created by profile.update or an import).
CREATE VIEW enrich.customer_search AS
SELECT c.id                                             AS customer_id,
       c.workspace_id,
       coalesce(fn.value, 'Guest User')                 AS display_name,
       fn.value                                         AS name,
       fe.value                                         AS email,
       fp.value                                         AS phone,
       c.platforms,
       c.source,
       c.created_at,
       c.first_seen_at,
       c.last_seen_at,
       c.last_customer_message_at,
       coalesce(c.last_seen_at, c.created_at)           AS last_active_at,
       c.conversation_count,
       c.customer_message_count                         AS message_count,
       c.unresolved_queries,
       c.last_message,
       c.updated_at,
       (fe.value IS NOT NULL)                           AS identified
  FROM enrich.customers c
  LEFT JOIN enrich.customer_fields fn ON fn.customer_id = c.id AND fn.field = 'name'
  LEFT JOIN enrich.customer_fields fe ON fe.customer_id = c.id AND fe.field = 'email'
  LEFT JOIN enrich.customer_fields fp ON fp.customer_id = c.id AND fp.field = 'phone';

-- customer_profiles as 0015 left it has eleven FROM items, more than the
-- planner merges with a caller's query (from_collapse_limit, 8): a query
-- that joined it, e.g. `WHERE customer_id IN (SELECT …)`, computed the
-- view for every customer first. Here it has five (the customer, the
-- name, email and phone lookups that searches start from, and the other
-- fields' aggregate) and the visitor lateral; tags and insights are
-- subqueries of the row. Columns and their meaning are unchanged.
CREATE OR REPLACE VIEW enrich.customer_profiles AS
SELECT c.id                                             AS customer_id,
       c.workspace_id,
       coalesce(fn.value, 'Guest User')                 AS display_name,
       fn.value                                         AS name,
       fe.value                                         AS email,
       fp.value                                         AS phone,
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
       coalesce(f.values - ARRAY['language','country','location'], '{}'::jsonb) AS attributes,
       coalesce((SELECT array_agg(tg.tag ORDER BY tg.tag) FROM enrich.tags tg
                  WHERE tg.customer_id = c.id), '{}'::text[]) AS tags,
       c.agent_instructions,
       (SELECT ci.insights FROM enrich.customer_insights ci WHERE ci.customer_id = c.id) AS insights,
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
  LEFT JOIN LATERAL (SELECT jsonb_object_agg(cf.field, cf.value) AS values
                       FROM enrich.customer_fields cf
                      WHERE cf.customer_id = c.id
                        AND cf.field <> ALL (ARRAY['name','email','phone'])) f ON true
  LEFT JOIN LATERAL (SELECT (array_agg(ci.visitor ORDER BY ci.last_seen_at DESC)
                                 FILTER (WHERE ci.visitor IS NOT NULL))[1]              AS latest,
                            min((ci.visitor ->> 'session_started_at')::timestamptz)     AS first_session,
                            bool_or(ci.visitor IS NOT NULL)                             AS any_visitor
                       FROM enrich.customer_identities ci WHERE ci.customer_id = c.id) v ON true;

-- Escalations recorded before 0015 were never resolved. Each is resolved
-- now as 0015 resolves new ones: at the conversation's first later status
-- other than `requesting` (handled by the agent of an `intervened` one), or
-- else at the end of a closed conversation; and unresolved_queries counts
-- the customer's escalations still open.
WITH first_exit AS (
    SELECT DISTINCT ON (e.id) e.id, s.occurred_at,
           CASE WHEN s.status = 'intervened' THEN s.agent_id END AS agent_id
      FROM enrich.escalation_requests e
      JOIN enrich.conversation_statuses s
        ON s.conversation_id = e.conversation_id AND s.occurred_at >= e.occurred_at
       AND s.status <> 'requesting'
     WHERE e.resolved_at IS NULL
     ORDER BY e.id, s.occurred_at, s.id)
UPDATE enrich.escalation_requests e
   SET resolved = true, resolved_at = f.occurred_at, handled_by = f.agent_id
  FROM first_exit f
 WHERE f.id = e.id;
UPDATE enrich.escalation_requests e
   SET resolved = true, resolved_at = greatest(e.occurred_at, cv.ended_at)
  FROM enrich.conversations cv
 WHERE cv.id = e.conversation_id AND e.resolved_at IS NULL
   AND cv.status = 'closed' AND cv.ended_at IS NOT NULL;
UPDATE enrich.customers c
   SET unresolved_queries = coalesce(o.open, 0)
  FROM (SELECT c2.id, (SELECT count(*) FROM enrich.escalation_requests e
                        WHERE e.customer_id = c2.id AND e.resolved_at IS NULL)::int AS open
          FROM enrich.customers c2
         WHERE c2.unresolved_queries <> 0
            OR EXISTS (SELECT 1 FROM enrich.escalation_requests e
                        WHERE e.customer_id = c2.id AND e.resolved_at IS NULL)) o
 WHERE o.id = c.id AND c.unresolved_queries IS DISTINCT FROM o.open;
