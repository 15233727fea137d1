-- customer_for_identity creates the customer of an identity it has not seen.
-- When another transaction creates that identity at the same moment (a
-- chat message and a profile.update of one visitor reach two lanes, which
-- route by conversation and by customer), the insert yields to that
-- transaction's row and the function uses its customer. Until now it then
-- returned without the identity's update the found-path makes: the
-- message's visitor metadata and last-seen time were lost. The body of
-- 0015, marked "0025:", now starts over once the insert has yielded, so the
-- identity it waited for is found, and updated, like any other.
CREATE OR REPLACE FUNCTION enrich.customer_for_identity(
    p_workspace text, p_platform text, p_user text, p_at timestamptz, p_visitor jsonb,
    OUT customer_id uuid, OUT created boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_new uuid;
BEGIN
    -- 0025: a loop; a second pass finds what the first one yielded to.
    LOOP
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
    END LOOP;
END $$;
