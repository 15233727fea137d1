//! `enricher eval`: the quality gate for the decision core. It plays the
//! conversations in `evals/cases` through the same code the worker runs,
//! scores the facts recorded and asks made against what each case expects,
//! checks the safety properties (grounded writes, configured fields, one
//! useful ask at a time), writes reports and fails when a threshold in
//! `evals/thresholds.toml` is missed, so CI catches a regression before an
//! operator does.
//!
//! Modes: `offline` runs the deterministic extractor and keyword triggers
//! (what the worker does without a model); `hostile` runs scripted
//! adversarial "models" and holds the run to the safety gate only; `live`
//! and `replay` run a language model, or its recorded answers, and need the
//! LLM client.
//!
//! Exit status: `run` returns an error when a threshold is missed (its
//! message lists the misses), so the binary exits with status 1; a case file
//! that cannot be read or parsed is also an error (status 1), naming the
//! file and line.

pub mod case;
pub mod hostile;
pub mod metrics;
pub mod model;
pub mod report;
pub mod runner;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::config::Settings;
use crate::llm::model_client::{ModelClient, RequestBuilder};
use crate::llm::prompts::Prompts;
use case::{Case, load_cases};
use metrics::{Counts, Scorecard, score, top_patterns};
use report::{Report, TERMINAL_FAILURE_LINES, Thresholds};
use runner::{CaseRun, EvalEnv, OfflineProposer, Proposer, run_cases};

/// Where answers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LlmMode {
    /// Deterministic extractor and keyword triggers; no model.
    Offline,
    /// A configured language model (`ENRICHER__LLM__*`).
    Live,
    /// Recorded model answers from `evals/cassettes`.
    Replay,
    /// Scripted adversarial models; judged on the safety gate only.
    Hostile,
}

impl LlmMode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            LlmMode::Offline => "offline",
            LlmMode::Live => "live",
            LlmMode::Replay => "replay",
            LlmMode::Hostile => "hostile",
        }
    }
}

/// Options of `enricher eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Case files or directories (searched recursively for *.jsonl).
    #[arg(default_value = "evals/cases")]
    pub paths: Vec<PathBuf>,
    /// Where facts and asks are proposed: offline, live, replay or hostile.
    #[arg(long, value_enum, default_value_t = LlmMode::Offline)]
    pub llm: LlmMode,
    /// Record the model's answers as cassettes (live mode only).
    #[arg(long)]
    pub record: bool,
    /// Thresholds file.
    #[arg(long, default_value = "evals/thresholds.toml")]
    pub thresholds: PathBuf,
    /// Directory the JSON, Markdown and SVG reports are written to.
    #[arg(long, default_value = "evals/reports")]
    pub reports: PathBuf,
    /// Directory of recorded model answers (live --record writes, replay reads).
    #[arg(long, default_value = "evals/cassettes")]
    pub cassettes: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Tags shown in the terminal table and the chart need this many cases.
    #[arg(long, default_value_t = 3)]
    pub min_tag_cases: u64,
    /// Hold a live or replayed model to the safety maximums only (no ungrounded,
    /// unconfigured or locked writes, no redundant or multi-field asks), for
    /// models too small to be judged on quality.
    #[arg(long)]
    pub safety_only: bool,
}

/// Cases run at once; offline proposers are instant, a model is not.
const CONCURRENCY: usize = 8;

/// Runs `enricher eval`. Returns an error listing the missed thresholds
/// when the run does not meet them.
pub async fn run(settings: &Settings, args: EvalArgs) -> anyhow::Result<()> {
    let loaded = load_cases(&args.paths)?;
    let cases: Vec<Case> = loaded.into_iter().map(|l| l.case).collect();
    let mut env = EvalEnv::new(&settings.asks).context("compiling asks.triggers")?;
    env.recent_turns = settings.redis.recent_turns;
    let thresholds = Thresholds::load(&args.thresholds).map_err(anyhow::Error::msg)?;
    if args.record && args.llm != LlmMode::Live {
        eprintln!("enricher eval: --record only applies to --llm live; ignored");
    }
    let (card, applied) = match args.llm {
        LlmMode::Offline => {
            let runs = run_with(&cases, &env, &[&OfflineProposer], &args).await?;
            (score(&runs), thresholds)
        }
        LlmMode::Hostile => {
            let proposers: Vec<hostile::HostileProposer> = hostile::Script::ALL
                .into_iter()
                .map(hostile::HostileProposer::new)
                .collect();
            let refs: Vec<&dyn Proposer> = proposers.iter().map(|p| p as &dyn Proposer).collect();
            let runs = run_with(&cases, &env, &refs, &args).await?;
            let mut applied = thresholds.maximums_only();
            applied.maximum.extend(hostile::gate().maximum);
            (score(&runs), applied)
        }
        LlmMode::Live | LlmMode::Replay => {
            let prompts = Prompts::load(&settings.llm.prompts_dir).with_context(|| {
                format!(
                    "loading prompts from {}",
                    settings.llm.prompts_dir.display()
                )
            })?;
            let builder = RequestBuilder::new(&settings.llm, prompts.clone());
            let source = if args.llm == LlmMode::Live {
                let enricher =
                    ModelClient::from_settings(&settings.llm, prompts)?.ok_or_else(|| {
                        anyhow::anyhow!(
                            "--llm live needs llm.base_url (ENRICHER__LLM__BASE_URL) and llm.model"
                        )
                    })?;
                model::Source::Live {
                    enricher: Box::new(enricher),
                    record: args.record,
                }
            } else {
                model::Source::Replay
            };
            let proposer = model::ModelProposer::new(source, builder, &args.cassettes);
            let runs = run_with(&cases, &env, &[&proposer], &args).await?;
            let cassettes = proposer.report();
            if args.record {
                println!(
                    "cassettes: {} recorded under {}",
                    cassettes.recorded,
                    args.cassettes.display()
                );
            }
            if cassettes.missing + cassettes.stale > 0 {
                bail!(
                    "replay: {} requests had no cassette and {} only stale ones (other prompt versions) under {}; \
                     record them with --llm live --record",
                    cassettes.missing,
                    cassettes.stale,
                    args.cassettes.display()
                );
            }
            let applied = if args.safety_only {
                thresholds.maximums_only()
            } else {
                thresholds
            };
            (score(&runs), applied)
        }
    };
    finish(&card, &applied, &args)
}

/// Runs every case with each proposer. With more than one proposer each
/// run's case id and tags name the proposer (`id@name`, `name`).
async fn run_with(
    cases: &[Case],
    env: &EvalEnv,
    proposers: &[&dyn Proposer],
    args: &EvalArgs,
) -> anyhow::Result<Vec<CaseRun>> {
    let total = (cases.len() * proposers.len()) as u64;
    let progress = if args.no_progress || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} cases {msg}") {
            bar.set_style(style);
        }
        bar
    };
    let mut all = Vec::with_capacity(total as usize);
    for proposer in proposers {
        progress.set_message(proposer.name().to_owned());
        let done = |_: &CaseRun| progress.inc(1);
        let mut runs = run_cases(cases, env, *proposer, CONCURRENCY, &done).await?;
        if proposers.len() > 1 {
            for run in &mut runs {
                run.case_id = format!("{}@{}", run.case_id, proposer.name());
                run.tags.push(proposer.name().to_owned());
            }
        }
        all.extend(runs);
    }
    progress.finish_and_clear();
    Ok(all)
}

/// A model run in which the model never answered judged only the patterns:
/// its safety counts would be zero whatever the model does. Says so, or
/// `None` when at least one proposal came back.
fn no_model_answer(overall: &Counts) -> Option<String> {
    (overall.proposer_calls > 0 && overall.proposer_errors >= overall.proposer_calls).then(|| {
        format!(
            "every one of the {} model calls failed, so nothing the model proposes was judged; \
             is the server at llm.base_url answering?",
            overall.proposer_calls
        )
    })
}

fn finish(card: &Scorecard, thresholds: &Thresholds, args: &EvalArgs) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let run_name = format!("{}-{}", now.format("%Y%m%d-%H%M%S"), args.llm.as_str());
    let created_at = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let threshold_failures = thresholds.check(&card.overall.summary());
    let report = Report {
        run: &run_name,
        mode: args.llm.as_str(),
        created_at: &created_at,
        paths: args.paths.iter().map(|p| p.display().to_string()).collect(),
        card,
        thresholds,
        threshold_failures: &threshold_failures,
        min_tag_cases: args.min_tag_cases,
    };
    print!("{}", report::terminal_table(&report));
    let written = report::write_reports(&args.reports, &report)
        .with_context(|| format!("writing reports to {}", args.reports.display()))?;
    println!(
        "\nreports: {}, {}, {}",
        written.json.display(),
        written.markdown.display(),
        written.svg.display()
    );
    if matches!(args.llm, LlmMode::Live | LlmMode::Replay)
        && let Some(problem) = no_model_answer(&card.overall)
    {
        bail!("eval {run_name}: {problem}");
    }
    if threshold_failures.is_empty() {
        println!("thresholds ({}): passed", args.thresholds.display());
        return Ok(());
    }
    println!("\nmost frequent misses:");
    for (pattern, cases) in top_patterns(&card.failures, 8) {
        let mut ids = cases.clone();
        ids.dedup();
        let shown: Vec<&str> = ids.iter().take(6).copied().collect();
        println!("  {} × {pattern}: {}", cases.len(), shown.join(", "));
    }
    println!("\nmisses (case, 0-based turn index):");
    for line in report::failure_lines(&card.failures, TERMINAL_FAILURE_LINES.saturating_sub(10)) {
        println!("{line}");
    }
    let listed: Vec<String> = threshold_failures.iter().map(|f| f.to_string()).collect();
    bail!(
        "eval {} missed {} threshold(s): {}",
        run_name,
        listed.len(),
        listed.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(reports: PathBuf) -> EvalArgs {
        EvalArgs {
            paths: vec![PathBuf::from("evals/cases")],
            llm: LlmMode::Offline,
            record: false,
            thresholds: PathBuf::from("evals/thresholds.toml"),
            reports,
            cassettes: PathBuf::from("evals/cassettes"),
            no_progress: true,
            min_tag_cases: 1,
            safety_only: false,
        }
    }

    #[test]
    fn a_model_run_in_which_every_call_failed_is_an_error() {
        let reports = std::env::temp_dir().join(format!("enricher-eval-{}", uuid::Uuid::new_v4()));
        let card = |errors| Scorecard {
            overall: Counts {
                cases: 1,
                customer_turns: 3,
                proposer_calls: 3,
                proposer_errors: errors,
                ..Counts::default()
            },
            ..Scorecard::default()
        };
        let live = EvalArgs {
            llm: LlmMode::Live,
            ..args(reports.clone())
        };
        let error = finish(&card(3), &Thresholds::default(), &live).expect_err("fails");
        assert!(
            error
                .to_string()
                .contains("every one of the 3 model calls failed"),
            "{error}"
        );
        assert!(finish(&card(2), &Thresholds::default(), &live).is_ok());
        assert!(
            finish(&card(3), &Thresholds::default(), &args(reports.clone())).is_ok(),
            "offline runs have no model to answer"
        );
        std::fs::remove_dir_all(&reports).expect("cleanup");
    }

    #[test]
    fn a_missed_threshold_is_an_error_naming_it() {
        let reports = std::env::temp_dir().join(format!("enricher-eval-{}", uuid::Uuid::new_v4()));
        let card = Scorecard {
            overall: Counts {
                cases: 1,
                customer_turns: 1,
                redundant_asks: 1,
                ..Counts::default()
            },
            ..Scorecard::default()
        };
        let thresholds = Thresholds {
            maximum: [("redundant_asks".to_owned(), 0.0)].into_iter().collect(),
            ..Thresholds::default()
        };
        let error = finish(&card, &thresholds, &args(reports.clone())).expect_err("fails");
        assert!(
            error
                .to_string()
                .contains("redundant_asks = 1 (needs <= 0)"),
            "{error}"
        );
        assert!(finish(&card, &Thresholds::default(), &args(reports.clone())).is_ok());
        let written = std::fs::read_dir(&reports).expect("reports").count();
        assert!(written >= 3, "json, md and svg per run");
        std::fs::remove_dir_all(&reports).expect("cleanup");
    }

    #[test]
    fn live_needs_an_endpoint_and_replay_reports_missing_cassettes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut settings = Settings::load_from(&root.join("config")).expect("settings");
        settings.llm.prompts_dir = root.join("prompts");
        let mut args = args(std::env::temp_dir());
        args.paths = vec![root.join("evals/cases/asks.jsonl")];
        args.thresholds = root.join("evals/thresholds.toml");
        args.cassettes =
            std::env::temp_dir().join(format!("enricher-cassettes-{}", uuid::Uuid::new_v4()));
        args.llm = LlmMode::Live;
        let error = runtime
            .block_on(run(&settings, args.clone()))
            .expect_err("no endpoint");
        assert!(error.to_string().contains("llm.base_url"), "{error}");
        args.llm = LlmMode::Replay;
        let error = runtime
            .block_on(run(&settings, args))
            .expect_err("no cassettes");
        assert!(error.to_string().contains("had no cassette"), "{error}");
    }
}
