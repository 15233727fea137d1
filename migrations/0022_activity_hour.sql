-- Dashboards list customers newest activity first. The index 0016 made for
-- that was keyed on coalesce(last_seen_at, created_at), a value every chat
-- message moves, so no message could update its customer's row in place
-- (HOT): each one added an entry to every index of enrich.customers.
--
-- The list is now found through the hour of the last activity, a stored
-- column that changes at most once an hour per customer; within an hour the
-- rows are sorted by the exact time (an incremental sort over few rows).
-- The value is the UTC hour, as a timestamp without time zone, so the
-- expression is immutable.
ALTER TABLE enrich.customers
    ADD COLUMN activity_hour timestamp
    GENERATED ALWAYS AS (date_trunc('hour', coalesce(last_seen_at, created_at) AT TIME ZONE 'UTC')) STORED;

DROP INDEX enrich.customers_workspace_activity;
CREATE INDEX customers_workspace_activity_hour
    ON enrich.customers (workspace_id, activity_hour DESC);
