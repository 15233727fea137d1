//! Creates a workspace's row before the first batch that names it. A batch's
//! transaction inserts its workspaces' rows when they are missing; while a
//! new row is uncommitted, every other lane's insert of the same row waits
//! for that transaction to end, so a workspace's first events would pass
//! through the lanes one transaction at a time. Created in a transaction of
//! its own, the row is committed before any batch needs it, and the batch's
//! own insert stays as the guarantee (a workspace deleted since is created
//! again there).

use std::collections::HashSet;
use std::sync::Mutex;

use sqlx::PgPool;

use crate::store::chat;
use crate::workspaces::Workspaces;

/// The workspaces whose rows this worker has seen committed.
#[derive(Default)]
pub struct WorkspaceRows {
    known: Mutex<HashSet<String>>,
}

impl WorkspaceRows {
    /// Creates the rows of `workspace_ids` not seen before, each in its own
    /// short transaction. A failure is left to the batch's transaction,
    /// which inserts the row too (and retries or reports the fault).
    pub async fn ensure<'a>(
        &self,
        pool: &PgPool,
        workspaces: &Workspaces,
        workspace_ids: impl IntoIterator<Item = &'a str>,
    ) {
        let missing: Vec<&str> = match self.known.lock() {
            Ok(known) => {
                let mut missing: Vec<&str> = Vec::new();
                for id in workspace_ids {
                    if !known.contains(id) && !missing.contains(&id) {
                        missing.push(id);
                    }
                }
                missing
            }
            Err(_) => return,
        };
        for id in missing {
            let Some(workspace) = workspaces.get(id) else {
                continue;
            };
            let created = match pool.acquire().await {
                Ok(mut conn) => chat::ensure_workspace(&mut conn, id, workspace.defaults()).await,
                Err(error) => Err(error.into()),
            };
            match created {
                Ok(()) => {
                    if let Ok(mut known) = self.known.lock() {
                        known.insert(id.to_owned());
                    }
                }
                Err(error) => {
                    tracing::debug!(error = %error, "workspace row left to the batch's transaction");
                }
            }
        }
    }
}
