//! The event spine end to end on real RabbitMQ, Redis and Postgres: order,
//! dedupe, dead letters, tenancy and erasure.

mod common;

use std::time::Duration;

use common::{TestApp, chat, next_outbound, unique};
use redis::AsyncCommands;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_conversations_keep_their_order_and_store_each_message_once() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let (conversations, per_conversation) = (200, 20);
    let mut events = Vec::new();
    for m in 0..per_conversation {
        for c in 0..conversations {
            events.push(chat(
                &ws,
                &format!("e-{c}-{m}"),
                &format!("c-{c}"),
                &format!("u-{c}"),
                "customer",
                &format!("{m}"),
            ));
        }
    }
    app.publish(&events).await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 4000, WAIT)
        .await;

    let rows: Vec<(String, Vec<String>)> = sqlx::query_as(
        "SELECT c.external_id, array_agg(m.text ORDER BY m.id) FROM enrich.messages m
           JOIN enrich.conversations c ON c.id = m.conversation_id GROUP BY c.external_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("query");
    assert_eq!(rows.len(), conversations);
    let expected: Vec<String> = (0..per_conversation).map(|m| m.to_string()).collect();
    for (conversation, texts) in rows {
        assert_eq!(texts, expected, "order of {conversation}");
    }
    let counters: (i64, i64) = sqlx::query_as(
        "SELECT sum(customer_message_count)::bigint, sum(conversation_count)::bigint FROM enrich.customers",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counters");
    assert_eq!(counters, (4000, 200));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_event_id_twice_is_stored_once() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let event = chat(&ws, "dup-1", "c1", "u1", "customer", "hello");
    app.publish(&[event.clone(), event.clone()]).await;
    app.publish(&[event, chat(&ws, "after", "c1", "u1", "customer", "next")])
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.messages WHERE event_id = 'after'",
        1,
        WAIT,
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.messages WHERE event_id = 'dup-1'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT customer_message_count::bigint FROM enrich.customers")
            .await,
        2
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conversation_s_turns_are_cached_from_its_first_message() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[
        chat(&ws, "t1", "c1", "u1", "customer", "hello there"),
        chat(&ws, "t2", "c1", "u1", "bot", "hi, how can I help?"),
        chat(&ws, "t3", "c1", "u1", "customer", "do you ship to Peru?"),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 3, WAIT)
        .await;
    let key = enricher::state::keys::turns(&ws, "c1");
    let mut redis = app.redis().await;
    // Nothing has read the conversation: the list exists because its first
    // message started it.
    let cached: Vec<String> = redis.lrange(&key, 0, -1).await.expect("lrange");
    let ttl: i64 = redis.ttl(&key).await.expect("ttl");
    assert!(ttl > 0, "the turns list has a TTL, got {ttl}");
    let texts: Vec<String> = cached
        .iter()
        .map(|json| {
            serde_json::from_str::<serde_json::Value>(json).expect("turn json")["text"]
                .as_str()
                .expect("text")
                .to_owned()
        })
        .collect();
    assert_eq!(
        texts,
        vec!["hello there", "hi, how can I help?", "do you ship to Peru?"]
    );

    // The cached list is the same as the one rebuilt from Postgres.
    let cache = enricher::state::Cache::connect(&app.settings().redis)
        .await
        .expect("cache");
    let from_cache = cache
        .recent_turns(&app.pool, &ws, "c1")
        .await
        .expect("cached turns");
    let _: () = redis.del(&key).await.expect("del");
    let rebuilt = cache
        .recent_turns(&app.pool, &ws, "c1")
        .await
        .expect("rebuilt turns");
    assert_eq!(from_cache, rebuilt);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_events_are_dead_lettered_with_their_reason_and_nothing_else_is_lost() {
    let mut app = TestApp::new().await;
    app.set("ENRICHER__WORKSPACES__RESTRICT", "true");
    let worker = app.start_worker().await;
    // With workspaces restricted, only listed ones are accepted; the shipped
    // config lists none, so even a valid event is refused for its workspace.
    let unknown_workspace = chat("not-listed", "e-ws", "c1", "u1", "customer", "hi");
    let mut missing_key = chat("w", "e-missing", "c1", "u1", "customer", "hi");
    missing_key
        .as_object_mut()
        .expect("object")
        .remove("platform_user_id");
    let mut wrong_type = chat("w", "e-type", "c1", "u1", "customer", "hi");
    wrong_type["text"] = json!(42);
    let mut unknown_type = chat("w", "e-unknown", "c1", "u1", "customer", "hi");
    unknown_type["type"] = json!("chat.reaction");
    let long_text = chat(
        "w",
        "e-long",
        "c1",
        "u1",
        "customer",
        &"x".repeat(70 * 1024),
    );
    let mut invalid_utf8 =
        serde_json::to_vec(&chat("w", "e-utf8", "c1", "u1", "customer", "AB")).expect("json");
    let at = invalid_utf8
        .windows(2)
        .position(|w| w == b"AB")
        .expect("marker");
    invalid_utf8[at] = 0xff;

    app.publish_raw(b"{\"type\": \"chat.message\", oops").await;
    app.publish(&[
        unknown_type,
        missing_key,
        wrong_type,
        long_text,
        unknown_workspace,
    ])
    .await;
    app.publish_raw(&invalid_utf8).await;

    let letters = app.dead_letters(7, WAIT).await;
    let reasons: Vec<&str> = letters.iter().map(|(_, r)| r.as_str()).collect();
    let expect = [
        "malformed JSON",
        "unknown `type`, expected one of",
        "missing field `platform_user_id`",
        "`text`: invalid type: integer, expected a string",
        "limit is 65536",
        "unknown workspace `not-listed`",
        "not valid UTF-8",
    ];
    for needle in expect {
        assert!(
            reasons.iter().any(|r| r.contains(needle)),
            "no dead letter says `{needle}`: {reasons:?}"
        );
    }
    // Reasons name the key and the kind, never the offending value.
    assert!(
        !reasons
            .iter()
            .any(|r| r.contains("chat.reaction") || r.contains("42")),
        "{reasons:?}"
    );
    assert_eq!(app.count("SELECT count(*) FROM enrich.messages").await, 0);
    assert_eq!(worker.metrics.dead_lettered.get(), 7);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_worker_keeps_running_after_a_dead_letter() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish_raw(b"not json at all").await;
    app.publish(&[chat(&ws, "good", "c1", "u1", "customer", "still here")])
        .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 1, WAIT)
        .await;
    let letters = app.dead_letters(1, WAIT).await;
    assert_eq!(letters[0].0, b"not json at all");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_platform_user_in_two_workspaces_is_two_customers() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let (a, b) = (unique("wsa"), unique("wsb"));
    app.publish(&[
        chat(&a, "e1", "conv", "same-user", "customer", "hi from a"),
        chat(&b, "e1", "conv", "same-user", "customer", "hi from b"),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 2, WAIT)
        .await;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT workspace_id, count(DISTINCT id), sum(conversation_count)::bigint FROM enrich.customers GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&app.pool)
    .await
    .expect("customers");
    assert_eq!(rows, vec![(a.clone(), 1, 1), (b.clone(), 1, 1)]);
    let crossing = app
        .count(
            "SELECT count(*) FROM enrich.messages m JOIN enrich.customers c ON c.id = m.customer_id
              WHERE m.workspace_id <> c.workspace_id",
        )
        .await;
    assert_eq!(crossing, 0);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profile_updates_follow_source_ranks_and_history_keeps_every_change() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let update = |id: &str, source: &str, name: &str| {
        json!({"type": "profile.update", "version": 1, "id": id, "workspace_id": ws,
               "occurred_at": "2026-03-01T10:00:00Z", "platform": "web", "platform_user_id": "u1",
               "fields": {"name": name}, "source": source, "actor": format!("{source}-1")})
    };
    app.publish(&[chat(&ws, "m1", "c1", "u1", "customer", "hello")])
        .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 1, WAIT)
        .await;
    app.publish(&[
        update("p1", "system", "Sys Name"),
        update("p2", "form", "Form Name"),
        update("p3", "system", "Ignored System"),
        update("p4", "agent", "Agent Name"),
        update("p5", "api", "Ignored Api"),
        update("p6", "form", "Ignored Form"),
    ])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.processed_events WHERE event_type = 'profile.update'",
        6,
        WAIT,
    )
    .await;
    let (value, source): (String, String) =
        sqlx::query_as("SELECT value, source FROM enrich.customer_fields WHERE field = 'name'")
            .fetch_one(&app.pool)
            .await
            .expect("name");
    assert_eq!((value.as_str(), source.as_str()), ("Agent Name", "agent"));
    let history: Vec<(Option<String>, String, String)> = sqlx::query_as(
        "SELECT old_value, new_value, source FROM enrich.field_history WHERE field = 'name' ORDER BY change_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("history");
    assert_eq!(
        history,
        vec![
            (None, "Sys Name".into(), "system".into()),
            (Some("Sys Name".into()), "Form Name".into(), "form".into()),
            (
                Some("Form Name".into()),
                "Agent Name".into(),
                "agent".into()
            ),
        ]
    );
    let display: String = sqlx::query_scalar("SELECT display_name FROM enrich.customer_profiles")
        .fetch_one(&app.pool)
        .await
        .expect("profile view");
    assert_eq!(display, "Agent Name");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forget_leaves_no_personal_data_in_postgres_or_redis() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let mut first = chat(
        &ws,
        "m1",
        "conv-f",
        "u-forget",
        "customer",
        "my secret text",
    );
    first["visitor"] = json!({"ip": "203.0.113.9", "country": "US"});
    app.publish(&[
        json!({"type": "profile.update", "version": 1, "id": "p1", "workspace_id": ws,
               "occurred_at": "2026-03-01T10:00:00Z", "platform": "web", "platform_user_id": "u-forget",
               "fields": {"name": "Secret Person", "email": "secret@example.com"}, "source": "form",
               "tags_add": ["vip"], "agent_instructions": "formal"}),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.customer_fields", 2, WAIT)
        .await;
    // The customer's message makes the worker read and cache the profile.
    app.publish(&[first]).await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 1, WAIT)
        .await;
    let customer_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("customer");

    // The worker cached the profile when it read it for the customer's
    // message, so there is something to erase.
    let settings = app.settings();
    let cache = enricher::state::Cache::connect(&settings.redis)
        .await
        .expect("redis");
    let profile = app.wait_for_hot_profile(&ws, customer_id, WAIT).await;
    assert_eq!(
        profile.keys().filter(|f| f.starts_with("field:")).count(),
        2
    );
    let turns = cache
        .recent_turns(&app.pool, &ws, "conv-f")
        .await
        .expect("turns");
    assert_eq!(turns.len(), 1);

    app.publish(&[
        json!({"type": "customer.forget", "version": 1, "id": "f1", "workspace_id": ws,
        "occurred_at": "2026-03-02T10:00:00Z", "email": "secret@example.com", "actor": "dpo"}),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.erasures", 1, WAIT)
        .await;

    for table in [
        "customers",
        "identities",
        "customer_fields",
        "field_changes",
        "conversations",
        "messages",
        "tags",
        "declined_fields",
        "asks",
        "escalations",
        "customer_insights",
    ] {
        assert_eq!(
            app.count(&format!("SELECT count(*) FROM enrich.{table}"))
                .await,
            0,
            "{table} still has rows"
        );
    }
    let dump: String =
        sqlx::query_scalar("SELECT coalesce(string_agg(e::text, ' '), '') FROM enrich.erasures e")
            .fetch_one(&app.pool)
            .await
            .expect("erasures");
    for secret in [
        "Secret Person",
        "secret@example.com",
        "u-forget",
        "203.0.113.9",
        "my secret text",
    ] {
        assert!(!dump.contains(secret), "erasure record holds {secret}");
    }
    let mut redis = app.redis().await;
    let keys: Vec<String> = redis
        .keys(enricher::state::keys::workspace_pattern(&ws))
        .await
        .expect("keys");
    assert!(keys.is_empty(), "redis still holds {keys:?}");

    // A later message from the same identity starts a fresh, empty profile.
    let mut later = chat(&ws, "m2", "conv-g", "u-forget", "customer", "hello again");
    later["occurred_at"] = json!("2026-03-03T10:00:00Z");
    app.publish(&[later]).await;
    app.wait_for_count("SELECT count(*) FROM enrich.customers", 1, WAIT)
        .await;
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_fields")
            .await,
        0
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_workspace_with_enrichment_off_stores_and_counts_but_extracts_nothing() {
    let app = TestApp::new().await;
    let ws = unique("ws");
    sqlx::query("INSERT INTO enrich.workspaces (id, enrichment_enabled) VALUES ($1, false)")
        .bind(&ws)
        .execute(&app.pool)
        .await
        .expect("workspace");
    let worker = app.start_worker().await;
    app.publish(&[chat(
        &ws,
        "m1",
        "c1",
        "u1",
        "customer",
        "I'm Olga, email olga@example.com, send me the brochure",
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 1, WAIT)
        .await;
    assert_eq!(
        app.count("SELECT customer_message_count::bigint FROM enrich.customers")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_fields")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM enrich.asks").await, 0);
    worker.stop().await;
}

/// The conversations of [`asking_script`], opened: a run's recording stops
/// before the messages of a conversation it opened itself, so the script's
/// asks and answers share a run only in conversations that exist.
fn greetings(ws: &str) -> Vec<serde_json::Value> {
    vec![
        chat(ws, "a0", "c-answer", "u1", "customer", "hello"),
        chat(ws, "b0", "c-ignore", "u2", "customer", "hello"),
        chat(ws, "c0", "c-last", "u3", "customer", "hello"),
    ]
}

/// Two customers asked for their email, one answering in their next turn
/// and one letting three turns pass, and a third asked last.
fn asking_script(ws: &str) -> Vec<serde_json::Value> {
    vec![
        chat(
            ws,
            "a1",
            "c-answer",
            "u1",
            "customer",
            "Hi! Could you send me the price list?",
        ),
        chat(
            ws,
            "b1",
            "c-ignore",
            "u2",
            "customer",
            "Please email me the brochure",
        ),
        chat(
            ws,
            "a2",
            "c-answer",
            "u1",
            "bot",
            "Sure! What's your email?",
        ),
        chat(
            ws,
            "a3",
            "c-answer",
            "u1",
            "customer",
            "it's ana@example.com",
        ),
        chat(
            ws,
            "b2",
            "c-ignore",
            "u2",
            "customer",
            "what are your hours?",
        ),
        chat(ws, "b3", "c-ignore", "u2", "customer", "and on sundays?"),
        chat(ws, "b4", "c-ignore", "u2", "customer", "ok thanks"),
        chat(
            ws,
            "c1",
            "c-last",
            "u3",
            "customer",
            "Please email me the brochure",
        ),
    ]
}

/// A workspace's asks as the dashboards' ask log shows them, and the
/// messages their announcements answer.
async fn asks_of(app: &TestApp, ws: &str) -> (Vec<(String, String, String)>, Vec<String>) {
    let asks: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT conversation_id, field, outcome FROM enrich.ask_log
          WHERE workspace_id = $1 ORDER BY conversation_id",
    )
    .bind(ws)
    .fetch_all(&app.pool)
    .await
    .expect("ask log");
    let mut answered: Vec<String> =
        sqlx::query_scalar("SELECT in_reply_to FROM enrich.ask_log WHERE workspace_id = $1")
            .bind(ws)
            .fetch_all(&app.pool)
            .await
            .expect("asks' messages");
    answered.sort();
    (asks, answered)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn asks_decided_in_one_run_are_those_decided_one_message_at_a_time() {
    let mut app = TestApp::new().await;
    // One lane that waits for the whole script: one batch, one run.
    app.set("ENRICHER__WORKER__LANES", "1");
    app.set("ENRICHER__WORKER__BATCH_LINGER_MS", "500");
    let (_connection, mut announcements) = app.outbound_listener("ask.requested").await;
    let one_at_a_time = unique("ws");
    let in_one_run = unique("ws");
    let stored =
        |ws: &str| format!("SELECT count(*) FROM enrich.messages WHERE workspace_id = '{ws}'");

    let worker = app.start_worker().await;
    for ws in [&one_at_a_time, &in_one_run] {
        app.publish(&greetings(ws)).await;
        app.wait_for_count(&stored(ws), 3, WAIT).await;
    }
    for (index, event) in asking_script(&one_at_a_time).into_iter().enumerate() {
        app.publish(&[event]).await;
        app.wait_for_count(&stored(&one_at_a_time), index as i64 + 4, WAIT)
            .await;
    }
    worker.stop().await;
    // Queued before the worker starts, the script reaches its lane at once.
    app.publish(&asking_script(&in_one_run)).await;
    let worker = app.start_worker().await;
    app.wait_for_count(&stored(&in_one_run), 11, WAIT).await;
    worker.stop().await;

    let expected = (
        vec![
            (
                "c-answer".to_owned(),
                "email".to_owned(),
                "answered".to_owned(),
            ),
            (
                "c-ignore".to_owned(),
                "email".to_owned(),
                "ignored".to_owned(),
            ),
            (
                "c-last".to_owned(),
                "email".to_owned(),
                "pending".to_owned(),
            ),
        ],
        vec!["a1".to_owned(), "b1".to_owned(), "c1".to_owned()],
    );
    assert_eq!(asks_of(&app, &one_at_a_time).await, expected);
    assert_eq!(asks_of(&app, &in_one_run).await, expected);
    // Every ask was announced once: three per workspace.
    let mut announced: Vec<(String, String)> = Vec::new();
    while announced.len() < 6 {
        let body = next_outbound(&mut announcements, WAIT).await;
        announced.push((
            body["workspace_id"].as_str().unwrap_or_default().to_owned(),
            body["in_reply_to"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    announced.sort();
    let mut expected_announced: Vec<(String, String)> = [&one_at_a_time, &in_one_run]
        .iter()
        .flat_map(|ws| ["a1", "b1", "c1"].map(|id| (ws.to_string(), id.to_owned())))
        .collect();
    expected_announced.sort();
    assert_eq!(announced, expected_announced);
    assert_eq!(app.count("SELECT count(*) FROM enrich.outbox").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_asks_are_published_and_closed_as_answered_or_ignored() {
    let app = TestApp::new().await;
    let (_connection, mut asks) = app.outbound_listener("ask.requested").await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let script = asking_script(&ws);
    app.publish(&script[..2]).await;
    for _ in 0..2 {
        let body = next_outbound(&mut asks, WAIT).await;
        assert_eq!(body["field"], "email");
        assert!(body["question"].as_str().is_some_and(|q| !q.is_empty()));
        assert!(["a1", "b1"].contains(&body["in_reply_to"].as_str().unwrap_or_default()));
    }
    // The script but its last ask.
    app.publish(&script[2..7]).await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 7, WAIT)
        .await;
    let outcomes: Vec<(String, String)> = sqlx::query_as(
        "SELECT conversation_id, outcome FROM enrich.ask_log ORDER BY conversation_id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("ask log");
    assert_eq!(
        outcomes,
        vec![
            ("c-answer".to_owned(), "answered".to_owned()),
            ("c-ignore".to_owned(), "ignored".to_owned())
        ]
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn warming_a_connection_runs_the_hot_statements_and_stores_nothing() {
    use enricher::store::warm_up::{HotPath, try_warm};
    let app = TestApp::new().await;
    let mut conn = app.pool.acquire().await.expect("connection");
    for path in [HotPath::Lanes, HotPath::ModelStage] {
        try_warm(&mut conn, path)
            .await
            .unwrap_or_else(|e| panic!("{path:?} warm-up statements fail: {e}"));
    }
    drop(conn);
    for table in [
        "workspaces",
        "processed_events",
        "customers",
        "identities",
        "conversations",
        "messages",
        "llm_calls",
    ] {
        assert_eq!(
            app.count(&format!("SELECT count(*) FROM enrich.{table}"))
                .await,
            0,
            "the warm-up left rows in {table}"
        );
    }
}

/// Sequential scans so far of the tables the message path reads by key, as
/// Postgres's statistics count them once this connection's are flushed.
async fn sequential_scans(conn: &mut sqlx::PgConnection) -> Vec<(String, i64)> {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .expect("flush request");
    // The flush happens when the backend goes idle after a statement.
    sqlx::query("SELECT 1")
        .execute(&mut *conn)
        .await
        .expect("idle");
    sqlx::query_as(
        "SELECT relname::text, coalesce(seq_scan, 0) FROM pg_stat_user_tables
          WHERE schemaname = 'enrich'
            AND relname IN ('workspaces', 'processed_events', 'customers', 'customer_identities', 'conversations',
                            'messages', 'customer_fields', 'declined_fields', 'asks')
          ORDER BY relname",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("scan counts")
}

/// Takes statistics while the tables are empty, as autovacuum leaves a new
/// deployment after a quiet start or a database that was emptied.
async fn analyze_empty_tables(conn: &mut sqlx::PgConnection) {
    sqlx::query(
        "ANALYZE enrich.workspaces, enrich.processed_events, enrich.customers, enrich.customer_identities,
                 enrich.conversations, enrich.messages, enrich.customer_fields, enrich.declined_fields,
                 enrich.asks, enrich.llm_calls",
    )
    .execute(&mut *conn)
    .await
    .expect("analyze");
}

/// The chat messages of `events` as a run for `record_messages`.
fn run_messages<'a>(
    events: &'a [enricher::event::Event],
    defaults: enricher::store::chat::WorkspaceDefaults<'a>,
) -> Vec<enricher::store::chat::RunMessage<'a>> {
    use enricher::event::EventBody;
    events
        .iter()
        .map(|event| {
            let EventBody::ChatMessage(message) = &event.body else {
                panic!("not a chat message");
            };
            enricher::store::chat::RunMessage {
                envelope: &event.envelope,
                message,
                workspace: defaults,
            }
        })
        .collect()
}

/// Records 48 messages over 4 conversations (customer and bot by turns) on
/// `conn`: enough calls per statement for Postgres to settle on the plans it
/// keeps, while the tables are still tiny. Returns the workspace and the
/// stored customer messages.
async fn record_small_conversations(
    conn: &mut sqlx::PgConnection,
    await_model: bool,
) -> (String, Vec<enricher::store::chat::StoredMessage>) {
    use enricher::event::{Event, EventBody, Limits};
    use enricher::store::chat::{
        ModelHandoff, Recorded, WorkspaceDefaults, record_message, record_messages,
    };
    let handoff = if await_model {
        ModelHandoff::Pending { recent_turns: 10 }
    } else {
        ModelHandoff::None
    };
    let ws = unique("ws");
    let mut customer_messages = Vec::new();
    let mut round = Vec::new();
    for m in 0..12 {
        for c in 0..4 {
            let sender = if m % 2 == 0 { "customer" } else { "bot" };
            let body = chat(
                &ws,
                &format!("k-{c}-{m}"),
                &format!("c-{c}"),
                &format!("u-{c}"),
                sender,
                "hello",
            );
            let bytes = serde_json::to_vec(&body).expect("json");
            let event = Event::decode(&bytes, Limits::default()).expect("valid event");
            let EventBody::ChatMessage(message) = &event.body else {
                panic!("not a chat message");
            };
            let defaults = WorkspaceDefaults {
                enrichment: true,
                default_region: Some("US"),
            };
            // The first rounds one by one, as conversations open; the rest
            // in runs of four, as a lane records them.
            let recorded = if m < 6 {
                record_message(&mut *conn, &event.envelope, message, defaults, handoff)
                    .await
                    .expect("record")
            } else {
                round.push(event.clone());
                if c < 3 {
                    continue;
                }
                let messages = run_messages(&round, defaults);
                let recorded = record_messages(&mut *conn, &messages, handoff)
                    .await
                    .expect("record a run");
                assert_eq!(recorded.len(), 4, "the run is recorded whole");
                round.clear();
                if sender == "customer" {
                    for recorded in recorded {
                        if let Recorded::Stored(stored) = recorded {
                            customer_messages.push(*stored);
                        }
                    }
                }
                continue;
            };
            if let (Recorded::Stored(stored), "customer") = (recorded, sender) {
                customer_messages.push(*stored);
            }
        }
    }
    (ws, customer_messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn recording_reads_every_row_by_its_key_even_when_the_statistics_saw_empty_tables() {
    let app = TestApp::new().await;
    let mut conn = app.pool.acquire().await.expect("connection");
    analyze_empty_tables(&mut conn).await;
    let before = sequential_scans(&mut conn).await;
    record_small_conversations(&mut conn, false).await;
    let after = sequential_scans(&mut conn).await;
    assert_eq!(after.len(), 9, "every table is counted: {after:?}");
    assert_eq!(
        after, before,
        "recording messages scanned whole tables instead of using their keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_model_stage_reads_every_row_by_its_key_even_when_the_statistics_saw_empty_tables() {
    use enricher::store::llm_calls::{Accounting, CallRow, record_for_pending_message};
    use enricher::store::model_queue::AiStatus;
    use enricher::store::warm_up::HotPath;
    let app = TestApp::new().await;
    let mut conn = app.pool.acquire().await.expect("connection");
    analyze_empty_tables(&mut conn).await;
    let (ws, messages) = record_small_conversations(&mut conn, true).await;
    drop(conn);
    // A connection of the model stage's pool, as the worker opens it.
    let stage_pool = app.hot_path_pool(HotPath::ModelStage).await;
    let mut conn = stage_pool.acquire().await.expect("connection");
    let before = sequential_scans(&mut conn).await;
    for stored in &messages {
        let inputs = enricher::store::asks::load_model_inputs(
            &mut *conn,
            stored.message_id,
            stored.conversation_id,
            stored.customer_turn.max(0) as u32,
        )
        .await
        .expect("inputs")
        .expect("the message exists");
        assert_eq!(inputs.ai_status, Some(AiStatus::Pending));
        let row = CallRow {
            workspace_id: &ws,
            conversation_id: stored.conversation_id,
            customer_id: stored.customer_id,
            message_id: Some(stored.message_id),
            purpose: "enrich",
            outcome: "ok",
            rejections: Default::default(),
            timing: None,
        };
        let finished = record_for_pending_message(
            &mut conn,
            &row,
            &Accounting::unsent("m", "v"),
            AiStatus::Done,
        )
        .await
        .expect("outcome");
        assert!(finished, "the pending message was finished");
    }
    let after = sequential_scans(&mut conn).await;
    assert_eq!(messages.len(), 24);
    assert_eq!(
        after, before,
        "the model stage scanned whole tables instead of using their keys"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_booking_in_thai_text_without_spaces_asks_for_the_name() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    // "I'd like to book a room this Saturday": the booking keyword sits
    // inside a run of Thai letters with no spaces around it.
    app.publish(&[chat(
        &ws,
        "t1",
        "c-thai",
        "u1",
        "customer",
        "อยากจองห้องพักวันเสาร์นี้ครับ",
    )])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.ask_log WHERE field = 'name' AND outcome = 'pending'",
        1,
        WAIT,
    )
    .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bare_name_answering_the_open_name_ask_is_recorded_and_closes_it() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[chat(
        &ws,
        "n1",
        "c-name",
        "u1",
        "customer",
        "Hi, I'd like to book a table for tonight",
    )])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.ask_log WHERE field = 'name' AND outcome = 'pending'",
        1,
        WAIT,
    )
    .await;
    app.publish(&[
        chat(
            &ws,
            "n2",
            "c-name",
            "u1",
            "bot",
            "Sure! Who should I put the booking under?",
        ),
        chat(&ws, "n3", "c-name", "u1", "customer", "Tariq Aziz"),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 3, WAIT)
        .await;
    let name: Option<String> = sqlx::query_scalar(
        "SELECT value FROM enrich.customer_fields v JOIN enrich.customers c ON c.id = v.customer_id
          WHERE c.workspace_id = $1 AND v.field = 'name'",
    )
    .bind(&ws)
    .fetch_optional(&app.pool)
    .await
    .expect("name");
    assert_eq!(name.as_deref(), Some("Tariq Aziz"));
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM enrich.ask_log WHERE field = 'name'")
            .fetch_one(&app.pool)
            .await
            .expect("ask");
    assert_eq!(outcome, "answered");
    worker.stop().await;
}

/// The events of the recording equivalence test: conversations of one
/// customer each and of one customer together, every sender, a visitor, a
/// source, an agent, ids given twice, conversations that open after others
/// have messages, and a new customer opening two conversations in a row.
fn recording_script(ws: &str) -> Vec<enricher::event::Event> {
    use enricher::event::{Event, Limits};
    let mut events = Vec::new();
    let mut push = |value: serde_json::Value| {
        let bytes = serde_json::to_vec(&value).expect("json");
        events.push(Event::decode(&bytes, Limits::default()).expect("valid event"));
    };
    let at = |second: u32| format!("2026-03-01T10:00:{second:02}Z");
    let senders = ["customer", "bot", "customer", "agent", "customer", "bot"];
    for round in 0..6u32 {
        for (c, user) in [(0, "u-0"), (1, "u-1"), (2, "u-2"), (3, "u-0")] {
            if c == 3 && round < 2 {
                continue;
            }
            let sender = senders[(round as usize + c) % senders.len()];
            let mut body = chat(
                ws,
                &format!("k-{c}-{round}"),
                &format!("c-{c}"),
                user,
                sender,
                &format!("message {round} in {c}"),
            );
            // Later messages may carry earlier times: counters keep the latest.
            body["occurred_at"] = json!(at(10 + round * 3 - (c as u32 % 2) * 4));
            if sender == "agent" {
                body["agent_id"] = json!("agent-7");
            }
            if c == 1 {
                body["visitor"] = json!({"browser": format!("browser {round}")});
            }
            if c == 2 && round == 3 {
                body["source"] = json!("campaign");
            }
            push(body);
        }
        if round == 2 {
            // One new customer opening two conversations back to back.
            let mut opening = chat(ws, "k-5-2", "c-5", "u-5", "customer", "first of two");
            opening["source"] = json!("campaign");
            opening["first_message_tag"] = json!("spring-sale");
            push(opening);
            push(chat(ws, "k-6-2", "c-6", "u-5", "customer", "second of two"));
        }
        if round == 3 {
            // The same id twice in a row, and one seen rounds before.
            push(chat(ws, "k-0-3", "c-0", "u-0", "customer", "again"));
            push(chat(ws, "k-1-1", "c-1", "u-1", "customer", "again"));
        }
    }
    events
}

/// What recording left in a workspace, with enricher's ids replaced by the
/// conversations' and customers' external names.
async fn recorded_rows(conn: &mut sqlx::PgConnection, ws: &str) -> serde_json::Value {
    let query = |sql: &'static str| sqlx::query_scalar::<_, serde_json::Value>(sql).bind(ws);
    let conversations = query(
        "SELECT coalesce(jsonb_agg(jsonb_build_array(c.external_id, c.message_count, c.customer_turns,
                    c.status, c.ended_at, c.last_message_at, i.platform_user_id) ORDER BY c.external_id), '[]')
           FROM enrich.conversations c
           JOIN enrich.customer_identities i ON i.customer_id = c.customer_id
          WHERE c.workspace_id = $1",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("conversations");
    let messages = query(
        "SELECT coalesce(jsonb_agg(jsonb_build_array(m.event_id, c.external_id, i.platform_user_id, m.sender,
                    m.agent_id, m.text, m.occurred_at, m.ai_status, m.customer_turn) ORDER BY m.id), '[]')
           FROM enrich.messages m
           JOIN enrich.conversations c ON c.id = m.conversation_id
           JOIN enrich.customer_identities i ON i.customer_id = m.customer_id
          WHERE m.workspace_id = $1",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("messages");
    let customers = query(
        "SELECT coalesce(jsonb_agg(jsonb_build_array(i.platform_user_id, i.visitor, i.last_seen_at,
                    u.first_seen_at, u.last_seen_at, u.last_customer_message_at, u.conversation_count,
                    u.customer_message_count, u.bot_message_count, u.agent_message_count, u.last_message,
                    u.platforms, u.source, u.first_message_tag, u.state_version) ORDER BY i.platform_user_id), '[]')
           FROM enrich.customers u
           JOIN enrich.customer_identities i ON i.customer_id = u.id
          WHERE u.workspace_id = $1",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("customers");
    let events = query(
        "SELECT coalesce(jsonb_agg(event_id ORDER BY event_id), '[]')
           FROM enrich.processed_events WHERE workspace_id = $1",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("processed events");
    json!({"conversations": conversations, "messages": messages, "customers": customers, "events": events})
}

/// What a recording returned, without enricher's ids (which differ between
/// workspaces): duplicate, or the flags and counters of the stored message.
fn recorded_summary(recorded: &enricher::store::chat::Recorded) -> serde_json::Value {
    use enricher::store::chat::Recorded;
    match recorded {
        Recorded::Duplicate => json!("duplicate"),
        Recorded::Stored(s) => json!([
            s.new_customer,
            s.new_conversation,
            s.enrichment_enabled,
            s.default_region,
            s.customer_turn,
            s.message_count,
            s.state_version,
            s.spent_tokens
        ]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_of_messages_is_recorded_as_the_messages_one_by_one() {
    use enricher::store::chat::{ModelHandoff, WorkspaceDefaults, record_message, record_messages};
    let app = TestApp::new().await;
    let mut conn = app.pool.acquire().await.expect("connection");
    let handoff = ModelHandoff::Pending { recent_turns: 10 };
    let defaults = WorkspaceDefaults {
        enrichment: true,
        default_region: Some("US"),
    };
    let one_by_one = unique("ws");
    let in_runs = unique("ws");
    let mut returned = Vec::new();
    for ws in [&one_by_one, &in_runs] {
        let events = recording_script(ws);
        let messages = run_messages(&events, defaults);
        let mut summaries = Vec::new();
        let mut calls = 0;
        let mut next = 0;
        while next < messages.len() {
            if next == 12 {
                // A closed conversation is opened again by its next message.
                sqlx::query(
                    "UPDATE enrich.conversations SET status = 'closed', ended_at = '2026-03-01T10:00:30Z'
                      WHERE workspace_id = $1 AND external_id = 'c-2'",
                )
                .bind(ws)
                .execute(&mut *conn)
                .await
                .expect("close");
            }
            calls += 1;
            if *ws == one_by_one {
                let m = messages[next];
                let recorded = record_message(&mut conn, m.envelope, m.message, defaults, handoff)
                    .await
                    .expect("record");
                summaries.push(recorded_summary(&recorded));
                next += 1;
            } else {
                // A run never goes past 12, so the close above lands between runs.
                let end = if next < 12 { 12 } else { messages.len() };
                let recorded = record_messages(&mut conn, &messages[next..end], handoff)
                    .await
                    .expect("record a run");
                assert!(
                    !recorded.is_empty(),
                    "a run records at least its first message"
                );
                next += recorded.len();
                summaries.extend(recorded.iter().map(recorded_summary));
            }
        }
        returned.push((summaries, calls));
    }
    let (single, single_calls) = &returned[0];
    let (runs, run_calls) = &returned[1];
    assert_eq!(single.len(), runs.len());
    for (index, (a, b)) in single.iter().zip(runs).enumerate() {
        assert_eq!(a, b, "message {index} was recorded differently in a run");
    }
    assert!(
        *run_calls <= single_calls / 3,
        "runs were recorded together: {run_calls} calls for {single_calls} messages"
    );
    let mut expected = recorded_rows(&mut conn, &one_by_one).await;
    let mut actual = recorded_rows(&mut conn, &in_runs).await;
    // The messages' texts and ids name their workspace only through the
    // rows compared here, so both sides compare whole.
    assert_eq!(
        expected["messages"].as_array().map(Vec::len),
        Some(single.iter().filter(|s| *s != "duplicate").count())
    );
    for rows in [&mut expected, &mut actual] {
        assert!(rows["customers"].as_array().is_some_and(|c| c.len() == 4));
    }
    assert_eq!(actual, expected);
}
