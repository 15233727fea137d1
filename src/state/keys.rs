//! Redis key names: the read contract documented in `docs/redis.md`.
//!
//! Every key starts with `enrich:`, then the workspace id prefixed by its
//! length in bytes (`enrich:4:acme:`), then the kind of key and the id it is
//! about, which is always the last part. Reading the length first tells where
//! the workspace id ends whatever characters it holds, and the id at the end
//! runs to the end of the key, so two different (workspace, kind, id) triples
//! never share a key, even when the ids contain `:`.

use uuid::Uuid;

/// The part every key of a workspace starts with: `enrich:{len}:{workspace}:`.
pub fn workspace_prefix(workspace_id: &str) -> String {
    format!("enrich:{}:{workspace_id}:", workspace_id.len())
}

/// Key of a customer's hot profile (a hash).
pub fn profile(workspace_id: &str, customer_id: Uuid) -> String {
    format!("{}profile:{customer_id}", workspace_prefix(workspace_id))
}

/// Key of a conversation's ask state (a hash).
pub fn conversation(workspace_id: &str, conversation: &str) -> String {
    format!(
        "{}conversation:{conversation}",
        workspace_prefix(workspace_id)
    )
}

/// Key of a conversation's last turns (a list).
pub fn turns(workspace_id: &str, conversation: &str) -> String {
    format!("{}turns:{conversation}", workspace_prefix(workspace_id))
}

/// A `SCAN`/`KEYS` pattern matching every key of a workspace: glob
/// characters in the workspace id are escaped.
pub fn workspace_pattern(workspace_id: &str) -> String {
    let mut pattern = String::new();
    for ch in workspace_prefix(workspace_id).chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(ch);
    }
    pattern.push('*');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_with_colons_do_not_collide_across_workspaces() {
        // Without the length, both would be `enrich:a:b:turns:c`.
        assert_ne!(turns("a:b", "c"), turns("a", "b:turns:c"));
        assert_ne!(conversation("a", "b"), conversation("a:", "b"));
        assert_ne!(
            conversation("w", "x"),
            turns("w", "x"),
            "kinds are told apart"
        );
        assert_eq!(turns("acme", "c:1"), "enrich:4:acme:turns:c:1");
    }

    #[test]
    fn the_length_counts_bytes() {
        assert_eq!(workspace_prefix("é"), "enrich:2:é:");
    }

    #[test]
    fn the_workspace_pattern_escapes_glob_characters() {
        assert_eq!(workspace_pattern("w*"), "enrich:2:w\\*:*");
        assert_eq!(workspace_pattern("plain"), "enrich:5:plain:*");
    }
}
