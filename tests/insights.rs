//! Summaries and customer insights end to end (docs/contract.md §1.4): a scripted
//! OpenAI-compatible server in the test process, the real broker and stores.
//! Every ended conversation (closed, or idle) gets exactly one summary call,
//! also with two worker processes; insights are updated incrementally from
//! the previous insights and the new summary only, and cite the customer's
//! conversations; offline mode writes no AI text but still marks
//! conversations processed.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::fake_llm::{FakeModel, nothing, tool_call};
use common::{TestApp, chat, next_outbound, unique};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(90);

type Requests = Arc<Mutex<Vec<(String, Value)>>>;

/// The tool a request forces, and its user message.
fn tool_of(request: &Value) -> String {
    request["tools"][0]["function"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn user_message(request: &Value) -> String {
    request["messages"][1]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The backend conversation id a summary or insights prompt is about.
fn conversation_of(request: &Value) -> String {
    let user = user_message(request);
    let after = user
        .split("New conversation ")
        .nth(1)
        .or_else(|| user.split("Conversation ").nth(1))
        .unwrap_or_default();
    after
        .split([' ', ','])
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn summary_of(conversation: &str, score: f64) -> Value {
    json!({
        "summary": format!("Summary of {conversation}: the customer asked for a quote."),
        "sentiment": if score >= 0.0 { "positive" } else { "negative" },
        "sentiment_score": score,
        "topics": ["Quote", "pricing", "quote"],
        "resolution": {"status": "resolved", "resolved_by": "agent", "resolved_at_message": 2,
                       "detail": "The agent sent the quote."}
    })
}

fn item(text: &str, ids: &[&str]) -> Value {
    json!({"text": text, "conversation_ids": ids})
}

/// A fake model: summaries from `summary(conversation)`, insights from
/// `insights(conversation)`, nothing to enrich; every request is kept.
async fn fake_model(
    summary: impl Fn(&str) -> Value + Send + Sync + 'static,
    insights: impl Fn(&str) -> Value + Send + Sync + 'static,
) -> (FakeModel, Requests) {
    let requests: Requests = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&requests);
    let model = FakeModel::start(move |_, request| {
        let tool = tool_of(request);
        if let Ok(mut seen) = seen.lock() {
            seen.push((tool.clone(), request.clone()));
        }
        match tool.as_str() {
            "record_conversation_summary" => tool_call(summary(&conversation_of(request))),
            "record_customer_insights" => tool_call(insights(&conversation_of(request))),
            _ => nothing(),
        }
    })
    .await;
    (model, requests)
}

fn requests_for(requests: &Requests, tool: &str) -> Vec<Value> {
    requests
        .lock()
        .expect("requests")
        .iter()
        .filter(|(t, _)| t == tool)
        .map(|(_, r)| r.clone())
        .collect()
}

fn app_with_model(model: &FakeModel, app: &mut TestApp) {
    app.set("ENRICHER__LLM__BASE_URL", &model.base_url());
    app.set("ENRICHER__LLM__TIMEOUT_MS", "3000");
    app.set("ENRICHER__LLM__BACKOFF_MS", "50");
}

async fn fast_sweeps() -> TestApp {
    let mut app = TestApp::new().await;
    app.set("ENRICHER__INSIGHTS__IDLE_SECS", "2");
    app.set("ENRICHER__INSIGHTS__SWEEP_INTERVAL_SECS", "1");
    app
}

fn closed(ws: &str, id: &str, conversation: &str) -> Value {
    json!({"type": "conversation.closed", "version": 1, "id": id, "workspace_id": ws,
           "occurred_at": "2026-03-01T10:09:00Z", "conversation_id": conversation})
}

/// A customer question and an agent's answer.
fn exchange(ws: &str, conversation: &str, user: &str) -> Vec<Value> {
    let mut answer = chat(
        ws,
        &format!("{conversation}-a"),
        conversation,
        user,
        "agent",
        "Here is your quote: 20 euros a month.",
    );
    answer["agent_id"] = json!("agent-7");
    answer["occurred_at"] = json!("2026-03-01T10:05:00Z");
    vec![
        chat(
            ws,
            &format!("{conversation}-q"),
            conversation,
            user,
            "customer",
            "Hello, how much is the team plan?",
        ),
        answer,
    ]
}

async fn json_at(app: &TestApp, sql: &str) -> Value {
    sqlx::query_scalar::<_, Value>(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.pool)
        .await
        .expect(sql)
}

/// Kills worker processes even when an assertion fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn closed_and_idle_conversations_get_exactly_one_summary_each_with_two_workers() {
    let (model, requests) = fake_model(|c| summary_of(c, 0.5), |_| json!({})).await;
    let mut app = fast_sweeps().await;
    app_with_model(&model, &mut app);
    app.declare_topology().await;
    // Killed when dropped at the end of the test.
    let _workers = [app.spawn_worker_process(), app.spawn_worker_process()];
    let ws = unique("ws");
    let mut events = Vec::new();
    for i in 0..8 {
        events.extend(exchange(&ws, &format!("conv-{i}"), &format!("u{i}")));
    }
    app.publish(&events).await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 16, WAIT)
        .await;
    // Half are closed; the other half end by going idle.
    let closes: Vec<Value> = (0..8)
        .step_by(2)
        .map(|i| closed(&ws, &format!("close-{i}"), &format!("conv-{i}")))
        .collect();
    app.publish(&closes).await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.conversations WHERE summary_status = 'done'",
        8,
        WAIT,
    )
    .await;
    // More sweeps by both workers must not summarise anything again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM (SELECT conversation_id FROM enrich.llm_calls WHERE purpose = 'summary'
                                    GROUP BY conversation_id HAVING count(*) = 1) once"
        )
        .await,
        8
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.llm_calls WHERE purpose = 'summary'")
            .await,
        8
    );
    assert_eq!(
        requests_for(&requests, "record_conversation_summary").len(),
        8
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM enrich.conversation_overview
              WHERE summary LIKE 'Summary of conv-%' AND sentiment = 'positive' AND sentiment_score = 0.5
                AND topics = ARRAY['quote', 'pricing'] AND resolved_by = 'agent-7'
                AND resolution = 'The agent sent the quote.'"
        )
        .await,
        8
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM enrich.conversations
              WHERE resolved_at = '2026-03-01T10:05:00Z' AND summarized_at IS NOT NULL"
        )
        .await,
        8
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_profiles WHERE avg_sentiment = 0.5")
            .await,
        8
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.conversations WHERE status <> 'closed'")
            .await,
        4,
        "four conversations ended by going idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn insights_update_incrementally_from_the_new_summary_and_cite_conversations() {
    let (model, requests) = fake_model(
        |c| {
            let mut summary = summary_of(c, if c == "conv-one" { 0.8 } else { 0.2 });
            summary["summary"] = json!(if c == "conv-one" {
                "Summary ONE: the customer asked for a quote by email."
            } else {
                "Summary TWO: the customer ordered 20 licences."
            });
            summary
        },
        |c| {
            if c == "conv-one" {
                json!({
                    "communication_preferences": [item("Prefers email", &["conv-one"])],
                    "topics_of_interest": [item("Quotes", &["conv-one"])],
                    "purchase_patterns": [],
                    "key_characteristics": []
                })
            } else {
                json!({
                    "communication_preferences": [item("Prefers email", &["conv-one", "conv-two"])],
                    "topics_of_interest": [item("Made up", &["conv-nine"]),
                                           item("Quotes and licences", &["conv-one", "conv-two"])],
                    "purchase_patterns": [item("Half made up", &["conv-two", "conv-404"])],
                    "key_characteristics": [item("Uncited", &[])]
                })
            }
        },
    )
    .await;
    let mut app = fast_sweeps().await;
    app_with_model(&model, &mut app);
    let worker = app.start_worker().await;
    let ws = unique("ws");
    for (n, conversation) in ["conv-one", "conv-two"].into_iter().enumerate() {
        app.publish(&exchange(&ws, conversation, "u1")).await;
        app.publish(&[closed(&ws, &format!("close-{n}"), conversation)])
            .await;
        app.wait_for_count(
            &format!(
                "SELECT count(*) FROM enrich.conversations WHERE external_id = '{conversation}' AND insights_status = 'done'"
            ),
            1,
            WAIT,
        )
        .await;
    }
    let calls = requests_for(&requests, "record_customer_insights");
    assert_eq!(calls.len(), 2);
    let first = user_message(&calls[0]);
    assert!(first.contains("Summary ONE"), "{first}");
    assert!(first.contains("- (none)"), "{first}");
    let second = user_message(&calls[1]);
    assert!(
        second.contains("- Prefers email [conv-one]"),
        "the previous insights: {second}"
    );
    assert!(second.contains("- Quotes [conv-one]"), "{second}");
    assert!(second.contains("Summary TWO"), "the new summary: {second}");
    assert!(
        !second.contains("Summary ONE"),
        "never the earlier summaries: {second}"
    );
    let stored = json_at(&app, "SELECT insights FROM enrich.customer_insights").await;
    assert_eq!(
        stored,
        json!({
            "communication_preferences": [item("Prefers email", &["conv-one", "conv-two"])],
            "topics_of_interest": [item("Quotes and licences", &["conv-one", "conv-two"])],
            "purchase_patterns": [],
            "key_characteristics": []
        })
    );
    // Every stored citation is a conversation of this customer.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM enrich.customer_insights i,
                    jsonb_each(i.insights) s, jsonb_array_elements(s.value) it,
                    jsonb_array_elements_text(it->'conversation_ids') cited
              WHERE NOT EXISTS (SELECT 1 FROM enrich.conversations c
                                 WHERE c.customer_id = i.customer_id AND c.external_id = cited)"
        )
        .await,
        0
    );
    assert_eq!(
        json_at(
            &app,
            "SELECT rejections FROM enrich.llm_calls WHERE purpose = 'insights' ORDER BY id DESC LIMIT 1"
        )
        .await,
        json!({"insight:unknown_conversation": 2, "insight:uncited": 1})
    );
    let (model_name, version): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT model, prompt_version FROM enrich.customer_insights")
            .fetch_one(&app.pool)
            .await
            .expect("insights row");
    assert_eq!(model_name.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(version.map(|v| v.len()), Some(12));
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customers WHERE abs(avg_sentiment - 0.5) < 0.001")
            .await,
        1,
        "average of 0.8 and 0.2"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.llm_calls WHERE purpose IN ('summary', 'insights')")
            .await,
        4
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offline_mode_writes_no_ai_text_but_marks_conversations_processed() {
    let app = fast_sweeps().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let mut events = exchange(&ws, "conv-closed", "u1");
    events.extend(exchange(&ws, "conv-idle", "u2"));
    app.publish(&events).await;
    app.publish(&[closed(&ws, "close-1", "conv-closed")]).await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.conversations WHERE summary_status = 'offline' AND summarized_at IS NOT NULL",
        2,
        WAIT,
    )
    .await;
    let processed_at = json_at(
        &app,
        "SELECT jsonb_agg(summarized_at ORDER BY id) FROM enrich.conversations",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        json_at(
            &app,
            "SELECT jsonb_agg(summarized_at ORDER BY id) FROM enrich.conversations"
        )
        .await,
        processed_at,
        "processed once; the sweeper does not loop"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM enrich.conversations
              WHERE summary IS NOT NULL OR sentiment IS NOT NULL OR sentiment_score IS NOT NULL
                 OR topics <> '{}' OR resolution IS NOT NULL OR resolved_by IS NOT NULL
                 OR insights_status IS NOT NULL"
        )
        .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_insights")
            .await,
        0
    );
    assert_eq!(app.count("SELECT count(*) FROM enrich.llm_calls").await, 0);
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customers WHERE avg_sentiment IS NOT NULL")
            .await,
        0
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn summaries_and_insights_are_published() {
    let (model, _) = fake_model(
        |c| summary_of(c, -0.4),
        |c| json!({"communication_preferences": [], "topics_of_interest": [item("Team plan pricing", &[c])],
                   "purchase_patterns": [], "key_characteristics": []}),
    )
    .await;
    let mut app = fast_sweeps().await;
    app_with_model(&model, &mut app);
    let (_c1, mut summarized) = app.outbound_listener("conversation.summarized").await;
    let (_c2, mut insights) = app.outbound_listener("customer.insights_updated").await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&exchange(&ws, "conv-pub", "u1")).await;
    app.publish(&[closed(&ws, "close-1", "conv-pub")]).await;
    let event = next_outbound(&mut summarized, WAIT).await;
    let customer_id: uuid::Uuid = sqlx::query_scalar("SELECT id FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("customer");
    assert_eq!(
        event,
        json!({
            "workspace_id": ws, "conversation_id": "conv-pub", "customer_id": customer_id,
            "summary": "Summary of conv-pub: the customer asked for a quote.",
            "sentiment": "negative", "sentiment_score": -0.4, "topics": ["quote", "pricing"],
            "resolution": {"status": "resolved", "resolved_by": "agent-7",
                           "resolved_at": "2026-03-01T10:05:00Z", "detail": "The agent sent the quote."}
        })
    );
    let event = next_outbound(&mut insights, WAIT).await;
    assert_eq!(
        event,
        json!({
            "workspace_id": ws, "customer_id": customer_id,
            "insights": {"communication_preferences": [],
                         "topics_of_interest": [item("Team plan pricing", &["conv-pub"])],
                         "purchase_patterns": [], "key_characteristics": []}
        })
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn profile_update_cannot_write_insights() {
    let (model, _) = fake_model(
        |c| summary_of(c, 0.1),
        |c| json!({"communication_preferences": [item("Prefers chat", &[c])], "topics_of_interest": [],
                   "purchase_patterns": [], "key_characteristics": []}),
    )
    .await;
    let mut app = fast_sweeps().await;
    app_with_model(&model, &mut app);
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&exchange(&ws, "conv-ro", "u1")).await;
    app.publish(&[closed(&ws, "close-1", "conv-ro")]).await;
    app.wait_for_count("SELECT count(*) FROM enrich.customer_insights", 1, WAIT)
        .await;
    let before = json_at(&app, "SELECT to_jsonb(i) FROM enrich.customer_insights i").await;
    let customer_id = before["customer_id"]
        .as_str()
        .expect("customer id")
        .to_owned();
    let forged = json!({"communication_preferences": [item("Hacked", &["conv-ro"])]});
    app.publish(&[
        json!({"type": "profile.update", "version": 1, "id": "p1", "workspace_id": ws,
               "occurred_at": "2026-03-01T11:00:00Z", "customer_id": customer_id,
               "fields": {"insights": forged}, "source": "agent", "actor": "agent-7"}),
        json!({"type": "profile.update", "version": 1, "id": "p2", "workspace_id": ws,
               "occurred_at": "2026-03-01T11:00:01Z", "customer_id": customer_id,
               "fields": {"insights": "Hacked"}, "source": "api", "actor": "crm"}),
    ])
    .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.processed_events WHERE event_type = 'profile.update'",
        2,
        WAIT,
    )
    .await;
    assert_eq!(
        json_at(&app, "SELECT to_jsonb(i) FROM enrich.customer_insights i").await,
        before,
        "insights are read-only for agents"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM enrich.customer_fields WHERE field = 'insights'")
            .await,
        0
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_whose_worker_died_is_taken_over_and_the_late_worker_cannot_write() {
    let (model, requests) = fake_model(|c| summary_of(c, 0.0), |_| json!({})).await;
    let mut app = TestApp::new().await;
    app.set("ENRICHER__INSIGHTS__IDLE_SECS", "3600");
    app.set("ENRICHER__INSIGHTS__SWEEP_INTERVAL_SECS", "1");
    app_with_model(&model, &mut app);
    let worker = app.start_worker().await;
    let ws = unique("ws");
    let mut events = exchange(&ws, "conv-stale", "u1");
    events.extend(exchange(&ws, "conv-fresh", "u2"));
    app.publish(&events).await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 4, WAIT)
        .await;
    // Two workers claimed these and died: one 11 minutes ago, one just now.
    let dead_claim = uuid::Uuid::new_v4();
    sqlx::query(
        "UPDATE enrich.conversations
            SET status = 'closed', summary_status = 'claimed', summary_claim = $1,
                summary_claimed_at = now() - CASE external_id WHEN 'conv-stale' THEN interval '11 minutes'
                                                              ELSE interval '1 minute' END",
    )
    .bind(dead_claim)
    .execute(&app.pool)
    .await
    .expect("simulate dead claims");
    app.wait_for_count(
        "SELECT count(*) FROM enrich.conversations WHERE external_id = 'conv-stale' AND summary_status = 'done'",
        1,
        WAIT,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM enrich.conversations
              WHERE external_id = 'conv-fresh' AND summary_status = 'claimed' AND summary IS NULL"
        )
        .await,
        1,
        "a recent claim is left to its worker"
    );
    assert_eq!(
        requests_for(&requests, "record_conversation_summary").len(),
        1
    );
    // The dead worker comes back late: its token no longer matches.
    let mut claimed: enricher::insights::summary::Claimed = sqlx::query_as(
        "SELECT id, workspace_id, external_id, customer_id, platform, status, started_at, last_message_at,
                ended_at, resolved_by, resolution, customer_turns, summary_claim
           FROM enrich.conversations WHERE external_id = 'conv-stale'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("claimed row");
    assert_ne!(claimed.summary_claim, dead_claim);
    claimed.summary_claim = dead_claim;
    let mut conn = app.pool.acquire().await.expect("connection");
    let wrote =
        enricher::insights::summary::finish_without_summary(&mut conn, &claimed, "failed", None)
            .await
            .expect("query runs");
    assert!(!wrote, "a taken-over claim cannot write");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM enrich.conversations WHERE external_id = 'conv-stale'
                AND summary_status = 'done' AND summary IS NOT NULL"
        )
        .await,
        1
    );
    drop(conn);
    worker.stop().await;
}
