//! The API keeps publishing after the broker dropped its connection: the
//! broker closes the API's connection (as an operator's `rabbitmqctl
//! close_connection` would), the connection recovers, and an edit made
//! afterwards reaches the outbound exchange with no worker running.
//! It closes every connection named `enricher-api` on the shared broker, so
//! it lives in its own test binary (cargo runs test binaries one at a time).

mod common;

use std::time::Duration;

use common::api_server::{RunningApi, outbound_event, token};
use common::{TestApp, chat, rabbitmqctl, unique};
use enricher::api::CONNECTION_NAME;
use enricher::api::auth::Scope;
use reqwest::StatusCode;
use serde_json::json;

/// The broker's ids of the connections the API opened.
fn api_connections() -> Vec<String> {
    rabbitmqctl(&[
        "list_connections",
        "--no-table-headers",
        "pid",
        "client_properties",
    ])
    .iter()
    .filter(|line| line.contains(&format!("\"{CONNECTION_NAME}\"")))
    .filter_map(|line| line.split('\t').next().map(str::to_owned))
    .collect()
}

/// Waits until the API has a connection the broker did not list in `old`.
async fn wait_for_a_new_api_connection(old: &[String]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !api_connections().iter().any(|pid| !old.contains(pid)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the API did not open a new broker connection within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_publishes_again_after_the_broker_closed_its_connection() {
    common::show_worker_log();
    let app = TestApp::new().await;
    let ws = unique("ws");
    // A customer to edit: one message through a worker, which then stops.
    let worker = app.start_worker().await;
    app.publish(&[chat(&ws, "m1", "c1", "u1", "customer", "hello")])
        .await;
    app.wait_for_count(
        "SELECT count(*) FROM enrich.messages",
        1,
        Duration::from_secs(30),
    )
    .await;
    worker.stop().await;
    let customer: uuid::Uuid = sqlx::query_scalar("SELECT id FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("customer");

    let api = RunningApi::start(&app).await;
    let write = token(&app, &ws, "agent-jo", &[Scope::Write]).await;
    let (_listener_connection, mut updated) = app.outbound_listener("profile.updated").await;
    let closed = api_connections();
    assert!(!closed.is_empty(), "the API is connected to the broker");
    for connection in &closed {
        rabbitmqctl(&["close_connection", connection, "fault injected by a test"]);
    }
    wait_for_a_new_api_connection(&closed).await;

    let (status, body) = api
        .send(
            reqwest::Method::PATCH,
            &write,
            &format!("/v1/customers/{customer}/fields"),
            json!({"fields": {"name": "Ann Lee"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let event = outbound_event(&mut updated, &customer.to_string(), |body| {
        body["changes"]
            .as_array()
            .is_some_and(|changes| changes.iter().any(|c| c["field"] == "name"))
    })
    .await;
    assert_eq!(event["changes"][0]["new"], "Ann Lee");
    // Published and confirmed: nothing is left waiting in the outbox.
    app.wait_for_count(
        "SELECT count(*) FROM enrich.outbox",
        0,
        Duration::from_secs(30),
    )
    .await;
    api.stop().await;
}
