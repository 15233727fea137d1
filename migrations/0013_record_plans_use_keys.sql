-- Every statement of record_chat_message (and of customer_for_identity, which
-- it calls) reads or updates rows by a key that has an index: the event id,
-- the conversation's external id, the conversation's and the customer's id,
-- the customer's fields, declines and asks. plpgsql caches a statement's plan
-- for the life of the connection, and the planner costs it from the table's
-- size when it is first planned. A worker that starts on a new or emptied
-- database therefore planned sequential scans of conversations, customers and
-- asks (tiny then) and kept them while the tables grew: a 20,000-event run
-- read about 22 million rows through 64,000 sequential scans, and Postgres
-- spent a fifth more CPU per event than with index lookups.
--
-- With sequential scans priced out inside the function, every one of its
-- lookups uses its index from the first call, whatever the table's size or
-- statistics. A later migration that recreates the function must keep this
-- setting (CREATE OR REPLACE resets it).
ALTER FUNCTION enrich.record_chat_message(text, text, text, text, text, text, text, text, timestamptz, jsonb,
                                          text, text, text, boolean, boolean)
    SET enable_seqscan = off;
