-- The customer list and its search (docs/dashboards-search.md), and the raw
-- visitor metadata on enrich.identities.

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
-- from the selective index; customer_profiles has more joins than the
-- planner reorders together with the caller's (from_collapse_limit), so a
-- join to it reads every customer of the workspace. last_active_at is the
-- list's order: the last message, or the creation of a customer that has
-- none yet (created by profile.update or an import).
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
