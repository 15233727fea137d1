//! The HTTP API on the real services: the server runs in-process on an
//! ephemeral port over the test's own database and exchanges, a worker
//! ingests chat events first, and every request goes through reqwest.

mod common;

use std::time::Duration;

use common::api_server::{RunningApi, WAIT, decode, outbound_event, token};
use common::{TestApp, unique};
use enricher::api::auth::Scope;
use enricher::api::openapi;
use reqwest::StatusCode;
use serde_json::{Value, json};

#[allow(clippy::too_many_arguments)]
fn message(
    ws: &str,
    id: &str,
    at: &str,
    conversation: &str,
    platform: &str,
    user: &str,
    sender: &str,
    text: &str,
    extra: Value,
) -> Value {
    let mut event = json!({
        "type": "chat.message", "version": 1, "id": id, "workspace_id": ws,
        "occurred_at": at, "conversation_id": conversation, "platform": platform,
        "platform_user_id": user, "sender": sender, "text": text
    });
    if let (Some(event), Some(extra)) = (event.as_object_mut(), extra.as_object()) {
        event.extend(extra.clone());
    }
    event
}

/// Workspace A: Ann on the web (named, with email, phone and visitor
/// metadata) and a WhatsApp guest; workspace B: another Ann.
async fn seed(app: &TestApp, ws_a: &str, ws_b: &str) {
    app.publish(&[
        message(ws_a, "a1", "2026-03-01T10:00:00Z", "conv-ann", "web", "web-ann", "customer",
            "Hello, I need help with my order",
            json!({
                "identity_hint": {"name": "Ann Lee", "email": "Ann.Lee@Example.com", "phone": "(650) 253-0000"},
                "visitor": {"ip": "203.0.113.7", "user_agent": "Mozilla/5.0", "browser": "Firefox",
                            "os": "Linux", "device": "desktop", "country": "US",
                            "session_started_at": "2026-03-01T09:50:00Z"}
            })),
        message(ws_a, "a2", "2026-03-01T10:00:05Z", "conv-ann", "web", "web-ann", "bot",
            "Sure, what is your order number?", json!({})),
        message(ws_a, "a3", "2026-03-01T10:01:00Z", "conv-ann", "web", "web-ann", "customer",
            "It is 4411", json!({})),
        message(ws_a, "a4", "2026-03-02T08:00:00Z", "conv-wa", "whatsapp", "15550002222", "customer",
            "hi there", json!({})),
        message(ws_b, "b1", "2026-03-01T11:00:00Z", "conv-b", "web", "web-ann-b", "customer",
            "Hello from the other workspace",
            json!({"identity_hint": {"name": "Ann Other"}})),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 5, WAIT)
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.customer_fields WHERE field IN ('name', 'email', 'phone')",
        4,
        WAIT,
    )
    .await;
}

fn ids(page: &Value) -> Vec<String> {
    page["customers"]
        .as_array()
        .expect("customers")
        .iter()
        .map(|c| c["id"].as_str().expect("id").to_owned())
        .collect()
}

/// Waits for an outbound event about `customer` that `matches`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_on_the_real_services() {
    common::show_worker_log();
    let app = TestApp::new().await;
    let ws_a = unique("wsa");
    let ws_b = unique("wsb");
    let worker = app.start_worker().await;
    seed(&app, &ws_a, &ws_b).await;
    let api = RunningApi::start(&app).await;
    let read = token(&app, &ws_a, "dashboard", &[]).await;
    let write = token(&app, &ws_a, "agent-jo", &[Scope::Write]).await;
    let pii = token(&app, &ws_a, "dpo", &[Scope::Pii]).await;
    let other = token(&app, &ws_b, "other-tenant", &[Scope::Write]).await;
    let revoked = token(&app, &ws_a, "old", &[Scope::Write]).await;
    {
        let mut conn = app.pool.acquire().await.expect("connection");
        assert!(
            enricher::store::tokens::revoke(&mut conn, &ws_a, "old")
                .await
                .expect("revoke")
        );
    }

    // Auth failures.
    let response = api
        .client
        .get(api.url("/v1/customers"))
        .send()
        .await
        .expect("request");
    let (status, problem) = decode(response).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(problem["status"], 401);
    assert!(
        problem["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("unauthorized"))
    );
    assert_eq!(
        api.get("enr_not-a-token", "/v1/customers").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.get(&revoked, "/v1/customers").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Search: everyone, newest activity first.
    let (status, all) = api.get(&read, "/v1/customers").await;
    assert_eq!(status, StatusCode::OK, "{all}");
    let listed = ids(&all);
    assert_eq!(
        listed.len(),
        2,
        "workspace B's customer is not listed: {all}"
    );
    assert_eq!(all["customers"][0]["display_name"], "Guest User");
    assert_eq!(all["customers"][0]["platforms"], json!(["whatsapp"]));
    let guest = listed[0].clone();
    let ann = listed[1].clone();
    assert_eq!(all["customers"][1]["display_name"], "Ann Lee");
    assert_eq!(all["customers"][1]["email"], "ann.lee@example.com");
    assert_eq!(all["customers"][1]["phone"], "+16502530000");
    assert_eq!(all["customers"][1]["last_message"], "It is 4411");
    // Part of the name, exact email in any case, phone in any format, platform user id.
    for q in [
        "nn%20L",
        "ANN.LEE%40example.COM",
        "650-253-0000",
        "%2B1%20650%20253%200000",
        "web-ann",
    ] {
        let (status, found) = api.get(&read, &format!("/v1/customers?q={q}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&found), vec![ann.clone()], "q={q}: {found}");
    }
    let (_, found) = api.get(&read, "/v1/customers?q=15550002222").await;
    assert_eq!(ids(&found), vec![guest.clone()]);
    let (_, found) = api.get(&read, "/v1/customers?q=nobody").await;
    assert!(ids(&found).is_empty());
    let (_, found) = api.get(&read, "/v1/customers?platform=whatsapp").await;
    assert_eq!(ids(&found), vec![guest.clone()]);
    let (_, found) = api.get(&read, "/v1/customers?status=active&q=Ann").await;
    assert_eq!(ids(&found), vec![ann.clone()]);
    // Workspace B's Ann is found only with B's token.
    let (_, found) = api.get(&other, "/v1/customers?q=Ann").await;
    assert_eq!(found["customers"][0]["display_name"], "Ann Other");
    assert_eq!(ids(&found).len(), 1);

    // Pagination.
    let (_, first) = api.get(&read, "/v1/customers?limit=1").await;
    assert_eq!(ids(&first), vec![guest.clone()]);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let (_, second) = api
        .get(&read, &format!("/v1/customers?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(ids(&second), vec![ann.clone()]);
    let cursor = second["next_cursor"]
        .as_str()
        .expect("a full page has a cursor")
        .to_owned();
    let (_, third) = api
        .get(&read, &format!("/v1/customers?limit=1&cursor={cursor}"))
        .await;
    assert!(ids(&third).is_empty());
    assert!(third["next_cursor"].is_null());
    let (status, problem) = api.get(&read, "/v1/customers?cursor=nonsense").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{problem}");
    assert_eq!(
        api.get(&read, "/v1/customers?limit=0").await.0,
        StatusCode::BAD_REQUEST
    );

    // The profile card; IP only with the pii scope.
    let (status, card) = api.get(&read, &format!("/v1/customers/{ann}")).await;
    assert_eq!(status, StatusCode::OK, "{card}");
    assert_eq!(card["display_name"], "Ann Lee");
    assert_eq!(card["counters"]["customer_messages"], 2);
    assert_eq!(card["counters"]["conversations"], 1);
    let email = card["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["field"] == "email")
        .expect("email field");
    assert_eq!(email["source"], "api");
    assert_eq!(email["actor"], "identity_hint");
    let identity = &card["identities"][0];
    assert_eq!(identity["platform"], "web");
    assert_eq!(identity["visitor"]["browser"], "Firefox");
    assert_eq!(
        identity["visitor"]["first_visit_at"],
        "2026-03-01T09:50:00Z"
    );
    assert!(
        identity["visitor"]["time_on_site_secs"]
            .as_i64()
            .is_some_and(|s| s >= 600),
        "{identity}"
    );
    assert!(
        identity["visitor"].get("ip").is_none(),
        "no IP without pii: {identity}"
    );
    assert_eq!(card["conversations"][0]["conversation_id"], "conv-ann");
    assert!(
        !card["recent_changes"]
            .as_array()
            .expect("changes")
            .is_empty()
    );
    let (_, card_pii) = api.get(&pii, &format!("/v1/customers/{ann}")).await;
    assert_eq!(card_pii["identities"][0]["visitor"]["ip"], "203.0.113.7");

    // Cross-workspace: 404, never 403.
    for path in [
        format!("/v1/customers/{ann}"),
        format!("/v1/customers/{ann}/conversations"),
        format!("/v1/customers/{ann}/history"),
        format!("/v1/customers/{ann}/export"),
        "/v1/conversations/conv-ann/messages".to_owned(),
    ] {
        let (status, problem) = api.get(&other, &path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {problem}");
    }
    for (method, path, body) in [
        (
            reqwest::Method::PATCH,
            format!("/v1/customers/{ann}/fields"),
            json!({"fields": {"name": "X"}}),
        ),
        (
            reqwest::Method::POST,
            format!("/v1/customers/{ann}/notes"),
            json!({"text": "x"}),
        ),
        (
            reqwest::Method::PUT,
            format!("/v1/customers/{ann}/tags"),
            json!({"tags": ["x"]}),
        ),
        (
            reqwest::Method::PUT,
            format!("/v1/customers/{ann}/instructions"),
            json!({"instructions": "x"}),
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/customers/{ann}"),
            Value::Null,
        ),
    ] {
        let (status, problem) = api.send(method, &other, &path, body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {problem}");
    }
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(
        api.get(&read, &format!("/v1/customers/{unknown}")).await.0,
        StatusCode::NOT_FOUND
    );

    // Conversations and transcripts, paginated.
    let (_, conversations) = api
        .get(&read, &format!("/v1/customers/{ann}/conversations"))
        .await;
    assert_eq!(conversations["conversations"][0]["message_count"], 3);
    let (status, page) = api
        .get(&read, "/v1/conversations/conv-ann/messages?limit=2")
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        page["messages"][0]["text"],
        "Hello, I need help with my order"
    );
    assert_eq!(page["messages"][1]["sender"], "bot");
    let cursor = page["next_cursor"]
        .as_str()
        .expect("more messages")
        .to_owned();
    let (_, rest) = api
        .get(
            &read,
            &format!("/v1/conversations/conv-ann/messages?limit=2&cursor={cursor}"),
        )
        .await;
    assert_eq!(rest["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["messages"][0]["event_id"], "a3");
    assert!(rest["next_cursor"].is_null());

    // Writes: a read token may not.
    let (status, problem) = api
        .send(
            reqwest::Method::PATCH,
            &read,
            &format!("/v1/customers/{ann}/fields"),
            json!({"fields": {"phone": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");

    let (_c1, mut updated) = app.outbound_listener("profile.updated").await;
    let (_c2, mut noted) = app.outbound_listener("note.added").await;

    // A clear: gone from the card, kept in history with the token as actor, announced.
    let (status, fields) = api
        .send(
            reqwest::Method::PATCH,
            &write,
            &format!("/v1/customers/{ann}/fields"),
            json!({"fields": {"phone": null, "name": "Ann B. Lee"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fields}");
    let names: Vec<&str> = fields["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["field"].as_str())
        .collect();
    assert!(!names.contains(&"phone"), "{fields}");
    let name = fields["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .find(|f| f["field"] == "name")
        .expect("name");
    assert_eq!(name["value"], "Ann B. Lee");
    assert_eq!(name["source"], "agent");
    assert_eq!(name["actor"], "agent-jo");
    let event = outbound_event(&mut updated, &ann, |body| {
        body["changes"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["field"] == "phone" && c["new"].is_null())
        })
    })
    .await;
    let phone = event["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["field"] == "phone")
        .expect("phone change");
    assert_eq!(phone["old"], "+16502530000");
    assert_eq!(phone["source"], "agent");
    let (_, history) = api
        .get(&read, &format!("/v1/customers/{ann}/history?limit=50"))
        .await;
    let cleared = history["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .find(|c| c["field"] == "phone" && c["new_value"].is_null())
        .expect("the clear is in history");
    assert_eq!(cleared["old_value"], "+16502530000");
    assert_eq!(cleared["actor"], "agent-jo");
    let (_, page) = api
        .get(&read, &format!("/v1/customers/{ann}/history?limit=1"))
        .await;
    assert!(page["next_cursor"].is_string());
    // An invalid value refuses the edit and names the field, not the value.
    let (status, problem) = api
        .send(
            reqwest::Method::PATCH,
            &write,
            &format!("/v1/customers/{ann}/fields"),
            json!({"fields": {"email": "not-an-email"}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("`email`") && !d.contains("not-an-email")),
        "{problem}"
    );

    // A note: stored with the token as author, on the card, announced.
    let (status, note) = api
        .send(
            reqwest::Method::POST,
            &write,
            &format!("/v1/customers/{ann}/notes"),
            json!({"text": "Prefers a call after 5pm"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{note}");
    assert_eq!(note["author"], "agent-jo");
    let announced = outbound_event(&mut noted, &ann, |_| true).await;
    assert_eq!(announced["text"], "Prefers a call after 5pm", "{announced}");
    assert_eq!(announced["author"], "agent-jo");
    let (status, _) = api
        .send(
            reqwest::Method::POST,
            &write,
            &format!("/v1/customers/{ann}/notes"),
            json!({"text": "x".repeat(2001)}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Tags and instructions.
    let (status, tags) = api
        .send(
            reqwest::Method::PUT,
            &write,
            &format!("/v1/customers/{ann}/tags"),
            json!({"tags": ["vip", "b2b", "vip"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tags}");
    assert_eq!(tags["tags"], json!(["b2b", "vip"]));
    let (_, tags) = api
        .send(
            reqwest::Method::PUT,
            &write,
            &format!("/v1/customers/{ann}/tags"),
            json!({"tags": ["vip"]}),
        )
        .await;
    assert_eq!(tags["tags"], json!(["vip"]));
    let (_, found) = api.get(&read, "/v1/customers?tag=vip").await;
    assert_eq!(ids(&found), vec![ann.clone()]);
    let (status, _) = api
        .send(
            reqwest::Method::PUT,
            &write,
            &format!("/v1/customers/{ann}/instructions"),
            json!({"instructions": "Address her as Dr. Lee"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, card) = api.get(&read, &format!("/v1/customers/{ann}")).await;
    assert_eq!(card["agent_instructions"], "Address her as Dr. Lee");
    assert_eq!(card["tags"], json!(["vip"]));
    assert_eq!(card["notes"][0]["text"], "Prefers a call after 5pm");

    // Exports: the workspace's profiles only, streamed.
    let csv = api
        .client
        .get(api.url("/v1/export?format=csv"))
        .bearer_auth(&read)
        .send()
        .await
        .expect("export");
    assert_eq!(csv.status(), StatusCode::OK);
    assert!(
        csv.headers()["content-type"]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/csv"))
    );
    let csv = csv.text().await.expect("csv");
    let mut lines = csv.lines();
    assert!(
        lines
            .next()
            .is_some_and(|header| header.starts_with("customer_id,workspace_id,display_name"))
    );
    assert_eq!(lines.count(), 2, "{csv}");
    let jsonl = api
        .client
        .get(api.url("/v1/export?format=jsonl&since=2020-01-01"))
        .bearer_auth(&read)
        .send()
        .await
        .expect("export");
    let jsonl = jsonl.text().await.expect("jsonl");
    let rows: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["workspace_id"] == ws_a.as_str()));
    let (_, none) = (
        StatusCode::OK,
        api.client
            .get(api.url("/v1/export?format=jsonl&since=2999-01-01"))
            .bearer_auth(&read)
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("body"),
    );
    assert!(none.is_empty());
    assert_eq!(
        api.get(&read, "/v1/export?format=xml").await.0,
        StatusCode::BAD_REQUEST
    );
    let (status, everything) = api.get(&read, &format!("/v1/customers/{ann}/export")).await;
    assert_eq!(status, StatusCode::OK, "{everything}");
    assert_eq!(
        everything["conversations"][0]["messages"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    assert_eq!(everything["notes"].as_array().map(Vec::len), Some(1));
    assert!(
        everything["history"]
            .as_array()
            .is_some_and(|h| h.len() >= 4)
    );

    // The document is served.
    let served: Value = api
        .client
        .get(api.url("/openapi.json"))
        .send()
        .await
        .expect("openapi")
        .json()
        .await
        .expect("json");
    assert_eq!(served["openapi"], "3.1.0");
    assert!(served["paths"]["/v1/customers/{id}/fields"]["patch"].is_object());

    // Forget.
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &read,
            &format!("/v1/customers/{guest}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = api
        .send(
            reqwest::Method::DELETE,
            &write,
            &format!("/v1/customers/{guest}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        api.get(&read, &format!("/v1/customers/{guest}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM enrich.customers WHERE id = '{guest}'"
        ))
        .await,
        0
    );

    api.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_ten_thousand_rows_twice_gives_ten_thousand_customers() {
    common::show_worker_log();
    let app = TestApp::new().await;
    let ws = unique("wsi");
    let api = RunningApi::start(&app).await;
    let write = token(&app, &ws, "crm-import", &[Scope::Write]).await;
    let read = token(&app, &ws, "viewer", &[]).await;

    let mut file = String::from("email,name,tags,identities\n");
    for i in 0..10_000 {
        let identity = if i % 2 == 0 {
            format!("whatsapp:1555{i:07}")
        } else {
            String::new()
        };
        file.push_str(&format!(
            "User.{i}@Import.test,Imported {},imported|batch-{},{identity}\n",
            letters(i),
            i % 3
        ));
    }
    let import = |token: String, body: String, content_type: &'static str| {
        let client = api.client.clone();
        let url = api.url("/v1/import");
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .header("content-type", content_type)
                .body(body)
                .timeout(Duration::from_secs(600))
                .send()
                .await
                .expect("import request");
            decode(response).await
        }
    };
    let (status, problem) = import(read.clone(), "email\na@b.co\n".to_owned(), "text/csv").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{problem}");
    let (status, _) = import(write.clone(), "x".to_owned(), "application/pdf").await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    for run in 0..2 {
        let (status, report) = import(write.clone(), file.clone(), "text/csv").await;
        assert_eq!(status, StatusCode::OK, "{report}");
        let first_refusal = &report["refusals"][0];
        assert_eq!(report["rows"], 10_000, "run {run}: {first_refusal}");
        assert_eq!(report["taken"], 10_000, "run {run}: {first_refusal}");
        assert_eq!(report["refused"], 0, "run {run}: {first_refusal}");
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) FROM enrich.customers WHERE workspace_id = '{ws}'"
            ))
            .await,
            10_000,
            "run {run}"
        );
    }
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_fields WHERE source = 'import' AND actor = 'crm-import'").await,
        20_000
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_identities")
            .await,
        5_000
    );
    let (_, found) = api
        .get(&read, "/v1/customers?q=user.42%40import.test")
        .await;
    assert_eq!(
        found["customers"][0]["display_name"],
        format!("Imported {}", letters(42))
    );
    assert_eq!(
        found["customers"][0]["tags"],
        json!(["batch-0", "imported"])
    );

    // Import never overrides an agent, and bad rows are refused with reasons.
    let id = found["customers"][0]["id"].as_str().expect("id").to_owned();
    let (status, _) = api
        .send(
            reqwest::Method::PATCH,
            &write,
            &format!("/v1/customers/{id}/fields"),
            json!({"fields": {"name": "Agent's Name"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let jsonl = [
        json!({"fields": {"email": "user.42@import.test", "name": "Imported Again"}}).to_string(),
        json!({"fields": {"email": "not an email"}}).to_string(),
        json!({"fields": {"name": "Nobody"}}).to_string(),
        "this is not json".to_owned(),
        json!({"fields": {"email": "new@import.test"}, "identities": [{"platform": "fax", "platform_user_id": "1"}]}).to_string(),
        json!({"fields": {"email": "new@import.test"}, "identities": [{"platform": "line", "platform_user_id": "U1"}]}).to_string(),
    ]
    .join("\n");
    let (status, report) = import(write.clone(), jsonl, "application/x-ndjson").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["rows"], 6);
    assert_eq!(report["taken"], 2, "{report}");
    assert_eq!(report["refused"], 4, "{report}");
    let reasons: Vec<(u64, String)> = report["refusals"]
        .as_array()
        .expect("refusals")
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().expect("row"),
                r["reason"].as_str().expect("reason").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        reasons.iter().map(|(row, _)| *row).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert!(
        reasons[0].1.contains("`email`") && !reasons[0].1.contains("not an email"),
        "{reasons:?}"
    );
    assert!(reasons[1].1.contains("no email or identity"), "{reasons:?}");
    assert!(reasons[3].1.contains("platform"), "{reasons:?}");
    let (_, card) = api.get(&read, &format!("/v1/customers/{id}")).await;
    assert_eq!(card["display_name"], "Agent's Name");
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM enrich.customers WHERE workspace_id = '{ws}'"
        ))
        .await,
        10_001
    );
    api.stop().await;
}

/// A name for row `i` in letters only (names may not hold digits).
fn letters(mut i: usize) -> String {
    let mut name = String::from("Q");
    loop {
        name.push(char::from(b'a' + (i % 26) as u8));
        i /= 26;
        if i == 0 {
            return name;
        }
    }
}

/// `docs/openapi.json` is the document the code generates.
#[test]
fn committed_openapi_document_matches_the_code() {
    let path = common::repo_root().join("docs/openapi.json");
    let generated = openapi::pretty();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(&path).expect("docs/openapi.json exists");
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: run `UPDATE_OPENAPI=1 cargo test --test api committed_openapi` and commit it"
    );
}
