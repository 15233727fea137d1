//! `enricher tokens create|list|revoke`: the API's bearer tokens. A token is
//! printed once, when it is created; only its SHA-256 is stored.

use anyhow::Context;

use crate::api::auth::{self, Scope};
use crate::config::Settings;
use crate::store::{self, chat, tokens};

/// `enricher tokens …`.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        /// The workspace the token reaches.
        #[arg(long)]
        workspace: String,
        /// What it may do (repeatable; `read` is always included).
        #[arg(long, value_enum)]
        scope: Vec<Scope>,
        /// Who holds it; recorded as the actor of its writes.
        #[arg(long)]
        name: Option<String>,
    },
    /// List a workspace's tokens (never the tokens themselves).
    List {
        /// The workspace.
        #[arg(long)]
        workspace: String,
    },
    /// Revoke a token by name or id.
    Revoke {
        /// The workspace.
        #[arg(long)]
        workspace: String,
        /// The token's name or id.
        token: String,
    },
}

/// Runs one `tokens` subcommand.
pub async fn run(settings: &Settings, command: TokensCommand) -> anyhow::Result<()> {
    store::migrate_before_pools(&settings.postgres)
        .await
        .context("applying migrations")?;
    let pool = store::connect(&settings.postgres)
        .await
        .context("connecting to postgres")?;
    let mut conn = pool.acquire().await.context("connecting to postgres")?;
    match command {
        TokensCommand::Create {
            workspace,
            scope,
            name,
        } => {
            let name = name.unwrap_or_else(|| {
                format!("token-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
            });
            let defaults = chat::WorkspaceDefaults {
                enrichment: true,
                default_region: None,
            };
            let workspace_settings = settings.workspaces.for_workspace(&workspace);
            let defaults = match workspace_settings {
                Some(ws) => chat::WorkspaceDefaults {
                    enrichment: ws.enrichment,
                    default_region: ws.default_region.as_deref(),
                },
                None => defaults,
            };
            chat::ensure_workspace(&mut conn, &workspace, defaults)
                .await
                .context("recording the workspace")?;
            let token = auth::generate_token();
            let scopes = auth::stored_scopes(&scope);
            let stored = tokens::insert(
                &mut conn,
                &workspace,
                &name,
                &scopes,
                &auth::token_hash(&token),
            )
            .await
            .with_context(|| {
                format!(
                    "creating the token (is `{name}` already an active token of `{workspace}`?)"
                )
            })?;
            eprintln!(
                "enricher: token `{}` for workspace `{}` with scopes {} (shown once; store it now)",
                stored.name,
                stored.workspace_id,
                stored.scopes.join(",")
            );
            println!("{token}");
        }
        TokensCommand::List { workspace } => {
            let listed = tokens::list(&mut conn, &workspace).await?;
            println!(
                "{:<36}  {:<24}  {:<15}  {:<20}  state",
                "id", "name", "scopes", "created"
            );
            for token in listed {
                println!(
                    "{:<36}  {:<24}  {:<15}  {:<20}  {}",
                    token.id,
                    token.name,
                    token.scopes.join(","),
                    token.created_at.format("%Y-%m-%d %H:%M UTC"),
                    match token.revoked_at {
                        Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M UTC")),
                        None => match token.last_used_at {
                            Some(at) =>
                                format!("active, last used {}", at.format("%Y-%m-%d %H:%M UTC")),
                            None => "active, never used".to_owned(),
                        },
                    }
                );
            }
        }
        TokensCommand::Revoke { workspace, token } => {
            anyhow::ensure!(
                tokens::revoke(&mut conn, &workspace, &token).await?,
                "no active token `{token}` in workspace `{workspace}`"
            );
            eprintln!("enricher: token `{token}` of `{workspace}` revoked");
        }
    }
    drop(conn);
    pool.close().await;
    Ok(())
}
