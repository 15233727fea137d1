-- Every chat message updates its conversation's and its customer's row
-- (counters, last message time). Postgres can do such an update in place
-- ("HOT", no new index entries) only when no indexed column changes and the
-- page has room. Two indexes keyed on columns that change with every message
-- defeated that, so each message added an entry to every index of both
-- tables and lookups walked ever longer chains of dead versions.

-- The summary sweeper scans the conversations not yet summarised (the live
-- ones) and orders them itself; it does not need last_message_at indexed.
DROP INDEX enrich.conversations_summary_due;
CREATE INDEX conversations_summary_due ON enrich.conversations (id)
    WHERE summarized_at IS NULL;

-- Incremental export (`customers export --since`) and the retention sweep
-- filter on updated_at within a workspace; they run rarely and can read the
-- workspace's rows and sort them, which the message path cannot afford to
-- pay for in index maintenance.
DROP INDEX enrich.customers_workspace_updated;
CREATE INDEX customers_workspace ON enrich.customers (workspace_id);

-- Leave room in each page for the new versions of hot rows.
ALTER TABLE enrich.conversations SET (fillfactor = 80);
ALTER TABLE enrich.customers SET (fillfactor = 80);
