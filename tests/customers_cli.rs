//! `enricher customers show|export|forget` run as the real binary against a
//! test database: the card a support agent reads, exports that parse back to
//! the view's rows in constant memory, and an erasure that leaves nothing in
//! Postgres or Redis.

mod common;

use std::collections::HashMap;
use std::process::Output;
use std::time::Duration;

use common::{TestApp, chat, unique};
use redis::AsyncCommands;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// Runs `enricher <args>` against the test's database.
async fn enricher(app: &TestApp, args: &[&str]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_enricher"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ENRICHER_ENV", "test")
        .env("ENRICHER__POSTGRES__URL", &app.database_url)
        .output()
        .await
        .expect("enricher runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Column names of `enrich.customer_profiles`, in order.
async fn view_columns(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT attname::text FROM pg_attribute
          WHERE attrelid = 'enrich.customer_profiles'::regclass AND attnum > 0 AND NOT attisdropped
          ORDER BY attnum",
    )
    .fetch_all(&app.pool)
    .await
    .expect("view columns")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn show_prints_the_profile_card_by_email_or_id() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let other_ws = unique("ws");
    let mut first = chat(
        &ws,
        "m1",
        "conv-show",
        "u-ann",
        "customer",
        "hello, I have a question about my order",
    );
    first["visitor"] = json!({
        "ip": "203.0.113.77", "user_agent": "SecretBrowser/9.9",
        "country": "GB", "device": "mobile"
    });
    app.publish(&[
        first,
        json!({"type": "profile.update", "version": 1, "id": "p1", "workspace_id": ws,
               "occurred_at": "2026-03-01T10:05:00Z", "platform": "web", "platform_user_id": "u-ann",
               "fields": {"name": "Ann Example", "email": "Ann@Example.com"}, "source": "form",
               "actor": "signup-form", "tags_add": ["vip", "returning"],
               "agent_instructions": "Prefers short answers"}),
        // The same email in a second workspace makes the email ambiguous.
        json!({"type": "profile.update", "version": 1, "id": "p2", "workspace_id": other_ws,
               "occurred_at": "2026-03-01T10:05:00Z", "platform": "web", "platform_user_id": "u-ann2",
               "fields": {"email": "ann@example.com"}, "source": "api", "actor": "crm"}),
    ])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.customer_fields WHERE field = 'email'",
        2,
        WAIT,
    )
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.tags", 2, WAIT)
        .await;
    worker.stop().await;
    let customer_id: uuid::Uuid =
        sqlx::query_scalar("SELECT id FROM enrich.customers WHERE workspace_id = $1")
            .bind(&ws)
            .fetch_one(&app.pool)
            .await
            .expect("customer");

    // Ambiguous: both workspaces are listed, the email is not repeated.
    let ambiguous = enricher(&app, &["customers", "show", "ANN@example.com"]).await;
    assert!(!ambiguous.status.success(), "{}", stdout(&ambiguous));
    let message = stderr(&ambiguous);
    assert!(
        message.contains(&ws) && message.contains(&other_ws),
        "{message}"
    );
    assert!(message.contains("--workspace"), "{message}");
    assert!(
        !message.contains("example.com"),
        "the email leaked: {message}"
    );

    let shown = enricher(
        &app,
        &["customers", "show", "ANN@example.com", "--workspace", &ws],
    )
    .await;
    assert!(shown.status.success(), "{}", stderr(&shown));
    let card = stdout(&shown);
    println!("{card}");
    for expected in [
        "Ann Example",
        &customer_id.to_string(),
        &ws,
        "ann@example.com",
        "form by signup-form",
        "returning, vip",
        "Prefers short answers",
        "AI insights         none yet",
        "conv-show",
        "country GB",
        "device mobile",
        "u-ann",
        "Escalations         0",
        "Field history",
    ] {
        assert!(card.contains(expected), "missing {expected:?} in\n{card}");
    }
    let conversation_line = card
        .lines()
        .find(|line| line.contains("conv-show"))
        .expect("conversation line");
    assert!(
        conversation_line.contains("web") && conversation_line.contains("active"),
        "{conversation_line}"
    );
    for secret in ["203.0.113.77", "SecretBrowser"] {
        assert!(!card.contains(secret), "the card shows {secret}:\n{card}");
    }

    // What the model and agents add later shows up on the card.
    sqlx::query(
        "UPDATE enrich.conversations SET summary = 'Asked where order 1234 is',
                sentiment = 'negative', sentiment_score = -0.4 WHERE customer_id = $1",
    )
    .bind(customer_id)
    .execute(&app.pool)
    .await
    .expect("summary");
    sqlx::query(
        "INSERT INTO enrich.escalation_requests (workspace_id, conversation_id, customer_id, status, occurred_at)
         SELECT workspace_id, id, customer_id, 'requesting', now() FROM enrich.conversations
          WHERE customer_id = $1",
    )
    .bind(customer_id)
    .execute(&app.pool)
    .await
    .expect("escalation");
    sqlx::query(
        "INSERT INTO enrich.customer_insights (customer_id, insights)
         VALUES ($1, '{\"intent\": \"track an order\"}')",
    )
    .bind(customer_id)
    .execute(&app.pool)
    .await
    .expect("insights");

    // By id: no workspace needed.
    let by_id = enricher(&app, &["customers", "show", &customer_id.to_string()]).await;
    assert!(by_id.status.success(), "{}", stderr(&by_id));
    let card = stdout(&by_id);
    for expected in [
        "Ann Example",
        "summary: Asked where order 1234 is",
        "sentiment: negative (-0.40)",
        "1 escalation",
        "Escalations         1",
        "\"intent\": \"track an order\"",
    ] {
        assert!(card.contains(expected), "missing {expected:?} in\n{card}");
    }
    assert!(!card.contains("AI insights         none yet"), "{card}");

    // A customer with no name is a guest.
    let guest = enricher(
        &app,
        &[
            "customers",
            "show",
            "ann@example.com",
            "--workspace",
            &other_ws,
        ],
    )
    .await;
    assert!(guest.status.success(), "{}", stderr(&guest));
    assert!(stdout(&guest).contains("Guest User"));
    assert!(stdout(&guest).contains("api by crm"));

    // Unknown customers fail clearly.
    let missing = enricher(&app, &["customers", "show", "nobody@example.com"]).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no customer has that email"),
        "{}",
        stderr(&missing)
    );
    let missing_id = uuid::Uuid::new_v4().to_string();
    let missing = enricher(&app, &["customers", "show", &missing_id]).await;
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains(&missing_id),
        "{}",
        stderr(&missing)
    );
}

/// Three customers in `ws` updated in January, February and March, one in `other`.
async fn seed_export(app: &TestApp, ws: &str, other: &str) -> [uuid::Uuid; 4] {
    let ids = [
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4(),
    ];
    sqlx::query("INSERT INTO enrich.workspaces (id) VALUES ($1), ($2)")
        .bind(ws)
        .bind(other)
        .execute(&app.pool)
        .await
        .expect("workspaces");
    sqlx::query(
        "INSERT INTO enrich.customers
             (id, workspace_id, platforms, source, conversation_count, avg_sentiment, created_at, updated_at)
         VALUES ($1, $5, '{web,whatsapp}', 'organic', 2, 0.5, '2026-01-01', '2026-01-10T00:00:00Z'),
                ($2, $5, '{web}', NULL, 1, NULL, '2026-01-01', '2026-02-10T00:00:00Z'),
                ($3, $5, '{}', NULL, 0, NULL, '2026-01-01', '2026-03-10T00:00:00Z'),
                ($4, $6, '{line}', NULL, 0, NULL, '2026-01-01', '2026-03-10T00:00:00Z')",
    )
    .bind(ids[0])
    .bind(ids[1])
    .bind(ids[2])
    .bind(ids[3])
    .bind(ws)
    .bind(other)
    .execute(&app.pool)
    .await
    .expect("customers");
    sqlx::query(
        "INSERT INTO enrich.customer_fields (customer_id, field, value, source, source_rank) VALUES
             ($1, 'name', 'Ann \"Nan\" Example, Jr.', 'form', 3),
             ($1, 'email', 'ann@example.com', 'form', 3),
             ($1, 'company_size', '11-50', 'customer', 2),
             ($2, 'email', 'bob@example.com', 'api', 3),
             ($3, 'phone', '+441234567890', 'customer', 2)",
    )
    .bind(ids[0])
    .bind(ids[1])
    .bind(ids[2])
    .execute(&app.pool)
    .await
    .expect("fields");
    sqlx::query("INSERT INTO enrich.tags (customer_id, tag) VALUES ($1, 'vip'), ($1, 'returning')")
        .bind(ids[0])
        .execute(&app.pool)
        .await
        .expect("tags");
    sqlx::query(
        "INSERT INTO enrich.customer_insights (customer_id, insights) VALUES ($1, '{\"intent\": \"upgrade\"}')",
    )
    .bind(ids[0])
    .execute(&app.pool)
    .await
    .expect("insights");
    ids
}

fn jsonl_rows(text: &str) -> HashMap<String, Value> {
    text.lines()
        .map(|line| {
            let row: Value = serde_json::from_str(line).expect("a JSON object per line");
            let id = row["customer_id"].as_str().expect("customer_id").to_owned();
            (id, row)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_writes_every_column_as_jsonl_and_csv_and_filters_by_workspace_and_time() {
    let app = TestApp::new().await;
    let ws = unique("ws");
    let other = unique("ws");
    let [ann, bob, guest, elsewhere] = seed_export(&app, &ws, &other).await;
    let columns = view_columns(&app).await;

    // JSONL to stdout.
    let output = enricher(
        &app,
        &[
            "customers",
            "export",
            "--format",
            "jsonl",
            "--workspace",
            &ws,
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.starts_with("{\"customer_id\":"),
        "keys follow the view: {text}"
    );
    let rows = jsonl_rows(&text);
    assert_eq!(rows.len(), 3, "{text}");
    assert!(!rows.contains_key(&elsewhere.to_string()));
    let row = &rows[&ann.to_string()];
    let keys: Vec<&String> = row.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), columns.len(), "every column of the view");
    assert_eq!(row["name"], json!("Ann \"Nan\" Example, Jr."));
    assert_eq!(row["display_name"], json!("Ann \"Nan\" Example, Jr."));
    assert_eq!(row["email"], json!("ann@example.com"));
    assert_eq!(row["platforms"], json!(["web", "whatsapp"]));
    assert_eq!(row["tags"], json!(["returning", "vip"]));
    assert_eq!(row["attributes"], json!({"company_size": "11-50"}));
    assert_eq!(row["insights"], json!({"intent": "upgrade"}));
    assert_eq!(row["avg_sentiment"], json!(0.5));
    assert_eq!(row["conversation_count"], json!(2));
    assert_eq!(row["identified"], json!(true));
    assert_eq!(row["updated_at"], json!("2026-01-10T00:00:00Z"));
    let guest_row = &rows[&guest.to_string()];
    assert_eq!(guest_row["display_name"], json!("Guest User"));
    assert_eq!(guest_row["name"], Value::Null);
    assert_eq!(guest_row["phone"], json!("+441234567890"));
    assert_eq!(guest_row["tags"], json!([]));
    assert!(
        stderr(&output).contains("exported 3 customer profiles"),
        "{}",
        stderr(&output)
    );

    // CSV to a file.
    let dir = std::env::temp_dir().join(unique("export"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("customers.csv");
    let output = enricher(
        &app,
        &[
            "customers",
            "export",
            "--format",
            "csv",
            "--workspace",
            &ws,
            "--output",
            file.to_str().expect("utf-8 path"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).is_empty(), "the export went to the file");
    assert!(stderr(&output).contains("exported 3 customer profiles"));
    let mut reader = csv::Reader::from_path(&file).expect("csv file");
    let header: Vec<String> = reader
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, columns);
    let records: Vec<HashMap<String, String>> = reader
        .records()
        .map(|record| {
            let record = record.expect("record");
            header
                .iter()
                .cloned()
                .zip(record.iter().map(str::to_owned))
                .collect()
        })
        .collect();
    assert_eq!(records.len(), 3);
    let row = records
        .iter()
        .find(|r| r["customer_id"] == ann.to_string())
        .expect("ann's row");
    assert_eq!(row["name"], "Ann \"Nan\" Example, Jr.");
    assert_eq!(row["platforms"], "web|whatsapp");
    assert_eq!(row["tags"], "returning|vip");
    assert_eq!(row["attributes"], r#"{"company_size":"11-50"}"#);
    assert_eq!(row["insights"], r#"{"intent":"upgrade"}"#);
    assert_eq!(row["identified"], "true");
    assert_eq!(row["avg_sentiment"], "0.5");
    let row = records
        .iter()
        .find(|r| r["customer_id"] == bob.to_string())
        .expect("bob's row");
    assert_eq!(row["name"], "");
    assert_eq!(row["insights"], "");
    assert_eq!(row["source"], "");
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no partial file left: {leftovers:?}");

    // --since, as a date and as an RFC 3339 time.
    let output = enricher(
        &app,
        &[
            "customers",
            "export",
            "--format",
            "jsonl",
            "--workspace",
            &ws,
            "--since",
            "2026-02-01",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let rows = jsonl_rows(&stdout(&output));
    let ids: std::collections::BTreeSet<&String> = rows.keys().collect();
    let expected = [bob.to_string(), guest.to_string()];
    assert_eq!(ids, expected.iter().collect());
    let output = enricher(
        &app,
        &[
            "customers",
            "export",
            "--format",
            "csv",
            "--since",
            "2026-03-10T00:00:00Z",
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 3, "header + two workspaces: {text}");
    assert!(text.contains(&guest.to_string()) && text.contains(&elsewhere.to_string()));

    // No workspace filter: everything.
    let output = enricher(&app, &["customers", "export", "--format", "jsonl"]).await;
    assert_eq!(jsonl_rows(&stdout(&output)).len(), 4);

    // A bad --since is a usage error.
    let output = enricher(
        &app,
        &[
            "customers",
            "export",
            "--format",
            "csv",
            "--since",
            "last week",
        ],
    )
    .await;
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stderr(&output).contains("RFC 3339"), "{}", stderr(&output));
    std::fs::remove_dir_all(&dir).ok();
}

/// Runs an export under GNU time; returns (peak RSS in KiB, lines in the file).
async fn measured_export(app: &TestApp, format: &str, file: &std::path::Path) -> (u64, usize) {
    let output = tokio::process::Command::new("/usr/bin/time")
        .args(["-f", "%M", env!("CARGO_BIN_EXE_enricher")])
        .args(["customers", "export", "--format", format, "--output"])
        .arg(file)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("ENRICHER_ENV", "test")
        .env("ENRICHER__POSTGRES__URL", &app.database_url)
        .output()
        .await
        .expect("/usr/bin/time runs (apt-get install time)");
    let err = stderr(&output);
    assert!(output.status.success(), "{err}");
    let peak_kib: u64 = err
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {err}"));
    let text = std::fs::read_to_string(file).expect("export file");
    (peak_kib, text.lines().count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exporting_100k_customers_keeps_memory_flat() {
    const CUSTOMERS: usize = 100_000;
    const LIMIT_KIB: u64 = 60 * 1024;
    let app = TestApp::new().await;
    let dir = std::env::temp_dir().join(unique("export"));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // Baseline: the same command over an empty table.
    let (empty_kib, lines) = measured_export(&app, "csv", &dir.join("empty.csv")).await;
    assert_eq!(lines, 1, "just the header");

    sqlx::query("INSERT INTO enrich.workspaces (id) VALUES ('bulk')")
        .execute(&app.pool)
        .await
        .expect("workspace");
    sqlx::query(
        "WITH seeded AS (
             INSERT INTO enrich.customers (id, workspace_id, platforms, first_seen_at, last_seen_at,
                                           customer_message_count, last_message)
             SELECT gen_random_uuid(), 'bulk', '{web}', now(), now(), g % 7,
                    'message number ' || g
               FROM generate_series(1, $1) g
             RETURNING id)
         INSERT INTO enrich.customer_fields (customer_id, field, value, source, source_rank)
         SELECT id, 'email', 'c-' || id || '@example.com', 'api', 3 FROM seeded",
    )
    .bind(CUSTOMERS as i32)
    .execute(&app.pool)
    .await
    .expect("seed 100k customers");

    let started = std::time::Instant::now();
    let (csv_kib, csv_lines) = measured_export(&app, "csv", &dir.join("customers.csv")).await;
    let csv_secs = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    let (jsonl_kib, jsonl_lines) =
        measured_export(&app, "jsonl", &dir.join("customers.jsonl")).await;
    let jsonl_secs = started.elapsed().as_secs_f64();
    println!(
        "customers export peak RSS: empty table {:.1} MiB; {CUSTOMERS} customers: csv {:.1} MiB ({csv_secs:.1} s), jsonl {:.1} MiB ({jsonl_secs:.1} s)",
        empty_kib as f64 / 1024.0,
        csv_kib as f64 / 1024.0,
        jsonl_kib as f64 / 1024.0,
    );
    assert_eq!(csv_lines, CUSTOMERS + 1, "header + one line per customer");
    assert_eq!(jsonl_lines, CUSTOMERS);
    for (format, kib) in [("csv", csv_kib), ("jsonl", jsonl_kib)] {
        assert!(
            kib < LIMIT_KIB,
            "{format} export peaked at {kib} KiB (limit {LIMIT_KIB})"
        );
        // Flat: 100,000 rows cost little more than none.
        assert!(
            kib < empty_kib + 16 * 1024,
            "{format} export grew from {empty_kib} KiB to {kib} KiB"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forget_erases_the_customer_from_postgres_and_redis() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let mut first = chat(
        &ws,
        "m1",
        "conv-forget",
        "u-forget",
        "customer",
        "my secret text",
    );
    first["visitor"] = json!({"ip": "203.0.113.9", "country": "US"});
    app.publish(&[
        first,
        json!({"type": "profile.update", "version": 1, "id": "p1", "workspace_id": ws,
               "occurred_at": "2026-03-01T10:00:00Z", "platform": "web", "platform_user_id": "u-forget",
               "fields": {"name": "Secret Person", "email": "secret@example.com"}, "source": "form",
               "tags_add": ["vip"], "agent_instructions": "formal"}),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.customer_fields", 2, WAIT)
        .await;
    app.wait_for_count("SELECT count(*) FROM enrich.tags", 1, WAIT)
        .await;
    worker.stop().await;
    let customer_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("customer");

    // Warm the cache the way the decision core does, so there is something to erase.
    let settings = app.settings();
    let cache = enricher::state::Cache::connect(&settings.redis)
        .await
        .expect("redis");
    assert_eq!(
        cache
            .profile(&app.pool, &ws, customer_id)
            .await
            .expect("profile")
            .len(),
        2
    );
    assert_eq!(
        cache
            .recent_turns(&app.pool, &ws, "conv-forget")
            .await
            .expect("turns")
            .len(),
        1
    );
    let mut redis = app.redis().await;
    let keys: Vec<String> = redis.keys(format!("enrich:{ws}:*")).await.expect("keys");
    for key in [
        format!("enrich:{ws}:profile:{customer_id}"),
        format!("enrich:{ws}:turns:conv-forget"),
    ] {
        assert!(keys.contains(&key), "{key} is not cached: {keys:?}");
    }

    let output = enricher(&app, &["customers", "forget", "Secret@Example.com"]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let report = format!("{}{}", stdout(&output), stderr(&output));
    println!("{report}");
    assert!(report.contains(&customer_id.to_string()), "{report}");
    assert!(report.contains("identities 1, fields 2"), "{report}");
    assert!(report.contains("conversations 1, messages 1"), "{report}");
    assert!(report.contains("tags 1"), "{report}");
    assert!(
        report.contains("1 conversation turns key deleted"),
        "{report}"
    );
    for secret in [
        "Secret Person",
        "secret@example.com",
        "my secret text",
        "203.0.113.9",
    ] {
        assert!(!report.contains(secret), "the report shows {secret}");
    }

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
    let erasures: Vec<(uuid::Uuid, Option<String>, Option<String>)> =
        sqlx::query_as("SELECT customer_id, requested_by, event_id FROM enrich.erasures")
            .fetch_all(&app.pool)
            .await
            .expect("erasures");
    assert_eq!(erasures, vec![(customer_id, Some("cli".to_owned()), None)]);
    let keys: Vec<String> = redis.keys(format!("enrich:{ws}:*")).await.expect("keys");
    assert!(keys.is_empty(), "redis still holds {keys:?}");

    // Forgetting again: a clear error, a non-zero exit, nothing recorded.
    let output = enricher(&app, &["customers", "forget", "secret@example.com"]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("no customer has that email"),
        "{}",
        stderr(&output)
    );
    let output = enricher(&app, &["customers", "forget", &customer_id.to_string()]).await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("no customer with id {customer_id}")),
        "{}",
        stderr(&output)
    );
    assert_eq!(app.count("SELECT count(*) FROM enrich.erasures").await, 1);
}
