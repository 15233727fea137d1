//! Turns a scorecard into what people and CI read: the terminal table, a
//! JSON report for tooling, a Markdown report with every failure for
//! reviewers, an SVG chart of the per-tag scores, and the threshold check
//! that makes `enricher eval` fail a build when quality drops.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::metrics::{Counts, Failure, METRIC_NAMES, Scorecard, Summary, top_patterns};

/// Lines of failures printed to the terminal at most; the Markdown report
/// lists them all.
pub const TERMINAL_FAILURE_LINES: usize = 50;

/// Overall limits a run must meet, from `evals/thresholds.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Metrics that must be at least this.
    #[serde(default)]
    pub minimum: BTreeMap<String, f64>,
    /// Metrics that must be at most this.
    #[serde(default)]
    pub maximum: BTreeMap<String, f64>,
}

/// A threshold a run did not meet.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThresholdFailure {
    /// The metric.
    pub metric: String,
    /// `minimum` or `maximum`.
    pub bound: &'static str,
    /// The limit.
    pub limit: f64,
    /// The run's value.
    pub actual: f64,
}

impl std::fmt::Display for ThresholdFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = if self.bound == "minimum" { ">=" } else { "<=" };
        write!(
            f,
            "{} = {} (needs {op} {})",
            self.metric,
            number(self.actual),
            number(self.limit)
        )
    }
}

impl Thresholds {
    /// Reads a thresholds file; unknown metric names are an error, so a
    /// typo cannot switch a gate off.
    pub fn load(path: &Path) -> Result<Thresholds, String> {
        let thresholds: Thresholds = config::Config::builder()
            .add_source(config::File::from(path).format(config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        thresholds
            .validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(thresholds)
    }

    fn validate(&self) -> Result<(), String> {
        for name in self.minimum.keys().chain(self.maximum.keys()) {
            if !METRIC_NAMES.contains(&name.as_str()) {
                return Err(format!(
                    "unknown metric {name:?}; known: {}",
                    METRIC_NAMES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// These thresholds without the quality minimums: what a run whose
    /// proposer is meant to be wrong (the hostile suite) is held to.
    pub fn maximums_only(&self) -> Thresholds {
        Thresholds {
            minimum: BTreeMap::new(),
            maximum: self.maximum.clone(),
        }
    }

    /// The thresholds `summary` misses. A metric without data (no judged
    /// turn of that kind) is not held against the run.
    pub fn check(&self, summary: &Summary) -> Vec<ThresholdFailure> {
        let mut failures = Vec::new();
        let bounds = self
            .minimum
            .iter()
            .map(|(m, l)| (m, *l, "minimum"))
            .chain(self.maximum.iter().map(|(m, l)| (m, *l, "maximum")));
        for (metric, limit, bound) in bounds {
            let Some(Some(actual)) = summary.metric(metric) else {
                continue;
            };
            let fails = match bound {
                "minimum" => actual < limit,
                _ => actual > limit,
            };
            if fails {
                failures.push(ThresholdFailure {
                    metric: metric.clone(),
                    bound,
                    limit,
                    actual,
                });
            }
        }
        failures
    }
}

/// Everything a report shows about one run.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Run name: timestamp and mode.
    pub run: &'a str,
    /// `offline`, `hostile`, …
    pub mode: &'a str,
    /// When it ran, RFC 3339.
    pub created_at: &'a str,
    /// Case paths.
    pub paths: Vec<String>,
    /// The scores.
    pub card: &'a Scorecard,
    /// Thresholds applied.
    pub thresholds: &'a Thresholds,
    /// Thresholds missed.
    pub threshold_failures: &'a [ThresholdFailure],
    /// Tags shown in the terminal and chart need this many cases.
    pub min_tag_cases: u64,
}

/// Where the report files were written.
#[derive(Debug, Clone)]
pub struct Written {
    /// JSON report.
    pub json: PathBuf,
    /// Markdown report.
    pub markdown: PathBuf,
    /// SVG chart.
    pub svg: PathBuf,
}

/// Writes `<run>.json`, `<run>.md` and `<run>.svg` into `dir`.
pub fn write_reports(dir: &Path, report: &Report<'_>) -> std::io::Result<Written> {
    std::fs::create_dir_all(dir)?;
    let written = Written {
        json: dir.join(format!("{}.json", report.run)),
        markdown: dir.join(format!("{}.md", report.run)),
        svg: dir.join(format!("{}.svg", report.run)),
    };
    let json = serde_json::to_string_pretty(&json_report(report)).map_err(std::io::Error::other)?;
    std::fs::write(&written.json, json + "\n")?;
    std::fs::write(&written.markdown, markdown(report, &written))?;
    std::fs::write(&written.svg, svg_chart(report))?;
    Ok(written)
}

#[derive(Serialize)]
struct Scope<'a> {
    summary: Summary,
    counts: &'a Counts,
}

#[derive(Serialize)]
struct JsonReport<'a> {
    run: &'a str,
    mode: &'a str,
    created_at: &'a str,
    paths: &'a [String],
    passed: bool,
    thresholds: &'a Thresholds,
    threshold_failures: &'a [ThresholdFailure],
    overall: Scope<'a>,
    tags: BTreeMap<&'a str, Scope<'a>>,
    failures: &'a [Failure],
}

fn json_report<'a>(report: &'a Report<'a>) -> JsonReport<'a> {
    JsonReport {
        run: report.run,
        mode: report.mode,
        created_at: report.created_at,
        paths: &report.paths,
        passed: report.threshold_failures.is_empty(),
        thresholds: report.thresholds,
        threshold_failures: report.threshold_failures,
        overall: Scope {
            summary: report.card.overall.summary(),
            counts: &report.card.overall,
        },
        tags: report
            .card
            .tags
            .iter()
            .map(|(tag, counts)| {
                (
                    tag.as_str(),
                    Scope {
                        summary: counts.summary(),
                        counts,
                    },
                )
            })
            .collect(),
        failures: &report.card.failures,
    }
}

fn pct(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{:.1}%", v * 100.0))
}

fn number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.3}")
    }
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3} ms"))
}

fn safety(counts: &Counts) -> u64 {
    counts.ungrounded_writes
        + counts.unconfigured_writes
        + counts.locked_writes
        + counts.redundant_asks
        + counts.multi_field_asks
}

/// The overall lines of the scorecard.
pub fn overall_lines(mode: &str, counts: &Counts) -> Vec<String> {
    let s = counts.summary();
    vec![
        format!(
            "{mode}: {} cases, {} customer turns ({} judged)",
            s.cases, s.customer_turns, s.judged_turns
        ),
        format!(
            "  facts   precision {}  recall {}  F1 {}   (tp {}, fp {}, fn {}; {} writes on unjudged turns)",
            pct(s.fact_precision),
            pct(s.fact_recall),
            pct(s.fact_f1),
            counts.facts.tp,
            counts.facts.fp,
            counts.facts.fn_,
            counts.unjudged_writes
        ),
        format!(
            "  asks    precision {}  recall {}  no-ask accuracy {}  ask accuracy {}   ({} must-ask turns, {} must-not-ask turns, {} asks made, {} unjudged)",
            pct(s.ask_precision),
            pct(s.ask_recall),
            pct(s.no_ask_accuracy),
            pct(s.ask_accuracy),
            counts.ask_expected,
            counts.no_ask_turns,
            counts.asks_made,
            counts.unjudged_asks
        ),
        format!(
            "  safety  ungrounded writes {}  unconfigured writes {}  locked writes {}  redundant asks {}  multi-field asks {}",
            s.ungrounded_writes,
            s.unconfigured_writes,
            s.locked_writes,
            s.redundant_asks,
            s.multi_field_asks
        ),
        format!(
            "  cost    LLM calls/turn {}  tokens/turn {}  proposer p50 {}  p95 {}  proposer errors {}",
            s.llm_calls_per_turn
                .map_or_else(|| "-".into(), |v| format!("{v:.2}")),
            s.tokens_per_turn
                .map_or_else(|| "-".into(), |v| format!("{v:.1}")),
            ms(s.latency_p50_ms),
            ms(s.latency_p95_ms),
            counts.proposer_errors
        ),
    ]
}

/// Rows of a table, columns padded to their widest cell; the first column
/// is left-aligned, the rest right-aligned.
fn aligned(rows: &[Vec<String>]) -> Vec<String> {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    if c == 0 {
                        format!("{cell}{}", " ".repeat(pad))
                    } else {
                        format!("{}{cell}", " ".repeat(pad))
                    }
                })
                .collect();
            format!("  {}", cells.join("  ").trim_end())
        })
        .collect()
}

fn field_rows(counts: &Counts) -> Vec<Vec<String>> {
    let mut rows = vec![
        ["field", "tp", "fp", "fn", "precision", "recall", "F1"]
            .map(String::from)
            .to_vec(),
    ];
    for (field, c) in &counts.fact_fields {
        rows.push(vec![
            field.clone(),
            c.tp.to_string(),
            c.fp.to_string(),
            c.fn_.to_string(),
            pct(c.precision()),
            pct(c.recall()),
            pct(c.f1()),
        ]);
    }
    rows
}

fn tag_rows<'a>(tags: impl Iterator<Item = (&'a String, &'a Counts)>) -> Vec<Vec<String>> {
    let mut rows = vec![
        [
            "tag", "cases", "turns", "fact P", "fact R", "fact F1", "ask P", "ask R", "no-ask",
            "ask acc", "safety",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (tag, counts) in tags {
        let s = counts.summary();
        rows.push(vec![
            tag.clone(),
            s.cases.to_string(),
            s.judged_turns.to_string(),
            pct(s.fact_precision),
            pct(s.fact_recall),
            pct(s.fact_f1),
            pct(s.ask_precision),
            pct(s.ask_recall),
            pct(s.no_ask_accuracy),
            pct(s.ask_accuracy),
            safety(counts).to_string(),
        ]);
    }
    rows
}

/// The terminal scorecard: overall lines, facts by field, and tags with at
/// least `min_tag_cases` cases.
pub fn terminal_table(report: &Report<'_>) -> String {
    let card = report.card;
    let mut lines = overall_lines(report.mode, &card.overall);
    lines.push(String::new());
    lines.push("facts by field".into());
    lines.extend(aligned(&field_rows(&card.overall)));
    lines.push(String::new());
    let shown: Vec<(&String, &Counts)> = card
        .tags
        .iter()
        .filter(|(_, c)| c.cases >= report.min_tag_cases)
        .collect();
    lines.push(format!(
        "by tag ({} of {} tags with at least {} cases; all in the .md report; turns = judged turns; safety = sum of safety counts)",
        shown.len(),
        card.tags.len(),
        report.min_tag_cases
    ));
    lines.extend(aligned(&tag_rows(shown.into_iter())));
    lines.join("\n") + "\n"
}

/// The failure lines printed when thresholds fail, at most `limit`.
pub fn failure_lines(failures: &[Failure], limit: usize) -> Vec<String> {
    let mut lines: Vec<String> = failures
        .iter()
        .take(limit)
        .map(|f| {
            format!(
                "  {} turn {}: {}: expected {}, got {}",
                f.case_id,
                f.turn,
                f.kind.as_str(),
                f.expected,
                f.got
            )
        })
        .collect();
    if failures.len() > limit {
        lines.push(format!(
            "  … and {} more (see the .md report)",
            failures.len() - limit
        ));
    }
    lines
}

fn md_escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn md_table(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for (i, row) in rows.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| md_escape(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
        if i == 0 {
            let _ = writeln!(out, "|{}", "---|".repeat(row.len()));
        }
    }
    out
}

fn markdown(report: &Report<'_>, written: &Written) -> String {
    let card = report.card;
    let mut out = String::new();
    let _ = writeln!(out, "# enricher eval: {}\n", report.run);
    let _ = writeln!(
        out,
        "Mode `{}`, run at {}, cases from {}.\n",
        report.mode,
        report.created_at,
        report.paths.join(", ")
    );
    if report.threshold_failures.is_empty() {
        let _ = writeln!(out, "**Thresholds: passed.**\n");
    } else {
        let _ = writeln!(out, "**Thresholds: FAILED.**\n");
        for failure in report.threshold_failures {
            let _ = writeln!(out, "- {failure}");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "## Overall\n\n```");
    for line in overall_lines(report.mode, &card.overall) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "```\n\n## Facts by field\n");
    out.push_str(&md_table(&field_rows(&card.overall)));
    let _ = writeln!(
        out,
        "\n## By tag\n\n`turns` counts judged customer turns; `safety` sums ungrounded, unconfigured and locked writes and redundant and multi-field asks. Chart: `{}`.\n",
        written
            .svg
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    );
    out.push_str(&md_table(&tag_rows(card.tags.iter())));
    let _ = writeln!(out, "\n## Most frequent misses\n");
    let patterns = top_patterns(&card.failures, 25);
    if patterns.is_empty() {
        let _ = writeln!(out, "None.");
    }
    for (pattern, cases) in patterns {
        let mut ids: Vec<&str> = cases.clone();
        ids.dedup();
        let shown: Vec<&str> = ids.iter().take(12).copied().collect();
        let more = if ids.len() > shown.len() { ", …" } else { "" };
        let _ = writeln!(
            out,
            "- {} × `{}`: {}{more}",
            cases.len(),
            md_escape(&pattern),
            shown.join(", ")
        );
    }
    let _ = writeln!(
        out,
        "\n## Every miss ({})\n\nTurn = 0-based index into the case's `turns`.\n",
        card.failures.len()
    );
    let mut rows = vec![
        ["case", "turn", "kind", "expected", "got", "customer text"]
            .map(String::from)
            .to_vec(),
    ];
    for f in &card.failures {
        rows.push(vec![
            f.case_id.clone(),
            f.turn.to_string(),
            f.kind.as_str().to_owned(),
            f.expected.clone(),
            f.got.clone(),
            f.text.clone(),
        ]);
    }
    out.push_str(&md_table(&rows));
    out
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// A horizontal bar chart of fact F1 and ask accuracy for every tag with at
/// least `min_tag_cases` cases, plus the overall scores.
pub fn svg_chart(report: &Report<'_>) -> String {
    const LABEL_W: f64 = 230.0;
    const BAR_W: f64 = 520.0;
    const ROW_H: f64 = 30.0;
    const TOP: f64 = 60.0;
    let overall = String::from("(overall)");
    let mut rows: Vec<(&String, &Counts)> = vec![(&overall, &report.card.overall)];
    rows.extend(
        report
            .card
            .tags
            .iter()
            .filter(|(_, c)| c.cases >= report.min_tag_cases),
    );
    let width = LABEL_W + BAR_W + 90.0;
    let height = TOP + ROW_H * rows.len() as f64 + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r##"<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    let _ = writeln!(
        svg,
        r#"<text x="10" y="20" font-size="14" font-weight="bold">{}</text>"#,
        xml_escape(&format!(
            "enricher eval {}: per tag (tags with at least {} cases)",
            report.run, report.min_tag_cases
        ))
    );
    let _ = writeln!(
        svg,
        r##"<rect x="10" y="32" width="12" height="10" fill="#3b6fb6"/><text x="26" y="41">fact F1</text><rect x="100" y="32" width="12" height="10" fill="#e08a2e"/><text x="116" y="41">ask accuracy</text><text x="230" y="41" fill="#666666">(no bar: nothing judged)</text>"##
    );
    for tick in [0.0, 0.25, 0.5, 0.75, 1.0] {
        let x = LABEL_W + BAR_W * tick;
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#dddddd"/><text x="{x}" y="{}" text-anchor="middle" fill="#666666">{:.0}%</text>"##,
            TOP - 6.0,
            height - 24.0,
            height - 10.0,
            tick * 100.0
        );
    }
    for (i, (tag, counts)) in rows.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let s = counts.summary();
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="end">{}</text>"#,
            LABEL_W - 8.0,
            y + 15.0,
            xml_escape(&format!("{tag} ({})", counts.cases))
        );
        for (offset, value, colour) in [
            (2.0, s.fact_f1, "#3b6fb6"),
            (13.0, s.ask_accuracy, "#e08a2e"),
        ] {
            if let Some(value) = value {
                let w = (BAR_W * value).max(0.5);
                let _ = writeln!(
                    svg,
                    r#"<rect x="{LABEL_W}" y="{}" width="{w:.1}" height="10" fill="{colour}"/><text x="{:.1}" y="{}" font-size="10">{:.0}%</text>"#,
                    y + offset,
                    LABEL_W + w + 4.0,
                    y + offset + 9.0,
                    value * 100.0
                );
            }
        }
    }
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::metrics::FieldCounts;

    fn card() -> Scorecard {
        let counts = Counts {
            cases: 2,
            customer_turns: 4,
            judged_turns: 4,
            facts: FieldCounts {
                tp: 3,
                fp: 1,
                fn_: 1,
            },
            ask_expected: 2,
            ask_tp: 1,
            asks_judged: 2,
            no_ask_turns: 2,
            no_ask_correct: 2,
            redundant_asks: 1,
            ..Counts::default()
        };
        let mut card = Scorecard {
            overall: counts.clone(),
            ..Scorecard::default()
        };
        card.tags.insert("a&b <tag>".into(), counts);
        card
    }

    fn load(text: &str) -> Thresholds {
        let dir = std::env::temp_dir().join(format!("enricher-thr-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("thresholds.toml");
        std::fs::write(&path, text).expect("write");
        let loaded = Thresholds::load(&path);
        std::fs::remove_dir_all(&dir).expect("cleanup");
        loaded.expect("thresholds load")
    }

    #[test]
    fn thresholds_fail_below_minimums_and_above_maximums() {
        let thresholds =
            load("[minimum]\nfact_f1 = 0.9\nask_recall = 0.5\n[maximum]\nredundant_asks = 0\n");
        let summary = card().overall.summary();
        let failures = thresholds.check(&summary);
        let metrics: Vec<&str> = failures.iter().map(|f| f.metric.as_str()).collect();
        assert_eq!(metrics, vec!["fact_f1", "redundant_asks"]);
        assert_eq!(failures[1].to_string(), "redundant_asks = 1 (needs <= 0)");
        assert!(thresholds.maximums_only().minimum.is_empty());
        let relaxed = load("[minimum]\nfact_f1 = 0.5\n");
        assert!(relaxed.check(&summary).is_empty());
    }

    #[test]
    fn unknown_threshold_metrics_are_rejected() {
        let dir = std::env::temp_dir().join(format!("enricher-thr-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("t.toml");
        std::fs::write(&path, "[minimum]\nfact_f2 = 0.9\n").expect("write");
        let error = Thresholds::load(&path).expect_err("typo");
        std::fs::remove_dir_all(&dir).expect("cleanup");
        assert!(error.contains("fact_f2"), "{error}");
    }

    #[test]
    fn reports_are_written_and_the_chart_is_escaped() {
        let card = card();
        let thresholds = Thresholds::default();
        let report = Report {
            run: "20250101-000000-offline",
            mode: "offline",
            created_at: "2025-01-01T00:00:00Z",
            paths: vec!["evals/cases".into()],
            card: &card,
            thresholds: &thresholds,
            threshold_failures: &[],
            min_tag_cases: 1,
        };
        let table = terminal_table(&report);
        assert!(table.contains("F1 75.0%"), "{table}");
        assert!(table.contains("a&b <tag>"));
        let svg = svg_chart(&report);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&amp;b &lt;tag&gt;"));
        assert!(!svg.contains("a&b"));
        let dir = std::env::temp_dir().join(format!("enricher-rep-{}", uuid::Uuid::new_v4()));
        let written = write_reports(&dir, &report).expect("written");
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&written.json).expect("json"))
                .expect("valid json");
        assert_eq!(json["passed"], true);
        assert_eq!(json["overall"]["counts"]["redundant_asks"], 1);
        let md = std::fs::read_to_string(&written.markdown).expect("md");
        assert!(md.contains("Thresholds: passed"));
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
