//! The binary's start-up contract: a bad setting stops it with one line that
//! names the key, and secrets never appear in that line.

use std::process::Command;

fn enricher(envs: &[(&str, &str)], args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_enricher"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .envs(envs.iter().copied())
        .output()
        .expect("enricher runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_bad_value_fails_start_up_with_one_line_naming_the_key() {
    let (code, stderr) = enricher(&[("ENRICHER__WORKER__LANES", "0")], &["migrate"]);
    assert_eq!(code, 2);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("worker.lanes"), "{stderr}");

    let (code, stderr) = enricher(
        &[("ENRICHER__POSTGRES__URL", "mysql://root:hunter2@db/x")],
        &["run"],
    );
    assert_eq!(code, 2);
    assert!(stderr.contains("postgres.url"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}

#[test]
fn schema_and_prompts_check_succeed_on_the_shipped_files() {
    let (code, stderr) = enricher(&[], &["schema"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = enricher(&[], &["prompts", "check"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = enricher(&[], &["prompts", "check", "/nonexistent-prompts"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("nonexistent-prompts"), "{stderr}");
}
