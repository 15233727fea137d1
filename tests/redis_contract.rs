//! The Redis key layout is a read contract for chat backends
//! (`docs/redis.md`). These tests read the keys the worker wrote with plain
//! Redis commands, computing the key names by hand as a reader would, and
//! check that losing or corrupting the cache mid-conversation repeats no
//! ask and loses no fact.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{TestApp, chat, unique};
use redis::AsyncCommands;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// A key as `docs/redis.md` spells it, built without enricher's code.
fn key(workspace: &str, kind: &str, id: &str) -> String {
    format!("enrich:{}:{workspace}:{kind}:{id}", workspace.len())
}

async fn hgetall(
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> HashMap<String, String> {
    redis.hgetall(key).await.expect("HGETALL")
}

/// Waits until the hash at `key` satisfies `done`, and returns it.
async fn wait_for_hash(
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
    done: impl Fn(&HashMap<String, String>) -> bool,
) -> HashMap<String, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let hash = hgetall(redis, key).await;
        if done(&hash) {
            return hash;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never reached the expected content: {hash:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn json_field(hash: &HashMap<String, String>, field: &str) -> Value {
    serde_json::from_str(
        hash.get(field)
            .unwrap_or_else(|| panic!("no {field} in {hash:?}")),
    )
    .unwrap_or_else(|e| panic!("{field} is not JSON: {e}"))
}

/// Deletes every key of one workspace: the test's own prefix on the shared
/// Redis, never the whole database.
async fn flush_workspace(redis: &mut redis::aio::MultiplexedConnection, workspace: &str) -> usize {
    let pattern = format!("enrich:{}:{workspace}:*", workspace.len());
    let keys: Vec<String> = redis.keys(&pattern).await.expect("KEYS");
    if !keys.is_empty() {
        let _: () = redis.del(&keys).await.expect("DEL");
    }
    keys.len()
}

/// The test's one customer.
async fn the_customer(app: &TestApp) -> uuid::Uuid {
    sqlx::query_scalar("SELECT id FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("one customer")
}

async fn email_asks(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM enrich.asks WHERE field = 'email'")
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_documented_keys_hold_the_profile_the_asks_and_the_turns() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    // A colon in both ids: the length prefix keeps the keys apart.
    let ws = format!("{}:a", unique("ws"));
    let conversation = "conv:1";
    app.publish(&[
        chat(
            &ws,
            "m1",
            conversation,
            "u1",
            "customer",
            "Hi, my name is Ana Souza",
        ),
        chat(
            &ws,
            "m2",
            conversation,
            "u1",
            "bot",
            "Hello Ana! How can I help?",
        ),
        chat(
            &ws,
            "m3",
            conversation,
            "u1",
            "customer",
            "Could you send me the price list?",
        ),
    ])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 3, WAIT)
        .await;
    app.wait_for_count("SELECT count(*) FROM enrich.asks", 1, WAIT)
        .await;
    let customer_id = the_customer(&app).await;
    let version: i64 = sqlx::query_scalar("SELECT state_version FROM enrich.customers")
        .fetch_one(&app.pool)
        .await
        .expect("version");
    let mut redis = app.redis().await;

    // The customer's profile.
    let profile_key = key(&ws, "profile", &customer_id.to_string());
    let profile = wait_for_hash(&mut redis, &profile_key, |hash| {
        hash.get("version") == Some(&version.to_string())
    })
    .await;
    assert_eq!(profile["customer_id"], customer_id.to_string());
    assert_eq!(profile["field:name"], "Ana Souza");
    assert_eq!(profile["source:name"], "customer");
    assert!(!profile.contains_key("field:email"), "{profile:?}");
    assert_eq!(json_field(&profile, "missing_required"), json!(["email"]));
    assert_eq!(json_field(&profile, "declined"), json!([]));
    assert_eq!(json_field(&profile, "ask_counts"), json!({"email": 1}));
    assert_eq!(json_field(&profile, "tags"), json!([]));
    assert!(!profile.contains_key("agent_instructions"));
    let ttl: i64 = redis.ttl(&profile_key).await.expect("TTL");
    assert!(ttl > 0, "the profile has a TTL, got {ttl}");

    // The conversation's ask state.
    let conversation_key = key(&ws, "conversation", conversation);
    let state = wait_for_hash(&mut redis, &conversation_key, |hash| {
        hash.get("version") == Some(&version.to_string())
    })
    .await;
    assert_eq!(state["customer_id"], customer_id.to_string());
    assert_eq!(state["profile_key"], profile_key);
    assert_eq!(state["messages"], "3");
    assert_eq!(
        json_field(&state, "asks"),
        json!([{"field": "email", "customer_turn": 2, "pending": true}])
    );
    let ttl: i64 = redis.ttl(&conversation_key).await.expect("TTL");
    assert!(ttl > 0, "the conversation hash has a TTL, got {ttl}");

    // Its last turns, oldest first.
    let turns_key = key(&ws, "turns", conversation);
    let turns: Vec<String> = redis.lrange(&turns_key, 0, -1).await.expect("LRANGE");
    let turns: Vec<Value> = turns
        .iter()
        .map(|t| serde_json::from_str(t).expect("turn JSON"))
        .collect();
    let said: Vec<(&str, &str)> = turns
        .iter()
        .map(|t| {
            (
                t["sender"].as_str().expect("sender"),
                t["text"].as_str().expect("text"),
            )
        })
        .collect();
    assert_eq!(
        said,
        vec![
            ("customer", "Hi, my name is Ana Souza"),
            ("bot", "Hello Ana! How can I help?"),
            ("customer", "Could you send me the price list?"),
        ]
    );
    let ids: Vec<i64> = turns
        .iter()
        .map(|t| t["message_id"].as_i64().expect("message_id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let ttl: i64 = redis.ttl(&turns_key).await.expect("TTL");
    assert!(ttl > 0, "the turns list has a TTL, got {ttl}");

    // Nothing else of the workspace is stored, and no key escapes its prefix.
    let mut keys: Vec<String> = redis
        .keys(format!("enrich:{}:{ws}:*", ws.len()))
        .await
        .expect("KEYS");
    keys.sort();
    let mut expected = vec![profile_key, conversation_key, turns_key];
    expected.sort();
    assert_eq!(keys, expected);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn emptying_redis_mid_conversation_repeats_no_ask_and_loses_no_fact() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[chat(
        &ws,
        "m1",
        "c1",
        "u1",
        "customer",
        "Hi, my name is Ana Souza. Could you send me the price list?",
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.asks", 1, WAIT)
        .await;
    let customer_id = the_customer(&app).await;
    let mut redis = app.redis().await;
    let profile_key = key(&ws, "profile", &customer_id.to_string());
    wait_for_hash(&mut redis, &profile_key, |hash| {
        hash.contains_key("field:name")
    })
    .await;

    // Redis is emptied (restarted, flushed): only this test's keys here.
    assert!(flush_workspace(&mut redis, &ws).await >= 3);

    // The same trigger again: with the ask state lost, the core would ask again.
    app.publish(&[chat(
        &ws,
        "m2",
        "c1",
        "u1",
        "customer",
        "and the price list for chairs, please",
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 2, WAIT)
        .await;
    // The worker rebuilt the profile from Postgres with what it knew.
    let profile = wait_for_hash(&mut redis, &profile_key, |hash| {
        hash.contains_key("field:name")
    })
    .await;
    assert_eq!(profile["field:name"], "Ana Souza");
    assert_eq!(json_field(&profile, "ask_counts"), json!({"email": 1}));
    let state = wait_for_hash(&mut redis, &key(&ws, "conversation", "c1"), |hash| {
        hash.contains_key("asks") && hash.get("messages").map(String::as_str) == Some("2")
    })
    .await;
    assert_eq!(
        json_field(&state, "asks"),
        json!([{"field": "email", "customer_turn": 1, "pending": true}])
    );
    let turns: Vec<String> = redis
        .lrange(key(&ws, "turns", "c1"), 0, -1)
        .await
        .expect("LRANGE");
    assert_eq!(turns.len(), 2, "the turns list is rebuilt whole: {turns:?}");
    assert_eq!(email_asks(&app).await, 1, "the email ask was not repeated");
    let name: String =
        sqlx::query_scalar("SELECT value FROM enrich.customer_fields WHERE field = 'name'")
            .fetch_one(&app.pool)
            .await
            .expect("name");
    assert_eq!(name, "Ana Souza");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_copy_put_back_into_redis_is_not_acted_on() {
    let app = TestApp::new().await;
    let worker = app.start_worker().await;
    let ws = unique("ws");
    app.publish(&[chat(
        &ws,
        "m1",
        "c1",
        "u1",
        "customer",
        "Hi, my name is Ana Souza",
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.customer_fields", 1, WAIT)
        .await;
    let customer_id = the_customer(&app).await;
    let profile_key = key(&ws, "profile", &customer_id.to_string());
    let conversation_key = key(&ws, "conversation", "c1");
    let mut redis = app.redis().await;
    wait_for_hash(&mut redis, &profile_key, |hash| {
        hash.contains_key("field:name")
    })
    .await;
    wait_for_hash(&mut redis, &conversation_key, |hash| {
        hash.contains_key("asks")
    })
    .await;
    // A copy from before the ask.
    let old_profile: Vec<u8> = redis::cmd("DUMP")
        .arg(&profile_key)
        .query_async(&mut redis)
        .await
        .expect("DUMP");
    let old_conversation: Vec<u8> = redis::cmd("DUMP")
        .arg(&conversation_key)
        .query_async(&mut redis)
        .await
        .expect("DUMP");

    app.publish(&[chat(
        &ws,
        "m2",
        "c1",
        "u1",
        "customer",
        "Could you send me the price list?",
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.asks", 1, WAIT)
        .await;
    wait_for_hash(&mut redis, &profile_key, |hash| {
        hash.get("ask_counts").map(String::as_str) == Some("{\"email\":1}")
    })
    .await;

    // Something puts the old copy back (a lagging replica, a restored backup).
    for (key, dump) in [
        (&profile_key, old_profile),
        (&conversation_key, old_conversation),
    ] {
        let () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump)
            .arg("REPLACE")
            .query_async(&mut redis)
            .await
            .expect("RESTORE");
    }
    assert_eq!(
        json_field(&hgetall(&mut redis, &conversation_key).await, "asks"),
        json!([])
    );

    app.publish(&[chat(
        &ws,
        "m3",
        "c1",
        "u1",
        "customer",
        "the price list for tables too",
    )])
    .await;
    app.wait_for_count("SELECT count(*) FROM enrich.messages", 3, WAIT)
        .await;
    let state = wait_for_hash(&mut redis, &conversation_key, |hash| {
        hash.get("asks").is_some_and(|asks| asks != "[]")
    })
    .await;
    assert_eq!(
        json_field(&state, "asks"),
        json!([{"field": "email", "customer_turn": 2, "pending": true}])
    );
    assert_eq!(
        email_asks(&app).await,
        1,
        "the stale copy did not cause a second ask"
    );
    let profile = hgetall(&mut redis, &profile_key).await;
    assert_eq!(profile["field:name"], "Ana Souza");
    worker.stop().await;
}

/// Removing a workspace's keys (what `enricher bench` does with its own)
/// leaves every other workspace's keys alone, also one whose id differs
/// only where the first has a glob character.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn removing_a_workspace_deletes_its_keys_and_no_others() {
    let app = TestApp::new().await;
    let mut redis = app.redis().await;
    let removed = format!("{}*", unique("ws"));
    let kept = [removed.replace('*', "x"), unique("ws")];
    for workspace in std::iter::once(&removed).chain(&kept) {
        for n in 0..1_500 {
            let _: () = redis
                .set(key(workspace, "turns", &format!("c-{n}")), "[]")
                .await
                .expect("SET");
        }
        let _: () = redis
            .hset(key(workspace, "profile", "p-1"), "version", 1)
            .await
            .expect("HSET");
    }
    let cache = enricher::state::Cache::connect(&app.settings().redis)
        .await
        .expect("redis");

    let count = cache.remove_workspace(&removed).await.expect("remove");

    assert_eq!(count, 1_501);
    for workspace in std::iter::once(&removed).chain(&kept) {
        let pattern = format!(
            "enrich:{}:{}:*",
            workspace.len(),
            workspace.replace('*', "\\*")
        );
        let left: Vec<String> = redis.keys(&pattern).await.expect("KEYS");
        let expected = if *workspace == removed { 0 } else { 1_501 };
        assert_eq!(left.len(), expected, "{workspace}");
    }
}
