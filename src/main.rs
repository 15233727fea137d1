//! The `enricher` command line: the worker and its operator tools.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use enricher::config::Settings;
use enricher::startup::Application;
use enricher::{cli, store, telemetry};

/// Turns live chat traffic into enriched customer profiles.
#[derive(Parser)]
#[command(name = "enricher", version, about)]
struct Cli {
    /// Configuration directory (default: ./config, or ENRICHER_CONFIG_DIR).
    #[arg(long, global = true, env = "ENRICHER_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM or SIGINT.
    Run,
    /// Serve the HTTP API and the web console (`/ui`) (config `[api] listen`) until SIGTERM or SIGINT.
    Serve {
        /// Listen here instead of `api.listen`.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Create, list and revoke the API's bearer tokens.
    Tokens {
        #[command(subcommand)]
        command: cli::tokens::TokensCommand,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Publish events (one JSON per line) from a file or stdin to the inbound exchange.
    Send {
        /// JSONL file; `-` or nothing reads stdin.
        file: Option<PathBuf>,
    },
    /// Measure throughput and latency through the real broker into a running worker.
    Bench(cli::bench::BenchArgs),
    /// Score the decision core on the eval cases (see evals/README.md).
    Eval(enricher::eval::EvalArgs),
    /// Print the strict tool schema the model receives; `schema events` prints
    /// the inbound events' JSON Schemas instead.
    Schema {
        /// Workspace whose fields to use (default: the default workspace).
        #[arg(long)]
        workspace: Option<String>,
        #[command(subcommand)]
        command: Option<SchemaCommand>,
    },
    /// Look up, export and forget customers.
    Customers {
        #[command(subcommand)]
        command: cli::customers::CustomersCommand,
    },
    /// List, replay and purge dead letters (see docs/dead-letters.md).
    DeadLetters {
        #[command(subcommand)]
        command: cli::dead_letters::DeadLettersCommand,
    },
    /// Queue depths, backlogs, model usage and dead-letter reasons of a deployment.
    Status(cli::status::StatusArgs),
    /// Prompt templates.
    Prompts {
        #[command(subcommand)]
        command: PromptsCommand,
    },
}

#[derive(Subcommand)]
enum SchemaCommand {
    /// Print the JSON Schemas of the inbound events (docs/schemas/events.json):
    /// one document, a schema per event type under `$defs`.
    Events {
        /// Print only this event type's schema (e.g. `chat.message`).
        #[arg(long = "type", value_name = "TYPE")]
        event_type: Option<String>,
    },
}

#[derive(Subcommand)]
enum PromptsCommand {
    /// Render every template with sample data; non-zero exit on any error.
    Check {
        /// Template directory (default: llm.prompts_dir).
        dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    // Fail points named in `FAILPOINTS`, in builds for the fault suite only.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse();
    let settings = match load_settings(cli.config_dir.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("enricher: {error}");
            return ExitCode::from(2);
        }
    };
    telemetry::init(&settings.telemetry);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("enricher: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(execute(cli.command, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("enricher: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_settings(dir: Option<&std::path::Path>) -> Result<Settings, enricher::config::ConfigError> {
    match dir {
        Some(dir) => Settings::load_from(dir),
        None => Settings::load(),
    }
}

async fn execute(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let worker = Application::build(settings)
                .await
                .context("starting the worker")?;
            worker.run_until_stopped(stop_signal()).await?;
            Ok(())
        }
        Command::Serve { listen } => {
            let listen = listen.unwrap_or_else(|| settings.api.listen.clone());
            let server = enricher::api::Server::build(&settings)
                .await
                .context("starting the API")?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            server
                .run_app(listener, stop_signal(), enricher::console::app)
                .await?;
            Ok(())
        }
        Command::Tokens { command } => cli::tokens::run(&settings, command).await,
        Command::Migrate => {
            let pool = store::connect(&settings.postgres)
                .await
                .context("connecting to postgres")?;
            store::migrate(&pool).await.context("applying migrations")?;
            store::workspaces::sync(&pool, &settings.workspaces).await?;
            eprintln!("enricher: migrations applied");
            Ok(())
        }
        Command::Send { file } => {
            let (input, size): (Box<dyn BufRead>, Option<u64>) = match file {
                Some(path) if path.as_os_str() != "-" => {
                    let opened = std::fs::File::open(&path)
                        .with_context(|| format!("opening {}", path.display()))?;
                    let size = opened.metadata().ok().map(|m| m.len());
                    (Box::new(std::io::BufReader::new(opened)), size)
                }
                _ => (Box::new(std::io::BufReader::new(std::io::stdin())), None),
            };
            let sent = cli::send::send_lines(&settings.amqp, input, size).await?;
            eprintln!("enricher: sent {sent} events");
            Ok(())
        }
        Command::Bench(args) if args.search => cli::bench_search::run(&settings, &args).await,
        Command::Bench(args) if args.broker_only => cli::bench_broker::run(&settings, &args).await,
        Command::Bench(args) => cli::bench::run(&settings, args).await,
        Command::Eval(args) => enricher::eval::run(&settings, args).await,
        Command::Schema {
            command: Some(SchemaCommand::Events { event_type }),
            ..
        } => cli::inspect::print_event_schemas(event_type.as_deref()),
        Command::Schema {
            workspace,
            command: None,
        } => cli::inspect::print_schema(&settings, workspace.as_deref()),
        Command::Customers { command } => cli::customers::run(&settings, command).await,
        Command::DeadLetters { command } => cli::dead_letters::run(&settings, command).await,
        Command::Status(args) => cli::status::run(&settings, args).await,
        Command::Prompts {
            command: PromptsCommand::Check { dir },
        } => cli::inspect::check_prompts(dir.as_deref().unwrap_or(&settings.llm.prompts_dir)),
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
