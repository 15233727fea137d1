//! `enricher status`: one screen for an operator of a running deployment:
//! queue depths and consumers (read with passive declares over AMQP, so no
//! management plugin is needed), the newest dead-letter reasons (peeked:
//! read without acknowledging and handed back to the queue), the model
//! stage's backlog and failures, the outbox backlog, model calls and tokens
//! over the last hour and day, and the prompt version in use. `--json`
//! prints the same as one JSON object for scripts.

use std::collections::BTreeMap;

use anyhow::Context;
use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use serde::Serialize;

use crate::config::Settings;
use crate::llm::prompts::Prompts;
use crate::queue::{self, ERROR_HEADER, topology};
use crate::store::status::{self, CallWindow};
use crate::store::{self};

/// Dead letters read to find the newest reasons.
const DEAD_LETTERS_PEEKED: usize = 200;
/// Reasons shown.
const REASONS_SHOWN: usize = 10;

/// `enricher status` options.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// One queue's depth and consumers; `None` counts when it does not exist.
#[derive(Debug, Serialize)]
pub struct QueueStatus {
    /// Its role: `work`, `retry` or `dead`.
    pub role: &'static str,
    /// Its name.
    pub name: String,
    /// Messages ready in it.
    pub messages: Option<u32>,
    /// Consumers attached.
    pub consumers: Option<u32>,
}

/// Everything `enricher status` reports.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Work, retry and dead-letter queues.
    pub queues: Vec<QueueStatus>,
    /// The newest dead-letter reasons among the first [`DEAD_LETTERS_PEEKED`], newest last.
    pub dead_letter_reasons: Vec<String>,
    /// Dead letters read to find them.
    pub dead_letters_peeked: usize,
    /// Outbound events not yet confirmed by the broker.
    pub outbox_backlog: i64,
    /// Messages waiting for the model.
    pub model_pending: i64,
    /// Enrichment calls that failed in the last hour.
    pub model_failed_last_hour: i64,
    /// Asks by outcome.
    pub asks_by_outcome: BTreeMap<String, i64>,
    /// Model calls over the last hour, by purpose.
    pub llm_last_hour: Vec<CallWindow>,
    /// Model calls over the last day, by purpose.
    pub llm_last_day: Vec<CallWindow>,
    /// Prompt version of the templates on disk (`llm.prompts_dir`).
    pub prompt_version_configured: Option<String>,
    /// Prompt version of the newest enrichment call.
    pub prompt_version_last_used: Option<String>,
}

/// Gathers and prints the status.
pub async fn run(settings: &Settings, args: StatusArgs) -> anyhow::Result<()> {
    let status = gather(settings).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", render(&status));
    }
    Ok(())
}

/// Reads the broker and Postgres.
pub async fn gather(settings: &Settings) -> anyhow::Result<Status> {
    let pool = store::connect(&settings.postgres)
        .await
        .context("connecting to postgres")?;
    let backlogs = status::backlogs(&pool).await?;
    let usage = status::model_usage(&pool).await?;
    // The dead-letter sink moves what reaches the dead-letter queue into
    // Postgres; the queue holds only what it has not taken yet.
    let stored_reasons = store::dead_letters::newest_reasons(&pool, REASONS_SHOWN as i64).await?;
    pool.close().await;
    let (queues, peeked_reasons, peeked) = broker_status(settings).await?;
    let mut reasons = stored_reasons;
    reasons.extend(peeked_reasons);
    let reasons = reasons.split_off(reasons.len().saturating_sub(REASONS_SHOWN));
    let prompt_version_configured = Prompts::load(&settings.llm.prompts_dir)
        .ok()
        .map(|prompts| prompts.current().version().to_owned());
    Ok(Status {
        queues,
        dead_letter_reasons: reasons,
        dead_letters_peeked: peeked,
        outbox_backlog: backlogs.outbox,
        model_pending: backlogs.model_pending,
        model_failed_last_hour: usage.failed_messages_last_hour,
        asks_by_outcome: backlogs.asks_by_outcome,
        llm_last_hour: usage.last_hour,
        llm_last_day: usage.last_day,
        prompt_version_configured,
        prompt_version_last_used: usage.latest_prompt_version,
    })
}

async fn broker_status(
    settings: &Settings,
) -> anyhow::Result<(Vec<QueueStatus>, Vec<String>, usize)> {
    let amqp = &settings.amqp;
    let connection = queue::connect(amqp, "enricher-status")
        .await
        .context("connecting to rabbitmq")?;
    let mut names: Vec<(&str, String)> = topology::shard_queues(amqp)
        .into_iter()
        .map(|shard| ("shard", shard))
        .collect();
    names.push(("dead", amqp.dead_letter_queue.clone()));
    let mut queues = Vec::new();
    for (role, name) in names {
        // A passive declare of a missing queue closes its channel: one each.
        let channel = connection.create_channel().await?;
        let declared = channel
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .ok();
        queues.push(QueueStatus {
            role,
            name,
            messages: declared.as_ref().map(|q| q.message_count()),
            consumers: declared.as_ref().map(|q| q.consumer_count()),
        });
        let _ = channel.close(200, "status read".into()).await;
    }
    let (reasons, peeked) = peek_dead_letters(&connection, &amqp.dead_letter_queue).await;
    let _ = connection.close(200, "status done".into()).await;
    Ok((queues, reasons, peeked))
}

/// Reads dead letters without acknowledging them; closing the channel hands
/// every one back to the queue.
async fn peek_dead_letters(connection: &lapin::Connection, queue: &str) -> (Vec<String>, usize) {
    let Ok(channel) = connection.create_channel().await else {
        return (Vec::new(), 0);
    };
    let mut reasons = Vec::new();
    while reasons.len() < DEAD_LETTERS_PEEKED {
        let got = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await;
        let Ok(Some(message)) = got else { break };
        let reason = message
            .delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(ERROR_HEADER).cloned())
            .map(|value| match value {
                AMQPValue::LongString(text) => text.to_string(),
                _ => "(unreadable reason)".to_owned(),
            })
            .unwrap_or_else(|| {
                "(no reason header: dead-lettered by the broker's delivery limit)".to_owned()
            });
        reasons.push(reason);
    }
    let _ = channel.close(200, "peeked".into()).await;
    let peeked = reasons.len();
    let newest = reasons.split_off(reasons.len().saturating_sub(REASONS_SHOWN));
    (newest, peeked)
}

/// The operator's screen.
pub fn render(status: &Status) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let count = |n: Option<u32>| n.map_or_else(|| "missing".to_owned(), |n| n.to_string());
    line(format!(
        "{:<6} {:<32} {:>9} {:>9}",
        "QUEUE", "NAME", "MESSAGES", "CONSUMERS"
    ));
    for queue in &status.queues {
        line(format!(
            "{:<6} {:<32} {:>9} {:>9}",
            queue.role,
            queue.name,
            count(queue.messages),
            count(queue.consumers)
        ));
    }
    line(String::new());
    line(format!("outbox backlog        {}", status.outbox_backlog));
    line(format!("model stage pending   {}", status.model_pending));
    line(format!(
        "model failed (1 h)    {}",
        status.model_failed_last_hour
    ));
    let asks: Vec<String> = status
        .asks_by_outcome
        .iter()
        .map(|(outcome, n)| format!("{outcome} {n}"))
        .collect();
    line(format!(
        "asks                  {}",
        if asks.is_empty() {
            "none".to_owned()
        } else {
            asks.join(", ")
        }
    ));
    line(format!(
        "prompt version        {} on disk, {} last used",
        status
            .prompt_version_configured
            .as_deref()
            .unwrap_or("unreadable"),
        status
            .prompt_version_last_used
            .as_deref()
            .unwrap_or("never")
    ));
    line(String::new());
    line(format!(
        "{:<10} {:<9} {:>7} {:>7} {:>12} {:>12}",
        "LLM", "PURPOSE", "CALLS", "FAILED", "TOKENS IN", "TOKENS OUT"
    ));
    for (window, rows) in [
        ("last hour", &status.llm_last_hour),
        ("last day", &status.llm_last_day),
    ] {
        if rows.is_empty() {
            line(format!("{window:<10} (no calls)"));
        }
        for row in rows.iter() {
            line(format!(
                "{window:<10} {:<9} {:>7} {:>7} {:>12} {:>12}",
                row.purpose, row.calls, row.failed, row.prompt_tokens, row.completion_tokens
            ));
        }
    }
    line(String::new());
    line(format!(
        "dead-letter reasons (newest {} of {} read):",
        status.dead_letter_reasons.len(),
        status.dead_letters_peeked
    ));
    for reason in &status.dead_letter_reasons {
        line(format!("  {reason}"));
    }
    out
}
