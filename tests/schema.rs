//! The schema as the migrations build it: the readable snapshot in
//! `schema/schema.sql` matches a freshly migrated database, and what the
//! schema repeats of the Rust code (source ranks, the model queue's states)
//! agrees with it.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{TestApp, repo_root};
use enricher::decide::policy::Source;
use enricher::store::model_queue::AiStatus;

const REGENERATE: &str = "scripts/schema-snapshot";

#[tokio::test]
async fn the_committed_schema_snapshot_matches_a_freshly_migrated_database() {
    let app = TestApp::new().await;
    let root = repo_root();
    let output = Command::new(root.join(REGENERATE))
        .arg("--dump")
        .arg(&app.database_url)
        .output()
        .expect("run scripts/schema-snapshot --dump");
    assert!(
        output.status.success(),
        "{REGENERATE} --dump failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let migrated = String::from_utf8(output.stdout).expect("utf-8 dump");
    assert!(
        migrated.contains("CREATE TABLE enrich.messages"),
        "the dump has the schema: {migrated}"
    );
    let snapshot_path = root.join("schema/schema.sql");
    let committed = std::fs::read_to_string(&snapshot_path).expect("read schema/schema.sql");
    // The snapshot is its header comment, a blank line, then the dump.
    let (_, committed_dump) = committed
        .split_once("\n\n")
        .expect("schema/schema.sql has a header and a dump");
    if committed_dump != migrated {
        let dir = std::env::temp_dir();
        let old = dir.join(format!("{}-committed.sql", app.ns));
        let new = dir.join(format!("{}-migrated.sql", app.ns));
        std::fs::write(&old, committed_dump).expect("write the committed dump");
        std::fs::write(&new, &migrated).expect("write the fresh dump");
        let diff = Command::new("diff")
            .args(["-u", "--label", "schema/schema.sql", "--label", "migrated"])
            .arg(&old)
            .arg(&new)
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
            .unwrap_or_else(|error| format!("(diff unavailable: {error})"));
        let _ = std::fs::remove_file(&old);
        let _ = std::fs::remove_file(&new);
        panic!(
            "schema/schema.sql differs from what the migrations build; \
             run `{REGENERATE}` and commit the result.\n{diff}"
        );
    }
}

#[tokio::test]
async fn postgres_ranks_every_source_as_the_decision_core_does() {
    let app = TestApp::new().await;
    for source in Source::ALL {
        let rank: i16 = sqlx::query_scalar("SELECT enrich.source_rank($1)")
            .bind(source.as_str())
            .fetch_one(&app.pool)
            .await
            .expect("source_rank");
        assert_eq!(
            rank,
            i16::from(source.rank()),
            "enrich.source_rank('{}') disagrees with Source::rank",
            source.as_str()
        );
    }
    // And the sources a stored value may carry are exactly these.
    let allowed = check_values(&app, "enrich.customer_fields", "source").await;
    let known: BTreeSet<String> = Source::ALL.iter().map(|s| s.as_str().to_owned()).collect();
    assert_eq!(allowed, known);
}

#[tokio::test]
async fn the_model_queue_states_are_the_ones_the_worker_knows() {
    let app = TestApp::new().await;
    let allowed = check_values(&app, "enrich.messages", "ai_status").await;
    let known: BTreeSet<String> = AiStatus::ALL
        .iter()
        .map(|s| s.as_str().to_owned())
        .collect();
    assert_eq!(allowed, known);
    let claimed_at: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.columns
          WHERE table_schema = 'enrich' AND table_name = 'messages' AND column_name = 'ai_claimed_at'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("columns");
    assert_eq!(claimed_at, 0, "ai_claimed_at is gone");
}

/// The values the CHECK constraint on `table.column` allows.
async fn check_values(app: &TestApp, table: &str, column: &str) -> BTreeSet<String> {
    let definitions: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint
          WHERE conrelid = $1::regclass AND contype = 'c'",
    )
    .bind(table)
    .fetch_all(&app.pool)
    .await
    .expect("constraints");
    let definition = definitions
        .iter()
        .find(|definition| definition.contains(&format!("({column} = ANY")))
        .unwrap_or_else(|| panic!("no CHECK on {table}.{column} in {definitions:?}"));
    let value = regex::Regex::new(r"'([^']*)'::text").expect("regex");
    value
        .captures_iter(definition)
        .map(|captures| captures[1].to_owned())
        .collect()
}
