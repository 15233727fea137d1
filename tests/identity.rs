//! Email is the identifier across platforms (docs/contract.md §1.3): profiles that share an
//! email become one, the older surviving; different emails never merge.

mod common;

use std::time::Duration;

use common::{TestApp, chat, next_outbound, unique};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

fn on(platform: &str, mut event: serde_json::Value) -> serde_json::Value {
    event["platform"] = json!(platform);
    event
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn web_line_and_whatsapp_with_one_email_become_one_profile() {
    let app = TestApp::new().await;
    let (_connection, mut merged_events) = app.outbound_listener("customer.merged").await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[
        on(
            "web",
            chat(
                &ws,
                "w1",
                "web-c",
                "web-u",
                "customer",
                "Hi, I'm Lena. Where is my parcel?",
            ),
        ),
        on(
            "web",
            chat(
                &ws,
                "w2",
                "web-c",
                "web-u",
                "bot",
                "Let me check. What's your email?",
            ),
        ),
        on(
            "web",
            chat(
                &ws,
                "w3",
                "web-c",
                "web-u",
                "customer",
                "lena.k@example.org",
            ),
        ),
    ])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.customer_fields WHERE field = 'email'",
        1,
        WAIT,
    )
    .await;
    app.publish(&[
        on(
            "line",
            chat(
                &ws,
                "l1",
                "line-c",
                "line-u",
                "customer",
                "hello from LINE, my email is Lena.K@example.org",
            ),
        ),
        on(
            "whatsapp",
            chat(&ws, "a1", "wa-c", "wa-u", "customer", "hola"),
        ),
        on(
            "whatsapp",
            chat(
                &ws,
                "a2",
                "wa-c",
                "wa-u",
                "customer",
                "my email's lena.k@example.org btw",
            ),
        ),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.merges", 2, WAIT)
        .await;
    let (customers, conversations, messages, platforms, name): (i64, i32, i32, Vec<String>, Option<String>) =
        sqlx::query_as(
            "SELECT (SELECT count(*) FROM enrich.customers), conversation_count, message_count, platforms, name
               FROM enrich.customer_profiles",
        )
        .fetch_one(&app.pool)
        .await
        .expect("one profile");
    assert_eq!(customers, 1);
    assert_eq!((conversations, messages), (3, 5));
    assert_eq!(platforms, vec!["line", "web", "whatsapp"]);
    assert_eq!(name.as_deref(), Some("Lena"));
    assert_eq!(
        app.count("SELECT count(DISTINCT customer_id) FROM enrich.conversations")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(DISTINCT customer_id) FROM enrich.identities")
            .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM enrich.identities").await, 3);
    let survivor: uuid::Uuid = sqlx::query_scalar("SELECT id FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("survivor");
    let first_identity: uuid::Uuid =
        sqlx::query_scalar("SELECT into_customer FROM enrich.merges ORDER BY id LIMIT 1")
            .fetch_one(&app.pool)
            .await
            .expect("merge");
    assert_eq!(survivor, first_identity, "the older profile survives");
    let body = next_outbound(&mut merged_events, WAIT).await;
    assert_eq!(body["into"], json!(survivor));
    assert_eq!(body["workspace_id"], json!(ws));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_emails_never_merge_whatever_else_matches() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[
        chat(
            &ws,
            "a",
            "c1",
            "u1",
            "customer",
            "My name is Sam Lee, phone +1 415 555 0142, email sam@one.example",
        ),
        chat(
            &ws,
            "b",
            "c2",
            "u2",
            "customer",
            "My name is Sam Lee, phone +1 415 555 0142, email sam@two.example",
        ),
    ])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.customer_fields WHERE field = 'email'",
        2,
        WAIT,
    )
    .await;
    assert_eq!(app.count("SELECT count(*) FROM enrich.customers").await, 2);
    assert_eq!(app.count("SELECT count(*) FROM enrich.merges").await, 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identification_of_one_email_yields_one_customer() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let emails = 25;
    let mut events = Vec::new();
    for i in 0..emails {
        for side in ["web", "whatsapp"] {
            events.push(on(
                side,
                chat(
                    &ws,
                    &format!("{side}-{i}"),
                    &format!("{side}-c{i}"),
                    &format!("{side}-u{i}"),
                    "customer",
                    &format!("my email is person{i}@example.com"),
                ),
            ));
        }
    }
    app.publish(&events).await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.processed_events",
        2 * emails,
        WAIT,
    )
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.customers", emails, WAIT)
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.merges").await,
        emails
    );
    let duplicated = app
        .count("SELECT count(*) FROM (SELECT value FROM enrich.customer_fields WHERE field = 'email' GROUP BY value HAVING count(*) > 1) d")
        .await;
    assert_eq!(duplicated, 0);
    assert_eq!(
        app.count("SELECT sum(conversation_count)::bigint FROM enrich.customers")
            .await,
        2 * emails
    );
    worker.stop().await;
}

/// A fresh workspace and a transaction, left open, that has just created
/// the identity `web`/`u-race` there (at 10:00): its customer.
async fn identity_being_created(
    app: &TestApp,
) -> (
    String,
    sqlx::Transaction<'static, sqlx::Postgres>,
    uuid::Uuid,
) {
    let ws = unique("ws");
    sqlx::query("INSERT INTO enrich.workspaces (id) VALUES ($1)")
        .bind(&ws)
        .execute(&app.pool)
        .await
        .expect("workspace");
    let mut creating = app.pool.begin().await.expect("begin");
    let (customer, created): (uuid::Uuid, bool) = sqlx::query_as(
        "SELECT customer_id, created
           FROM enrich.customer_for_identity($1, 'web', 'u-race', '2026-03-01T10:00:00Z', NULL)",
    )
    .bind(&ws)
    .fetch_one(&mut *creating)
    .await
    .expect("first resolve");
    assert!(created);
    (ws, creating, customer)
}

/// Waits until a session of the test's database waits for a lock: the
/// other side of the race, on the identity not committed yet.
async fn wait_for_a_lock_wait(app: &TestApp) {
    app.wait_for_count(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND wait_event_type = 'Lock'",
        1,
        WAIT,
    )
    .await;
}

/// A chat message and a profile.update of one new visitor reach two lanes (they route by
/// conversation and by customer) and create its identity at the same moment: the one that
/// yields uses the other's customer and still keeps its visitor metadata and time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_identity_created_twice_at_once_keeps_the_yielding_events_visitor() {
    let app = TestApp::new().await;
    let (ws, first, first_customer) = identity_being_created(&app).await;
    let resolve = "SELECT customer_id, created FROM enrich.customer_for_identity($1, 'web', 'u-race', $2, $3)";

    let pool = app.pool.clone();
    let ws_second = ws.clone();
    let second = tokio::spawn(async move {
        sqlx::query_as::<_, (uuid::Uuid, bool)>(resolve)
            .bind(&ws_second)
            .bind(chrono::DateTime::parse_from_rfc3339("2026-03-01T10:05:00Z").expect("time"))
            .bind(Some(json!({"country": "GB", "device": "mobile"})))
            .fetch_one(&pool)
            .await
            .expect("second resolve")
    });
    // The second call waits on the first's uncommitted identity before the first commits.
    wait_for_a_lock_wait(&app).await;
    first.commit().await.expect("commit");
    let (second_customer, second_created) = second.await.expect("second task");

    assert_eq!(second_customer, first_customer);
    assert!(!second_created);
    assert_eq!(app.count("SELECT count(*) FROM enrich.customers").await, 1);
    let (country, last_seen): (Option<String>, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT visitor ->> 'country', last_seen_at FROM enrich.customer_identities
          WHERE workspace_id = $1 AND platform_user_id = 'u-race'",
    )
    .bind(&ws)
    .fetch_one(&app.pool)
    .await
    .expect("identity");
    assert_eq!(country.as_deref(), Some("GB"));
    assert_eq!(last_seen.to_rfc3339(), "2026-03-01T10:05:00+00:00");
}

/// The same race when the yielding event opens its conversation in a run of
/// openings, as a lane records them: that opening joins the other
/// transaction's customer and keeps its visitor; the run's other openings
/// create theirs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_opening_an_identity_created_at_once_elsewhere_joins_its_customer() {
    use enricher::event::{Event, EventBody, Limits};
    use enricher::store::chat::{
        ModelHandoff, Recorded, RunMessage, WorkspaceDefaults, record_messages,
    };
    let app = TestApp::new().await;
    let (ws, first, first_customer) = identity_being_created(&app).await;

    let pool = app.pool.clone();
    let ws_run = ws.clone();
    let run = tokio::spawn(async move {
        let events: Vec<Event> = ["u-a", "u-race", "u-b", "u-c"]
            .iter()
            .map(|user| {
                let mut body = chat(
                    &ws_run,
                    &format!("m-{user}"),
                    &format!("c-{user}"),
                    user,
                    "customer",
                    "hi",
                );
                body["visitor"] = json!({"country": "GB"});
                Event::decode(&serde_json::to_vec(&body).expect("json"), Limits::default())
                    .expect("valid event")
            })
            .collect();
        let run: Vec<RunMessage<'_>> = events
            .iter()
            .map(|event| {
                let EventBody::ChatMessage(message) = &event.body else {
                    panic!("not a chat message");
                };
                RunMessage {
                    envelope: &event.envelope,
                    message,
                    workspace: WorkspaceDefaults {
                        enrichment: true,
                        default_region: None,
                    },
                }
            })
            .collect();
        let mut conn = pool.acquire().await.expect("connection");
        record_messages(&mut conn, &run, ModelHandoff::None)
            .await
            .expect("record the run")
    });
    wait_for_a_lock_wait(&app).await;
    first.commit().await.expect("commit");
    let recorded = run.await.expect("run task");

    let stored: Vec<_> = recorded
        .into_iter()
        .map(|recorded| match recorded {
            Recorded::Stored(stored) => stored,
            Recorded::Duplicate => panic!("nothing here was recorded before"),
        })
        .collect();
    assert_eq!(stored.len(), 4, "the whole run is recorded");
    assert_eq!(stored[1].customer_id, first_customer);
    assert!(!stored[1].new_customer);
    assert!(stored[1].new_conversation);
    for other in [&stored[0], &stored[2], &stored[3]] {
        assert!(other.new_customer && other.new_conversation);
        assert_ne!(other.customer_id, first_customer);
    }
    assert_eq!(app.count("SELECT count(*) FROM enrich.customers").await, 4);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM enrich.customer_identities
              WHERE platform_user_id = 'u-race' AND visitor ->> 'country' = 'GB'"
        )
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT conversation_count::bigint FROM enrich.customers ORDER BY conversation_count DESC LIMIT 1")
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_agent_value_survives_a_merge_against_a_newer_customer_statement() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[chat(&ws, "m1", "c1", "old-user", "customer", "hello")])
        .await;
    app.wait_for_count("SELECT count(*) FROM enrich.customers", 1, WAIT)
        .await;
    app.publish(&[json!({"type": "profile.update", "version": 1, "id": "p1", "workspace_id": ws,
        "occurred_at": "2026-03-01T10:00:00Z", "platform": "web", "platform_user_id": "old-user",
        "fields": {"name": "Dr. Amira Haddad", "email": "amira@example.net"}, "source": "agent", "actor": "agent-3"})])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.customer_fields", 2, WAIT)
        .await;
    sqlx::query("UPDATE enrich.conversations SET sentiment = 'positive', sentiment_score = 0.5")
        .execute(&app.pool)
        .await
        .expect("score the first conversation");
    app.publish(&[on(
        "line",
        chat(
            &ws,
            "m2",
            "c2",
            "new-user",
            "customer",
            "My name is Mira, email amira@example.net",
        ),
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.merges", 1, WAIT)
        .await;
    let (name, source): (String, String) =
        sqlx::query_as("SELECT value, source FROM enrich.customer_fields WHERE field = 'name'")
            .fetch_one(&app.pool)
            .await
            .expect("name");
    assert_eq!(
        (name.as_str(), source.as_str()),
        ("Dr. Amira Haddad", "agent")
    );
    assert_eq!(app.count("SELECT count(*) FROM enrich.customers").await, 1);
    let average: Option<f32> = sqlx::query_scalar("SELECT avg_sentiment FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("average");
    assert_eq!(
        average,
        Some(0.5),
        "the survivor's average covers the merged conversations"
    );
    // History moved to the survivor but stays append-only.
    assert_eq!(
        app.count("SELECT count(DISTINCT customer_id) FROM enrich.field_changes")
            .await,
        1
    );
    let rewrite = sqlx::query("UPDATE enrich.field_changes SET new_value = 'forged'")
        .execute(&app.pool)
        .await;
    assert!(rewrite.is_err(), "history values cannot be rewritten");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inactive_anonymous_profiles_expire_and_identified_ones_persist() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[
        chat(&ws, "old-anon", "c1", "u-old-anon", "customer", "hello"),
        chat(
            &ws,
            "old-known",
            "c2",
            "u-old-known",
            "customer",
            "hi, my email is kept@example.com",
        ),
        chat(&ws, "new-anon", "c3", "u-new-anon", "customer", "hey"),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.customers", 3, WAIT)
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.customer_fields WHERE field = 'email'",
        1,
        WAIT,
    )
    .await;
    worker.stop().await;
    // The fixture events are dated 2026-03-01; make every profile active now, then age two.
    sqlx::query("UPDATE enrich.customers SET last_seen_at = now()")
        .execute(&app.pool)
        .await
        .expect("refresh");
    sqlx::query(
        "UPDATE enrich.customers SET last_seen_at = now() - interval '40 days', updated_at = now() - interval '40 days'
          WHERE id IN (SELECT customer_id FROM enrich.identities WHERE platform_user_id IN ('u-old-anon', 'u-old-known'))",
    )
    .execute(&app.pool)
    .await
    .expect("age two profiles");
    let removed = enricher::store::retention::remove_inactive_anonymous(&app.pool, 30, 1000)
        .await
        .expect("sweep");
    assert_eq!(removed, 1);
    let left: Vec<String> =
        sqlx::query_scalar("SELECT platform_user_id FROM enrich.identities ORDER BY 1")
            .fetch_all(&app.pool)
            .await
            .expect("identities");
    assert_eq!(left, vec!["u-new-anon", "u-old-known"]);
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.messages").await,
        2,
        "the expired profile's messages went too"
    );
}
