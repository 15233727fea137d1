//! The model queue on a real database: customer messages stored pending are
//! read back in pages, and a message is finished once, only while pending.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{TestApp, unique};
use enricher::event::{ChatMessage, Envelope, Platform, Sender};
use enricher::store::chat::{self, ModelHandoff, Recorded, StoredMessage, WorkspaceDefaults};
use enricher::store::model_queue::{self, AiStatus, PendingMessage};

/// Stores customer message `n` of conversation `conversation` marked pending.
async fn store_pending(app: &TestApp, ws: &str, conversation: &str, n: usize) -> StoredMessage {
    let envelope = Envelope {
        id: format!("{conversation}-m{n}"),
        version: 1,
        workspace_id: ws.to_owned(),
        occurred_at: Utc::now(),
    };
    let message = ChatMessage {
        conversation_id: conversation.to_owned(),
        platform: Platform::Web,
        platform_user_id: format!("user-{conversation}"),
        sender: Sender::Customer,
        text: format!("message {n}"),
        agent_id: None,
        visitor: None,
        identity_hint: None,
        source: None,
        first_message_tag: None,
    };
    let defaults = WorkspaceDefaults {
        enrichment: true,
        default_region: None,
    };
    let mut tx = app.pool.begin().await.expect("begin");
    let recorded = chat::record_message(
        &mut tx,
        &envelope,
        &message,
        defaults,
        ModelHandoff::Pending { recent_turns: 2 },
    )
    .await
    .expect("record");
    tx.commit().await.expect("commit");
    match recorded {
        Recorded::Stored(stored) => *stored,
        Recorded::Duplicate => panic!("a new event id is not a duplicate"),
    }
}

async fn all_pending(app: &TestApp, page: u32) -> Vec<Vec<i64>> {
    let mut pages = Vec::new();
    let mut after = 0;
    loop {
        let found: Vec<PendingMessage> =
            model_queue::pending_page(&app.pool, Duration::ZERO, after, page)
                .await
                .expect("pending page");
        let ids: Vec<i64> = found.iter().map(|m| m.message_id).collect();
        if let Some(last) = ids.last() {
            after = *last;
        }
        let last_page = ids.len() < page as usize;
        pages.push(ids);
        if last_page {
            return pages;
        }
    }
}

#[tokio::test]
async fn pending_messages_are_read_in_pages_and_finished_once() {
    let app = TestApp::new().await;
    let ws = unique("ws");
    let mut stored = Vec::new();
    for n in 0..5 {
        let conversation = if n % 2 == 0 { "c-even" } else { "c-odd" };
        stored.push(store_pending(&app, &ws, conversation, n).await);
    }
    let ids: Vec<i64> = stored.iter().map(|s| s.message_id).collect();

    // Pages of two, oldest first, the last one short.
    let pages = all_pending(&app, 2).await;
    assert_eq!(
        pages,
        vec![ids[0..2].to_vec(), ids[2..4].to_vec(), ids[4..].to_vec()]
    );
    let first: Vec<PendingMessage> = model_queue::pending_page(&app.pool, Duration::ZERO, 0, 1)
        .await
        .expect("first page");
    assert_eq!(first[0].workspace_id, ws);
    assert_eq!(first[0].conversation, "c-even");
    assert_eq!(first[0].event_id, "c-even-m0");
    assert_eq!(first[0].customer_id, stored[0].customer_id);
    assert_eq!(first[0].customer_turn, Some(1));
    assert_eq!(first[0].text, "message 0");
    // Messages stored less than an hour ago are not an hour old.
    let old = model_queue::pending_page(&app.pool, Duration::from_secs(3600), 0, 10)
        .await
        .expect("old page");
    assert!(old.is_empty(), "{old:?}");

    // A message is finished once; a second finisher writes nothing.
    assert!(
        model_queue::finish(&app.pool, ids[1], AiStatus::Skipped)
            .await
            .expect("finish")
    );
    assert!(
        !model_queue::finish(&app.pool, ids[1], AiStatus::Failed)
            .await
            .expect("late finish")
    );
    let status: Option<AiStatus> =
        sqlx::query_scalar("SELECT ai_status FROM enrich.messages WHERE id = $1")
            .bind(ids[1])
            .fetch_one(&app.pool)
            .await
            .expect("status");
    assert_eq!(status, Some(AiStatus::Skipped));

    // An unmarked message leaves the queue too.
    let mut conn = app.pool.acquire().await.expect("connection");
    model_queue::unmark(&mut conn, ids[3])
        .await
        .expect("unmark");
    drop(conn);
    assert_eq!(
        all_pending(&app, 10).await,
        vec![vec![ids[0], ids[2], ids[4]]]
    );
}
