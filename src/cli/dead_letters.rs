//! `enricher dead-letters list|replay|purge`: the operator's view of the
//! events the worker could not handle, kept in `enrich.dead_letters` by the
//! worker's dead-letter sink. Replay publishes an event to the inbound
//! exchange again (after a fix, or once what it referred to exists) and
//! removes its row once the broker confirmed it; purge removes rows.

use std::io::Write;

use anyhow::Context;

use crate::cli::send::EventSender;
use crate::config::Settings;
use crate::store::{self, dead_letters};

/// Rows one command handles at most when no limit is given.
const DEFAULT_LIMIT: i64 = 1000;

/// Which dead letters a command takes.
#[derive(Debug, clap::Args)]
pub struct Selection {
    /// Row ids (from `list`).
    pub ids: Vec<i64>,
    /// Every dead letter (with `--workspace`, every one of that workspace).
    #[arg(long)]
    pub all: bool,
    /// Only this workspace's.
    #[arg(long)]
    pub workspace: Option<String>,
    /// At most this many, oldest first.
    #[arg(long, default_value_t = DEFAULT_LIMIT)]
    pub limit: i64,
}

/// `enricher dead-letters …`.
#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// Print dead letters, oldest first: id, time, workspace, type, event id, reason.
    List {
        /// Only this workspace's.
        #[arg(long)]
        workspace: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = DEFAULT_LIMIT)]
        limit: i64,
        /// Also print each event's body (it may hold personal data).
        #[arg(long)]
        body: bool,
    },
    /// Publish dead letters to the inbound exchange again and remove them.
    Replay(Selection),
    /// Remove dead letters for good.
    Purge(Selection),
}

/// Runs one `dead-letters` subcommand.
pub async fn run(settings: &Settings, command: DeadLettersCommand) -> anyhow::Result<()> {
    let pool = store::connect(&settings.postgres)
        .await
        .context("connecting to postgres")?;
    let mut out = std::io::stdout().lock();
    match command {
        DeadLettersCommand::List {
            workspace,
            limit,
            body,
        } => {
            let filter = dead_letters::Filter {
                workspace_id: workspace.as_deref(),
                ids: &[],
                limit,
            };
            for letter in dead_letters::list(&pool, &filter).await? {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    letter.id,
                    letter
                        .dead_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    letter.workspace_id.as_deref().unwrap_or("-"),
                    letter.event_type.as_deref().unwrap_or("-"),
                    letter.event_id.as_deref().unwrap_or("-"),
                    letter.reason,
                )?;
                if body {
                    writeln!(out, "\t{}", String::from_utf8_lossy(&letter.body))?;
                }
            }
        }
        DeadLettersCommand::Replay(selection) => {
            let letters = select(&pool, &selection).await?;
            let mut sender = EventSender::connect(&settings.amqp)
                .await
                .context("connecting to rabbitmq")?;
            for letter in &letters {
                sender.send(&letter.body).await?;
            }
            sender.finish().await.context("waiting for the broker")?;
            let ids: Vec<i64> = letters.iter().map(|l| l.id).collect();
            dead_letters::remove(&pool, &ids).await?;
            writeln!(out, "replayed {} dead letters", ids.len())?;
        }
        DeadLettersCommand::Purge(selection) => {
            let letters = select(&pool, &selection).await?;
            let ids: Vec<i64> = letters.iter().map(|l| l.id).collect();
            let removed = dead_letters::remove(&pool, &ids).await?;
            writeln!(out, "purged {removed} dead letters")?;
        }
    }
    Ok(())
}

async fn select(
    pool: &sqlx::PgPool,
    selection: &Selection,
) -> anyhow::Result<Vec<dead_letters::DeadLetter>> {
    if selection.ids.is_empty() && !selection.all {
        anyhow::bail!("name the dead letters by id, or pass --all");
    }
    let filter = dead_letters::Filter {
        workspace_id: selection.workspace.as_deref(),
        ids: &selection.ids,
        limit: selection.limit,
    };
    Ok(dead_letters::list(pool, &filter).await?)
}
