//! `enricher customers show|export|forget`: the operator's view of the
//! profiles enricher builds. Support agents look one customer up by id or
//! email, analysts export every profile to CSV or JSONL without the export's
//! memory growing with the table, and data-protection requests are served by
//! the same erasure the `customer.forget` event performs.
//!
//! Nothing here logs personal data. `show` prints a profile card to stdout
//! (that is its purpose) but leaves out visitor IP addresses and user agents;
//! errors and summaries on stderr name customers by id only, never by email.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgConnection, PgPool};
use uuid::Uuid;

use crate::config::Settings;
use crate::event::CustomerRef;
use crate::state::{Cache, CacheUpdate};
use crate::store::profiles::parse_since;
use crate::store::profiles::{self, ExportFilter, ExportValue, ProfileCard, ProfileExport};
use crate::store::{customers, erasure};

/// Conversations a card lists.
const CARD_CONVERSATIONS: i64 = 20;
/// Field changes a card lists.
const CARD_HISTORY: i64 = 10;

/// `enricher customers …`.
#[derive(Debug, clap::Subcommand)]
pub enum CustomersCommand {
    /// Print a customer's profile card.
    Show {
        /// Customer id (UUID) or email.
        customer: String,
        /// Workspace; needed when the email exists in more than one.
        #[arg(long)]
        workspace: Option<String>,
    },
    /// Stream every row of enrich.customer_profiles as CSV or JSONL.
    Export(ExportArgs),
    /// Erase a customer and everything about them, as `customer.forget` does.
    Forget {
        /// Customer id (UUID) or email.
        customer: String,
        /// Workspace; needed when the email exists in more than one.
        #[arg(long)]
        workspace: Option<String>,
    },
}

/// Output formats of `enricher customers export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// A header line, then one line per profile; arrays joined with `|`, JSON compact.
    Csv,
    /// One JSON object per line, keys in the view's column order.
    Jsonl,
}

/// Options of `enricher customers export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Only this workspace.
    #[arg(long)]
    pub workspace: Option<String>,
    /// Only profiles updated at or after this time (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<DateTime<Utc>>,
    /// Write here instead of stdout (replaced only once the export is complete).
    #[arg(long)]
    pub output: Option<PathBuf>,
}

/// Runs one `customers` subcommand.
pub async fn run(settings: &Settings, command: CustomersCommand) -> anyhow::Result<()> {
    let pool = connect(settings).await.context("connecting to postgres")?;
    let result = match command {
        CustomersCommand::Show {
            customer,
            workspace,
        } => show(&pool, &customer, workspace.as_deref()).await,
        CustomersCommand::Export(args) => export(&pool, args).await,
        CustomersCommand::Forget {
            customer,
            workspace,
        } => forget(settings, &pool, &customer, workspace.as_deref()).await,
    };
    pool.close().await;
    result
}

/// A small pool for one command. Statement logging is off: an export is one
/// statement that streams for as long as the output takes to write, which
/// sqlx would otherwise report as a slow statement.
async fn connect(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = settings.postgres.url.expose_secret().parse()?;
    PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.disable_statement_logging())
        .await
}

/// What the operator typed: a customer id or an email.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Reference {
    Id(Uuid),
    Email(String),
}

impl Reference {
    fn parse(input: &str) -> anyhow::Result<Reference> {
        let input = input.trim();
        if let Ok(id) = Uuid::parse_str(input) {
            return Ok(Reference::Id(id));
        }
        anyhow::ensure!(
            input.contains('@'),
            "expected a customer id (UUID) or an email address"
        );
        Ok(Reference::Email(input.to_lowercase()))
    }
}

/// Finds the customer and its workspace. Errors never repeat the email.
async fn resolve(
    conn: &mut PgConnection,
    input: &str,
    workspace: Option<&str>,
) -> anyhow::Result<(Uuid, String)> {
    match Reference::parse(input)? {
        Reference::Id(id) => {
            let found = profiles::workspace_of(conn, id)
                .await
                .context("looking the customer up")?;
            match (found, workspace) {
                (None, _) => anyhow::bail!("no customer with id {id}"),
                (Some(found), Some(wanted)) if found != wanted => {
                    anyhow::bail!("customer {id} is in workspace `{found}`, not `{wanted}`")
                }
                (Some(found), _) => Ok((id, found)),
            }
        }
        Reference::Email(email) => {
            let workspaces = profiles::workspaces_with_email(conn, &email)
                .await
                .context("looking the email up")?;
            let workspace = match workspace {
                Some(wanted) => {
                    anyhow::ensure!(
                        workspaces.iter().any(|w| w == wanted),
                        "no customer in workspace `{wanted}` has that email"
                    );
                    wanted.to_owned()
                }
                None => match workspaces.as_slice() {
                    [] => anyhow::bail!("no customer has that email"),
                    [only] => only.clone(),
                    several => anyhow::bail!(
                        "that email belongs to customers in {} workspaces ({}); choose one with --workspace",
                        several.len(),
                        several.join(", ")
                    ),
                },
            };
            // The same lookup `customer.forget` and `profile.update` use.
            let id = customers::resolve(conn, &workspace, &CustomerRef::Email(email))
                .await
                .context("looking the email up")?
                .ok_or_else(|| {
                    anyhow::anyhow!("no customer in workspace `{workspace}` has that email")
                })?;
            Ok((id, workspace))
        }
    }
}

async fn show(pool: &PgPool, input: &str, workspace: Option<&str>) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("connecting to postgres")?;
    let (customer_id, _) = resolve(&mut conn, input, workspace).await?;
    let card = profiles::card(&mut conn, customer_id, CARD_CONVERSATIONS, CARD_HISTORY)
        .await
        .context("reading the profile")?
        .ok_or_else(|| anyhow::anyhow!("customer {customer_id} disappeared while reading it"))?;
    let mut stdout = io::stdout().lock();
    render_card(&card, &mut stdout).context("writing the profile card")?;
    stdout.flush().context("writing the profile card")?;
    Ok(())
}

/// `1 message`, `2 messages`.
fn count(n: impl Into<i64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn when_opt(at: Option<DateTime<Utc>>) -> String {
    at.map(when).unwrap_or_else(|| "never".to_owned())
}

/// Writes the human-readable profile card.
pub fn render_card(card: &ProfileCard, out: &mut impl Write) -> io::Result<()> {
    let summary = &card.summary;
    writeln!(out, "{}", summary.display_name)?;
    writeln!(out, "  customer    {}", summary.customer_id)?;
    writeln!(out, "  workspace   {}", summary.workspace_id)?;
    writeln!(
        out,
        "  seen        first {}, last {}",
        when_opt(summary.first_seen_at),
        when_opt(summary.last_seen_at)
    )?;
    writeln!(
        out,
        "  activity    {}, {}, {}",
        count(summary.conversation_count, "conversation", "conversations"),
        count(
            summary.message_count,
            "customer message",
            "customer messages"
        ),
        count(
            summary.unresolved_queries,
            "unresolved query",
            "unresolved queries"
        )
    )?;
    if let Some(sentiment) = summary.avg_sentiment {
        writeln!(out, "  sentiment   {sentiment:.2} on average")?;
    }
    if summary.source.is_some() || summary.first_message_tag.is_some() {
        writeln!(
            out,
            "  source      {}{}",
            summary.source.as_deref().unwrap_or("unknown"),
            summary
                .first_message_tag
                .as_deref()
                .map(|tag| format!(" (first message tag: {tag})"))
                .unwrap_or_default()
        )?;
    }
    writeln!(
        out,
        "  created     {}, updated {}",
        when(summary.created_at),
        when(summary.updated_at)
    )?;

    writeln!(out, "\nIdentities")?;
    if card.identities.is_empty() {
        writeln!(out, "  none")?;
    }
    for identity in &card.identities {
        let mut visitor = Vec::new();
        if let Some(country) = &identity.country {
            visitor.push(format!("country {country}"));
        }
        if let Some(device) = &identity.device {
            visitor.push(format!("device {device}"));
        }
        writeln!(
            out,
            "  {:<10} {}  last seen {}{}",
            identity.platform,
            identity.platform_user_id,
            when(identity.last_seen_at),
            if visitor.is_empty() {
                String::new()
            } else {
                format!("  ({})", visitor.join(", "))
            }
        )?;
    }

    writeln!(out, "\nFields")?;
    if card.fields.is_empty() {
        writeln!(out, "  none yet")?;
    }
    let width = card.fields.iter().map(|f| f.field.len()).max().unwrap_or(0);
    let value_width = card
        .fields
        .iter()
        .map(|f| f.value.chars().count())
        .max()
        .unwrap_or(0)
        .min(40);
    for field in &card.fields {
        let mut origin = field.source.clone();
        if let Some(actor) = &field.actor {
            origin.push_str(&format!(" by {actor}"));
        }
        if let Some(model) = &field.model {
            origin.push_str(&format!(", model {model}"));
        }
        writeln!(
            out,
            "  {:<width$}  {:<value_width$}  [{origin}, {}]",
            field.field,
            field.value,
            when(field.updated_at)
        )?;
    }

    writeln!(
        out,
        "\nTags                {}",
        if summary.tags.is_empty() {
            "none".to_owned()
        } else {
            summary.tags.join(", ")
        }
    )?;
    writeln!(
        out,
        "Agent instructions  {}",
        summary.agent_instructions.as_deref().unwrap_or("none")
    )?;
    match &summary.insights {
        None | Some(serde_json::Value::Null) => writeln!(out, "AI insights         none yet")?,
        Some(insights) => {
            writeln!(out, "AI insights")?;
            let pretty =
                serde_json::to_string_pretty(insights).unwrap_or_else(|_| insights.to_string());
            for line in pretty.lines() {
                writeln!(out, "  {line}")?;
            }
        }
    }

    let total = i64::from(summary.conversation_count).max(card.conversations.len() as i64);
    if card.conversations.len() as i64 == total {
        writeln!(out, "\nConversations ({total})")?;
    } else {
        writeln!(
            out,
            "\nConversations ({} most recent of {total})",
            card.conversations.len()
        )?;
    }
    if card.conversations.is_empty() {
        writeln!(out, "  none")?;
    }
    for conversation in &card.conversations {
        writeln!(
            out,
            "  {}  {}  {}  started {}  {}{}",
            conversation.conversation_id,
            conversation.platform,
            conversation.status,
            when(conversation.started_at),
            count(conversation.message_count, "message", "messages"),
            match conversation.escalations {
                0 => String::new(),
                n => format!(", {}", count(n, "escalation", "escalations")),
            }
        )?;
        if let Some(summary) = &conversation.summary {
            writeln!(out, "      summary: {summary}")?;
        }
        match (&conversation.sentiment, conversation.sentiment_score) {
            (Some(sentiment), Some(score)) => {
                writeln!(out, "      sentiment: {sentiment} ({score:+.2})")?
            }
            (Some(sentiment), None) => writeln!(out, "      sentiment: {sentiment}")?,
            (None, Some(score)) => writeln!(out, "      sentiment: {score:+.2}")?,
            (None, None) => {}
        }
    }
    writeln!(out, "Escalations         {}", card.escalations)?;

    writeln!(out, "\nField history (latest {CARD_HISTORY})")?;
    if card.history.is_empty() {
        writeln!(out, "  none")?;
    }
    for change in &card.history {
        writeln!(
            out,
            "  {}  {}: {} -> {}  [{}{}]",
            when(change.changed_at),
            change.field,
            change.old_value.as_deref().unwrap_or("(none)"),
            change.new_value.as_deref().unwrap_or("(none)"),
            change.source,
            change
                .actor
                .as_deref()
                .map(|actor| format!(" by {actor}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// Where export rows go.
enum Sink {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Jsonl(BufWriter<Box<dyn Write>>),
}

impl Sink {
    fn new(format: ExportFormat, out: Box<dyn Write>) -> Sink {
        match format {
            ExportFormat::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out))),
            ExportFormat::Jsonl => Sink::Jsonl(BufWriter::with_capacity(64 * 1024, out)),
        }
    }

    fn header<'a>(&mut self, columns: impl Iterator<Item = &'a str>) -> anyhow::Result<()> {
        if let Sink::Csv(writer) = self {
            writer.write_record(columns)?;
        }
        Ok(())
    }

    fn row(&mut self, columns: &[&str], values: &[ExportValue]) -> anyhow::Result<()> {
        match self {
            Sink::Csv(writer) => {
                for value in values {
                    writer.write_field(value.csv_field().as_bytes())?;
                }
                // An empty record ends the one the fields above started.
                writer.write_record(None::<&[u8]>)?;
            }
            Sink::Jsonl(writer) => {
                // Written key by key so the keys keep the view's column order.
                writer.write_all(b"{")?;
                for (index, (name, value)) in columns.iter().zip(values).enumerate() {
                    if index > 0 {
                        writer.write_all(b",")?;
                    }
                    serde_json::to_writer(&mut *writer, name)?;
                    writer.write_all(b":")?;
                    serde_json::to_writer(&mut *writer, value)?;
                }
                writer.write_all(b"}\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> anyhow::Result<()> {
        match self {
            Sink::Csv(mut writer) => writer.flush()?,
            Sink::Jsonl(mut writer) => writer.flush()?,
        }
        Ok(())
    }
}

/// The temporary file an export to `path` is written to before the rename.
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.partial", std::process::id()));
    path.with_file_name(name)
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            || cause
                .downcast_ref::<csv::Error>()
                .is_some_and(|e| matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == io::ErrorKind::BrokenPipe))
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|e| e.io_error_kind() == Some(io::ErrorKind::BrokenPipe))
    })
}

async fn export(pool: &PgPool, args: ExportArgs) -> anyhow::Result<()> {
    let filter = ExportFilter {
        workspace: args.workspace.clone(),
        since: args.since,
    };
    let export = ProfileExport::prepare(pool)
        .await
        .context("reading the columns of enrich.customer_profiles")?;
    let progress = match &args.output {
        Some(_) if io::stderr().is_terminal() => {
            let total = ProfileExport::count(pool, &filter)
                .await
                .context("counting profiles")?;
            let bar = ProgressBar::new(u64::try_from(total).unwrap_or(0));
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {pos}/{len} profiles ({per_sec}, {eta} left)",
            ) {
                bar.set_style(style);
            }
            Some(bar)
        }
        _ => None,
    };
    let (out, partial): (Box<dyn Write>, Option<PathBuf>) = match &args.output {
        Some(path) => {
            let partial = partial_path(path);
            let file = File::create(&partial)
                .with_context(|| format!("creating {}", partial.display()))?;
            (Box::new(file), Some(partial))
        }
        None => (Box::new(io::stdout().lock()), None),
    };
    let written = write_rows(
        &export,
        pool,
        &filter,
        Sink::new(args.format, out),
        progress.as_ref(),
    )
    .await;
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let rows = match (written, &partial, &args.output) {
        (Ok(rows), Some(partial), Some(path)) => {
            std::fs::rename(partial, path)
                .with_context(|| format!("moving {} to {}", partial.display(), path.display()))?;
            rows
        }
        (Ok(rows), _, _) => rows,
        (Err(error), None, _) if is_broken_pipe(&error) => return Ok(()),
        (Err(error), partial, _) => {
            if let Some(partial) = partial {
                let _ = std::fs::remove_file(partial);
            }
            return Err(error);
        }
    };
    let destination = args
        .output
        .as_ref()
        .map(|path| path.display().to_string())
        .unwrap_or_else(|| "stdout".to_owned());
    eprintln!("enricher: exported {rows} customer profiles to {destination}");
    Ok(())
}

async fn write_rows(
    export: &ProfileExport,
    pool: &PgPool,
    filter: &ExportFilter,
    mut sink: Sink,
    progress: Option<&ProgressBar>,
) -> anyhow::Result<u64> {
    let columns: Vec<&str> = export.column_names().collect();
    sink.header(columns.iter().copied())
        .context("writing the header")?;
    let mut rows = export.rows(pool, filter);
    let mut count = 0u64;
    while let Some(values) = rows
        .try_next()
        .await
        .context("reading enrich.customer_profiles")?
    {
        sink.row(&columns, &values).context("writing a row")?;
        count += 1;
        if let Some(bar) = progress {
            bar.inc(1);
        }
    }
    sink.finish().context("writing the export")?;
    Ok(count)
}

async fn forget(
    settings: &Settings,
    pool: &PgPool,
    input: &str,
    workspace: Option<&str>,
) -> anyhow::Result<()> {
    // Connect to Redis first: if it is unreachable nothing is erased, and the
    // operator can simply run the command again.
    let cache = Cache::connect(&settings.redis)
        .await
        .context("connecting to redis")?;
    let mut tx = pool.begin().await.context("starting a transaction")?;
    let (customer_id, workspace_id) = resolve(&mut tx, input, workspace).await?;
    let counts = profiles::erasure_counts(&mut tx, customer_id)
        .await
        .context("counting the customer's rows")?;
    let erased = erasure::forget(
        &mut tx,
        &workspace_id,
        customer_id,
        erasure::Request {
            requested_by: Some("cli"),
            ..erasure::Request::default()
        },
    )
    .await
    .context("erasing the customer")?;
    tx.commit().await.context("committing the erasure")?;

    let conversations = erased.conversation_external_ids.len();
    println!("forgot customer {customer_id} in workspace `{workspace_id}`");
    println!(
        "  postgres: customers 1, identities {}, fields {}, field changes {}, declined fields {},",
        counts.identities, counts.fields, counts.field_changes, counts.declined_fields
    );
    println!(
        "            conversations {}, messages {}, asks {}, tags {}, tag changes {}, notes {}, escalations {}, insights {}, model calls {}",
        counts.conversations,
        counts.messages,
        counts.asks,
        counts.tags,
        counts.tag_changes,
        counts.notes,
        counts.escalations,
        counts.insights,
        counts.llm_calls
    );
    cache
        .apply(&[CacheUpdate::ForgetCustomer {
            workspace_id: workspace_id.clone(),
            customer_id,
            conversations: erased.conversation_external_ids,
        }])
        .await
        .with_context(|| {
            format!(
                "customer {customer_id} is erased from postgres, but its redis keys could not be \
                 deleted (they expire with their TTL; run the command again to retry)"
            )
        })?;
    println!(
        "  redis:    profile key and {} deleted",
        count(
            conversations as i64,
            "conversation turns key",
            "conversation turns keys"
        )
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_rfc3339_and_dates() {
        assert_eq!(
            parse_since("2026-03-01").map(|t| t.to_rfc3339()),
            Ok("2026-03-01T00:00:00+00:00".to_owned())
        );
        assert_eq!(
            parse_since("2026-03-01T12:30:00+02:00").map(|t| t.to_rfc3339()),
            Ok("2026-03-01T10:30:00+00:00".to_owned())
        );
        assert!(parse_since("yesterday").is_err());
    }

    #[test]
    fn references_are_ids_or_lower_cased_emails() {
        let id = Uuid::new_v4();
        assert_eq!(
            Reference::parse(&id.to_string()).ok(),
            Some(Reference::Id(id))
        );
        assert_eq!(
            Reference::parse(" Ann@Example.COM ").ok(),
            Some(Reference::Email("ann@example.com".to_owned()))
        );
        assert!(Reference::parse("ann").is_err());
    }

    #[test]
    fn partial_files_sit_next_to_the_output() {
        let partial = partial_path(Path::new("/tmp/out/customers.csv"));
        assert_eq!(partial.parent(), Some(Path::new("/tmp/out")));
        assert!(
            partial
                .to_string_lossy()
                .starts_with("/tmp/out/customers.csv.")
        );
    }
}
