//! Customer search takes one of two query shapes for a part of a name: a
//! common part walks the customers newest first, a rare one reads every
//! match and sorts. Both must return exactly the page a plain query gives.

mod common;

use common::TestApp;
use enricher::store::search::{self, Matchers, Search};
use uuid::Uuid;

/// The first `limit` customers of `workspace` whose name contains `part`
/// (case-insensitive), newest activity first: the answer by brute force.
async fn expected(app: &TestApp, workspace: &str, part: &str, limit: i64) -> Vec<Uuid> {
    sqlx::query_scalar(
        "SELECT c.id FROM enrich.customers c
           JOIN enrich.customer_fields f ON f.customer_id = c.id AND f.field = 'name'
          WHERE c.workspace_id = $1 AND lower(f.value) LIKE '%' || lower($2) || '%'
          ORDER BY coalesce(c.last_seen_at, c.created_at) DESC, c.id DESC
          LIMIT $3",
    )
    .bind(workspace)
    .bind(part)
    .bind(limit)
    .fetch_all(&app.pool)
    .await
    .expect("reference query")
}

async fn found(app: &TestApp, workspace: &str, part: &str, after: Option<Uuid>) -> Vec<Uuid> {
    let mut conn = app.pool.acquire().await.expect("connection");
    let after = match after {
        Some(id) => Some(
            sqlx::query_as::<_, (chrono::DateTime<chrono::Utc>, Uuid)>(
                "SELECT coalesce(last_seen_at, created_at), id FROM enrich.customers WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .expect("cursor row"),
        ),
        None => None,
    };
    let rows = search::customers(
        &mut conn,
        &Search {
            workspace_id: workspace.to_owned(),
            matchers: Some(Matchers {
                name_contains: Some(part.to_owned()),
                platform_user_id: Some(part.to_owned()),
                ..Matchers::default()
            }),
            after,
            limit: 50,
            ..Search::default()
        },
    )
    .await
    .expect("search");
    rows.into_iter().map(|row| row.customer_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_and_rare_name_parts_give_the_same_pages_as_a_plain_query() {
    let app = TestApp::new().await;
    let workspace = common::unique("ws");
    enricher::cli::bench::load_search_customers(&app.pool, &workspace, 3_000)
        .await
        .expect("customers loaded");
    sqlx::query("ANALYZE")
        .execute(&app.pool)
        .await
        .expect("analyze");

    // "a" is in most names (the walked shape); "Grace Lee" in a few.
    for part in ["a", "Grace Lee", "nobody-has-this"] {
        let all = expected(&app, &workspace, part, 100).await;
        let first = found(&app, &workspace, part, None).await;
        assert_eq!(first, all[..all.len().min(50)], "first page of {part:?}");
        if all.len() > 50 {
            let second = found(&app, &workspace, part, first.last().copied()).await;
            assert_eq!(second, all[50..], "second page of {part:?}");
        }
    }
    let common = expected(&app, &workspace, "a", 2_000).await.len();
    assert!(
        common >= 1_000,
        "\"a\" is common enough to walk ({common} matches)"
    );
}
