//! Running the HTTP API in-process for a test: the server on an ephemeral
//! port over the test's own database and exchanges, requests through
//! reqwest, tokens stored straight in the test's database, and outbound
//! events read off the broker.

use std::time::Duration;

use enricher::api::Server;
use enricher::api::auth::{self, Scope};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::sync::oneshot;

use super::TestApp;

pub const WAIT: Duration = Duration::from_secs(30);

/// `enricher serve` running in this process until [`RunningApi::stop`].
pub struct RunningApi {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), enricher::api::ServeError>>,
}

impl RunningApi {
    /// The API's routes alone.
    pub async fn start(app: &TestApp) -> RunningApi {
        RunningApi::start_with(app, enricher::api::router).await
    }

    /// The routes `routes` builds (e.g. the console's beside the API's).
    pub async fn start_with(
        app: &TestApp,
        routes: impl FnOnce(enricher::api::Api) -> axum::Router + Send + 'static,
    ) -> RunningApi {
        let server = Server::build(&app.settings()).await.expect("API builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run_app(
            listener,
            async move {
                let _ = stopped.await;
            },
            routes,
        ));
        RunningApi {
            base,
            client: reqwest::Client::new(),
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        decode(response).await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let response = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request");
        decode(response).await
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("API stops")
            .expect("API task")
            .expect("API ran");
    }
}

pub async fn decode(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response.bytes().await.expect("body");
    if status.is_client_error() || status.is_server_error() {
        assert_eq!(
            content_type, "application/problem+json",
            "errors are problems"
        );
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, body)
}

pub async fn token(app: &TestApp, workspace: &str, name: &str, scopes: &[Scope]) -> String {
    let token = auth::generate_token();
    let mut conn = app.pool.acquire().await.expect("connection");
    enricher::store::tokens::insert(
        &mut conn,
        workspace,
        name,
        &auth::stored_scopes(scopes),
        &auth::token_hash(&token),
    )
    .await
    .expect("token stored");
    token
}

pub async fn outbound_event(
    consumer: &mut lapin::Consumer,
    customer: &str,
    matches: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let delivery = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .expect("outbound event in time")
            .expect("consumer open")
            .expect("delivery");
        let body: Value = serde_json::from_slice(&delivery.data).expect("json");
        if body["customer_id"] == customer && matches(&body) {
            return body;
        }
    }
}
