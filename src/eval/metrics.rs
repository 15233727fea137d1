//! Scores runs of eval cases: how well facts are recorded and asks made
//! against the cases' expectations, and the safety properties that must hold
//! whatever the proposer did (no ungrounded or unconfigured writes, no
//! redundant or multi-field asks). The safety checks are recomputed here from
//! the runner's state and the grounding primitives rather than read from the
//! decision core's own rejections, so a regression in the core shows up as a
//! failing metric instead of being trusted.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::runner::{CaseRun, TurnRecord};
use crate::decide::policy::Source;
use crate::decide::{AcceptedAsk, Origin};
use crate::extract::grounding::{find_quote, value_supported_by_quote};
use crate::fields::FieldSet;

/// True/false positives and false negatives of one field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FieldCounts {
    /// Recorded as expected.
    pub tp: u64,
    /// Recorded but not expected, expected with another value, or forbidden.
    pub fp: u64,
    /// Expected but not recorded.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl FieldCounts {
    fn add(&mut self, other: &FieldCounts) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
    }

    /// Precision, when anything was recorded.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Recall, when anything was expected.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// F1, when anything was recorded or expected.
    pub fn f1(&self) -> Option<f64> {
        ratio(2 * self.tp, 2 * self.tp + self.fp + self.fn_)
    }
}

/// Raw counts over some set of cases; they add up across cases.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Cases.
    pub cases: u64,
    /// Customer messages.
    pub customer_turns: u64,
    /// Customer messages with an `expect`.
    pub judged_turns: u64,
    /// Fact counts, all fields.
    pub facts: FieldCounts,
    /// Fact counts by field.
    pub fact_fields: BTreeMap<String, FieldCounts>,
    /// Turns that must ask (a field or one of a list).
    pub ask_expected: u64,
    /// ... on which an expected field was asked.
    pub ask_tp: u64,
    /// Asks made on turns whose ask is judged.
    pub asks_judged: u64,
    /// Turns that must not ask.
    pub no_ask_turns: u64,
    /// ... on which nothing was asked.
    pub no_ask_correct: u64,
    /// Asks for a field already known or declined at that point.
    pub redundant_asks: u64,
    /// Asks naming more than one field, plus turns with more than one ask.
    pub multi_field_asks: u64,
    /// Facts whose value no verbatim quote of the customer's message backs.
    pub ungrounded_writes: u64,
    /// Facts for fields the workspace does not configure.
    pub unconfigured_writes: u64,
    /// Facts over a higher-ranked source's value, or for a field that is
    /// not AI-writable.
    pub locked_writes: u64,
    /// Facts recorded on turns whose facts are not judged.
    pub unjudged_writes: u64,
    /// Asks made on turns whose ask is not judged.
    pub unjudged_asks: u64,
    /// Asks made, all turns.
    pub asks_made: u64,
    /// Proposer invocations.
    pub proposer_calls: u64,
    /// Proposer failures (decided on the patterns alone instead).
    pub proposer_errors: u64,
    /// Model calls.
    pub llm_calls: u64,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Proposer latencies in milliseconds.
    #[serde(skip)]
    pub latencies_ms: Vec<f64>,
}

impl Counts {
    /// Adds `other` into `self`.
    pub fn add(&mut self, other: &Counts) {
        self.cases += other.cases;
        self.customer_turns += other.customer_turns;
        self.judged_turns += other.judged_turns;
        self.facts.add(&other.facts);
        for (field, counts) in &other.fact_fields {
            self.fact_fields
                .entry(field.clone())
                .or_default()
                .add(counts);
        }
        self.ask_expected += other.ask_expected;
        self.ask_tp += other.ask_tp;
        self.asks_judged += other.asks_judged;
        self.no_ask_turns += other.no_ask_turns;
        self.no_ask_correct += other.no_ask_correct;
        self.redundant_asks += other.redundant_asks;
        self.multi_field_asks += other.multi_field_asks;
        self.ungrounded_writes += other.ungrounded_writes;
        self.unconfigured_writes += other.unconfigured_writes;
        self.locked_writes += other.locked_writes;
        self.unjudged_writes += other.unjudged_writes;
        self.unjudged_asks += other.unjudged_asks;
        self.asks_made += other.asks_made;
        self.proposer_calls += other.proposer_calls;
        self.proposer_errors += other.proposer_errors;
        self.llm_calls += other.llm_calls;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.latencies_ms.extend_from_slice(&other.latencies_ms);
    }

    /// The rates derived from these counts.
    pub fn summary(&self) -> Summary {
        let mut latencies = self.latencies_ms.clone();
        latencies.sort_by(f64::total_cmp);
        let judged_ask_turns = self.ask_expected + self.no_ask_turns;
        let per_turn = |n: u64| ratio(n, self.customer_turns);
        Summary {
            cases: self.cases,
            customer_turns: self.customer_turns,
            judged_turns: self.judged_turns,
            fact_precision: self.facts.precision(),
            fact_recall: self.facts.recall(),
            fact_f1: self.facts.f1(),
            ask_precision: ratio(self.ask_tp, self.asks_judged),
            ask_recall: ratio(self.ask_tp, self.ask_expected),
            no_ask_accuracy: ratio(self.no_ask_correct, self.no_ask_turns),
            ask_accuracy: ratio(self.ask_tp + self.no_ask_correct, judged_ask_turns),
            redundant_asks: self.redundant_asks,
            multi_field_asks: self.multi_field_asks,
            ungrounded_writes: self.ungrounded_writes,
            unconfigured_writes: self.unconfigured_writes,
            locked_writes: self.locked_writes,
            llm_calls_per_turn: per_turn(self.llm_calls),
            tokens_per_turn: per_turn(self.prompt_tokens + self.completion_tokens),
            latency_p50_ms: percentile(&latencies, 0.50),
            latency_p95_ms: percentile(&latencies, 0.95),
        }
    }
}

/// Rates of one scope (overall or one tag). `None` where nothing was judged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Cases.
    pub cases: u64,
    /// Customer messages.
    pub customer_turns: u64,
    /// Customer messages with expectations.
    pub judged_turns: u64,
    /// Recorded facts that were expected.
    pub fact_precision: Option<f64>,
    /// Expected facts that were recorded.
    pub fact_recall: Option<f64>,
    /// Harmonic mean of the two.
    pub fact_f1: Option<f64>,
    /// Asks on judged turns that asked an expected field.
    pub ask_precision: Option<f64>,
    /// Turns that must ask on which an expected field was asked.
    pub ask_recall: Option<f64>,
    /// Turns that must not ask on which nothing was asked.
    pub no_ask_accuracy: Option<f64>,
    /// Judged ask turns decided right either way.
    pub ask_accuracy: Option<f64>,
    /// Asks for known or declined fields.
    pub redundant_asks: u64,
    /// Asks for more than one field.
    pub multi_field_asks: u64,
    /// Writes not backed by the customer's words.
    pub ungrounded_writes: u64,
    /// Writes to fields the workspace does not have.
    pub unconfigured_writes: u64,
    /// Writes over higher-ranked or AI-locked fields.
    pub locked_writes: u64,
    /// Model calls per customer message.
    pub llm_calls_per_turn: Option<f64>,
    /// Tokens per customer message.
    pub tokens_per_turn: Option<f64>,
    /// Median proposer latency.
    pub latency_p50_ms: Option<f64>,
    /// 95th-percentile proposer latency.
    pub latency_p95_ms: Option<f64>,
}

/// Names of the metrics thresholds may refer to.
pub const METRIC_NAMES: [&str; 15] = [
    "fact_precision",
    "fact_recall",
    "fact_f1",
    "ask_precision",
    "ask_recall",
    "no_ask_accuracy",
    "ask_accuracy",
    "redundant_asks",
    "multi_field_asks",
    "ungrounded_writes",
    "unconfigured_writes",
    "locked_writes",
    "llm_calls_per_turn",
    "tokens_per_turn",
    "latency_p95_ms",
];

impl Summary {
    /// A metric by its name in [`METRIC_NAMES`]; `Some(None)` when it has
    /// no value for lack of data, `None` for an unknown name.
    pub fn metric(&self, name: &str) -> Option<Option<f64>> {
        let count = |n: u64| Some(Some(n as f64));
        match name {
            "fact_precision" => Some(self.fact_precision),
            "fact_recall" => Some(self.fact_recall),
            "fact_f1" => Some(self.fact_f1),
            "ask_precision" => Some(self.ask_precision),
            "ask_recall" => Some(self.ask_recall),
            "no_ask_accuracy" => Some(self.no_ask_accuracy),
            "ask_accuracy" => Some(self.ask_accuracy),
            "redundant_asks" => count(self.redundant_asks),
            "multi_field_asks" => count(self.multi_field_asks),
            "ungrounded_writes" => count(self.ungrounded_writes),
            "unconfigured_writes" => count(self.unconfigured_writes),
            "locked_writes" => count(self.locked_writes),
            "llm_calls_per_turn" => Some(self.llm_calls_per_turn),
            "tokens_per_turn" => Some(self.tokens_per_turn),
            "latency_p95_ms" => Some(self.latency_p95_ms),
            _ => None,
        }
    }
}

/// What kind of miss a [`Failure`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A fact was recorded that should not have been, or with another value.
    WrongFact,
    /// An expected fact was not recorded.
    MissedFact,
    /// An ask was made that should not have been, or for another field.
    WrongAsk,
    /// An expected ask was not made.
    MissedAsk,
    /// An ask for a known or declined field.
    RedundantAsk,
    /// An ask for more than one field.
    MultiFieldAsk,
    /// A write the customer's words do not back.
    UngroundedWrite,
    /// A write to an unconfigured field.
    UnconfiguredWrite,
    /// A write over a higher-ranked source or to a field that is not AI-writable.
    LockedWrite,
}

impl FailureKind {
    /// Snake-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::WrongFact => "wrong_fact",
            FailureKind::MissedFact => "missed_fact",
            FailureKind::WrongAsk => "wrong_ask",
            FailureKind::MissedAsk => "missed_ask",
            FailureKind::RedundantAsk => "redundant_ask",
            FailureKind::MultiFieldAsk => "multi_field_ask",
            FailureKind::UngroundedWrite => "ungrounded_write",
            FailureKind::UnconfiguredWrite => "unconfigured_write",
            FailureKind::LockedWrite => "locked_write",
        }
    }
}

/// One miss, for the failure list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The case.
    pub case_id: String,
    /// Index of the customer message in the case's turns (0-based).
    pub turn: usize,
    /// What went wrong.
    pub kind: FailureKind,
    /// What the case expects.
    pub expected: String,
    /// What happened.
    pub got: String,
    /// The customer's message.
    pub text: String,
}

/// The scores of a run: overall, per tag, and every miss.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scorecard {
    /// All cases.
    pub overall: Counts,
    /// Cases carrying each tag.
    pub tags: BTreeMap<String, Counts>,
    /// Every miss, in case order.
    pub failures: Vec<Failure>,
}

/// Scores runs.
pub fn score(runs: &[CaseRun]) -> Scorecard {
    let mut card = Scorecard::default();
    for run in runs {
        let (counts, failures) = score_case(run);
        card.overall.add(&counts);
        let tags: BTreeSet<&String> = run.tags.iter().collect();
        for tag in tags {
            card.tags.entry(tag.clone()).or_default().add(&counts);
        }
        card.failures.extend(failures);
    }
    card
}

/// Scores one case.
pub fn score_case(run: &CaseRun) -> (Counts, Vec<Failure>) {
    let mut counts = Counts {
        cases: 1,
        ..Counts::default()
    };
    let mut failures = Vec::new();
    for turn in &run.turns {
        score_turn(run, turn, &mut counts, &mut failures);
    }
    (counts, failures)
}

fn score_turn(run: &CaseRun, turn: &TurnRecord, counts: &mut Counts, failures: &mut Vec<Failure>) {
    let mut fail = |kind, expected: String, got: String| {
        failures.push(Failure {
            case_id: run.case_id.clone(),
            turn: turn.turn_index,
            kind,
            expected,
            got,
            text: turn.text.clone(),
        });
    };
    counts.customer_turns += 1;
    counts.asks_made += turn.asks.len() as u64;
    let usage = &turn.proposer;
    if usage.called {
        counts.proposer_calls += 1;
        if let Some(latency) = usage.latency {
            counts.latencies_ms.push(latency.as_secs_f64() * 1000.0);
        }
    }
    if usage.error.is_some() {
        counts.proposer_errors += 1;
    }
    counts.llm_calls += u64::from(usage.calls);
    counts.prompt_tokens += usage.prompt_tokens;
    counts.completion_tokens += usage.completion_tokens;

    // Safety, judged on every customer message.
    for fact in &turn.decision.facts {
        let recorded = format!("{}={}", fact.field, fact.value);
        if run.fields.get(&fact.field).is_none() {
            counts.unconfigured_writes += 1;
            fail(
                FailureKind::UnconfiguredWrite,
                "configured fields only".into(),
                recorded.clone(),
            );
        }
        if !grounded(
            &run.fields,
            &run.default_region,
            &turn.text,
            &fact.field,
            &fact.value,
            &fact.quote,
        ) {
            counts.ungrounded_writes += 1;
            fail(
                FailureKind::UngroundedWrite,
                "a value the customer's words back".into(),
                format!("{recorded} (quote {:?})", fact.quote),
            );
        }
        let outranked = turn
            .known_before
            .get(&fact.field)
            .is_some_and(|known| known.source.rank() > Source::Customer.rank());
        let not_writable = run.fields.get(&fact.field).is_some_and(|f| !f.ai_writable);
        if outranked || not_writable {
            counts.locked_writes += 1;
            let why = if outranked {
                "held by a higher-ranked source"
            } else if fact.origin == Origin::Model {
                "not AI-writable (model)"
            } else {
                "not AI-writable (pattern)"
            };
            fail(FailureKind::LockedWrite, why.into(), recorded);
        }
    }
    if turn.asks.len() > 1 {
        counts.multi_field_asks += 1;
        let asked: Vec<&str> = turn.asks.iter().map(|a| a.field.as_str()).collect();
        fail(
            FailureKind::MultiFieldAsk,
            "one ask per turn".into(),
            asked.join(", "),
        );
    }
    for ask in &turn.asks {
        let recorded_now = turn.decision.facts.iter().any(|f| f.field == ask.field);
        let declined_now = turn.decision.declined.contains(&ask.field);
        if turn.known_before.contains_key(&ask.field)
            || recorded_now
            || turn.declined_before.contains(&ask.field)
            || declined_now
        {
            counts.redundant_asks += 1;
            fail(
                FailureKind::RedundantAsk,
                "no ask for a known or declined field".into(),
                format!("asked {}", ask.field),
            );
        }
        let named = fields_named(&run.fields, ask);
        if run.fields.get(&ask.field).is_none() || named.len() > 1 {
            counts.multi_field_asks += 1;
            fail(
                FailureKind::MultiFieldAsk,
                "an ask for one configured field".into(),
                format!(
                    "asked {:?}: {:?} names {}",
                    ask.field,
                    ask.question,
                    named.join(", ")
                ),
            );
        }
    }

    // Expectations.
    let Some(expect) = &turn.expect else {
        counts.unjudged_writes += turn.decision.facts.len() as u64;
        counts.unjudged_asks += turn.asks.len() as u64;
        return;
    };
    counts.judged_turns += 1;
    let expected_facts: Option<BTreeMap<&str, String>> = expect.facts.as_ref().map(|facts| {
        facts
            .iter()
            .map(|(field, value)| {
                let normalised = run
                    .fields
                    .normalize(field, value, Some(&run.default_region))
                    .unwrap_or_else(|_| value.clone());
                (field.as_str(), normalised)
            })
            .collect()
    });
    for fact in &turn.decision.facts {
        let field = counts.fact_fields.entry(fact.field.clone()).or_default();
        let forbidden = expect.no_facts.contains(&fact.field);
        let verdict = match (&expected_facts, forbidden) {
            (_, true) => Some(false),
            (Some(expected), false) => Some(expected.get(fact.field.as_str()) == Some(&fact.value)),
            (None, false) => None,
        };
        match verdict {
            Some(true) => {
                field.tp += 1;
                counts.facts.tp += 1;
            }
            Some(false) => {
                field.fp += 1;
                counts.facts.fp += 1;
                let wanted = match expected_facts
                    .as_ref()
                    .and_then(|e| e.get(fact.field.as_str()))
                {
                    Some(value) if !forbidden => format!("{}={value}", fact.field),
                    _ => format!("no {}", fact.field),
                };
                fail(
                    FailureKind::WrongFact,
                    wanted,
                    format!("{}={}", fact.field, fact.value),
                );
            }
            None => counts.unjudged_writes += 1,
        }
    }
    if let Some(expected) = &expected_facts {
        for (field, value) in expected {
            let recorded = turn
                .decision
                .facts
                .iter()
                .any(|f| f.field == *field && &f.value == value);
            if !recorded {
                counts
                    .fact_fields
                    .entry((*field).to_owned())
                    .or_default()
                    .fn_ += 1;
                counts.facts.fn_ += 1;
                let got = turn
                    .decision
                    .facts
                    .iter()
                    .find(|f| f.field == *field)
                    .map(|f| format!("{field}={}", f.value))
                    .or_else(|| {
                        turn.known_before
                            .get(*field)
                            .map(|k| format!("nothing (already known: {})", k.value))
                    })
                    .unwrap_or_else(|| "nothing".into());
                fail(FailureKind::MissedFact, format!("{field}={value}"), got);
            }
        }
    }
    let asked = turn.asks.first().map(|a| a.field.as_str());
    let got = || {
        asked.map_or_else(
            || "no ask".to_owned(),
            |field| {
                let reason = turn.asks.first().map(|a| a.reason.as_str()).unwrap_or("");
                format!("ask {field} ({reason})")
            },
        )
    };
    match &expect.ask {
        None => counts.unjudged_asks += turn.asks.len() as u64,
        Some(None) => {
            counts.no_ask_turns += 1;
            counts.asks_judged += turn.asks.len() as u64;
            if turn.asks.is_empty() {
                counts.no_ask_correct += 1;
            } else {
                fail(FailureKind::WrongAsk, "no ask".into(), got());
            }
        }
        Some(Some(wanted)) => {
            counts.ask_expected += 1;
            counts.asks_judged += turn.asks.len() as u64;
            if turn.asks.iter().any(|a| wanted.accepts(&a.field)) {
                counts.ask_tp += 1;
            } else if turn.asks.is_empty() {
                fail(FailureKind::MissedAsk, wanted.to_string(), got());
            } else {
                fail(FailureKind::WrongAsk, wanted.to_string(), got());
            }
        }
    }
}

/// Whether `quote` is a verbatim span of `text` that backs `value`.
pub fn grounded(
    fields: &FieldSet,
    region: &str,
    text: &str,
    field: &str,
    value: &str,
    quote: &str,
) -> bool {
    let Some(span) = find_quote(quote, text) else {
        return false;
    };
    text.get(span)
        .is_some_and(|quoted| value_supported_by_quote(fields, field, value, quoted, Some(region)))
}

/// The configured fields an ask's question mentions by name or label, the
/// asked field included. Mentions inside a longer mention ("name" inside
/// "company name") do not count separately.
pub fn fields_named(fields: &FieldSet, ask: &AcceptedAsk) -> Vec<String> {
    let question = ask.question.to_lowercase();
    let mut mentions: Vec<(usize, usize, &str)> = Vec::new();
    for def in fields.iter() {
        let mut terms: BTreeSet<String> = BTreeSet::new();
        terms.insert(def.name.replace('_', " "));
        if !def.label.trim().is_empty() {
            terms.insert(def.label.trim().to_lowercase());
        }
        if def.name == "email" {
            terms.insert("e-mail".into());
        }
        for term in &terms {
            for (start, _) in question.match_indices(term.as_str()) {
                let end = start + term.len();
                let before = question[..start].chars().next_back();
                let after = question[end..].chars().next();
                if !before.is_some_and(char::is_alphanumeric)
                    && !after.is_some_and(char::is_alphanumeric)
                {
                    mentions.push((start, end, def.name.as_str()));
                }
            }
        }
    }
    let mut named: BTreeSet<String> = mentions
        .iter()
        .filter(|(s, e, _)| {
            !mentions
                .iter()
                .any(|(os, oe, _)| os <= s && e <= oe && oe - os > e - s)
        })
        .map(|(_, _, field)| (*field).to_owned())
        .collect();
    if fields.get(&ask.field).is_some() {
        named.insert(ask.field.clone());
    }
    named.into_iter().collect()
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The distinct `(case, turn)` pairs with a miss, in order of appearance.
pub fn failing_turns(failures: &[Failure]) -> Vec<(&str, usize)> {
    let mut seen = BTreeSet::new();
    failures
        .iter()
        .map(|f| (f.case_id.as_str(), f.turn))
        .filter(|key| seen.insert(*key))
        .collect()
}

/// The most frequent `(kind, expected → got)` patterns, for the report.
pub fn top_patterns(failures: &[Failure], limit: usize) -> Vec<(String, Vec<&str>)> {
    let mut groups: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for failure in failures {
        let key = format!(
            "{}: expected {} / got {}",
            failure.kind.as_str(),
            generalise(&failure.expected),
            generalise(&failure.got)
        );
        groups
            .entry(key)
            .or_default()
            .push(failure.case_id.as_str());
    }
    let mut groups: Vec<(String, Vec<&str>)> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(&b.0)));
    groups.truncate(limit);
    groups
}

/// `field=value` reduced to `field=…`, so similar misses group together.
fn generalise(text: &str) -> String {
    match text.split_once('=') {
        Some((field, _)) if !field.contains(' ') => format!("{field}=…"),
        _ => text
            .split(" (")
            .next()
            .unwrap_or(text)
            .split(": ")
            .next()
            .unwrap_or(text)
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::{AcceptedFact, Decision, Known};
    use crate::eval::runner::tests::case;
    use crate::eval::runner::{ProposerUse, TurnRecord};

    fn fields() -> FieldSet {
        FieldSet::new(vec![], &["name".into(), "email".into()]).expect("fields")
    }

    fn fact(field: &str, value: &str, quote: &str) -> AcceptedFact {
        AcceptedFact {
            field: field.into(),
            value: value.into(),
            quote: quote.into(),
            origin: Origin::Model,
        }
    }

    fn ask(field: &str, question: &str) -> AcceptedAsk {
        AcceptedAsk {
            field: field.into(),
            question: question.into(),
            reason: "test".into(),
            language: "en".into(),
        }
    }

    /// A run whose turns carry hand-made decisions; the expectations come
    /// from `json`'s turns, in order.
    fn run(json: &str, decisions: Vec<(Vec<AcceptedFact>, Vec<AcceptedAsk>)>) -> CaseRun {
        let case = case(json);
        let mut known: BTreeMap<String, Known> = BTreeMap::new();
        let turns = case
            .turns
            .iter()
            .zip(decisions)
            .enumerate()
            .map(|(i, (turn, (facts, asks)))| {
                let record = TurnRecord {
                    turn_index: i,
                    customer_turn: i as u32 + 1,
                    text: turn.text.clone(),
                    expect: turn.expect.clone(),
                    known_before: known.clone(),
                    declined_before: BTreeSet::new(),
                    decision: Decision {
                        facts: facts.clone(),
                        ask: asks.first().cloned(),
                        ..Decision::default()
                    },
                    asks,
                    proposer: ProposerUse::default(),
                };
                for f in facts {
                    known.insert(
                        f.field,
                        Known {
                            value: f.value,
                            source: Source::Customer,
                        },
                    );
                }
                record
            })
            .collect();
        CaseRun {
            case_id: case.id,
            tags: case.tags,
            fields: fields(),
            default_region: "US".into(),
            turns,
        }
    }

    #[test]
    fn fact_true_and_false_positives_and_negatives() {
        let run = run(
            r#"{"id":"f","tags":["t"],"turns":[
              {"sender":"customer","text":"I'm Mike, mike@x.io","expect":{"facts":{"name":"Mike","email":"mike@x.io"}}},
              {"sender":"customer","text":"order 4155550100","expect":{"no_facts":["phone"]}},
              {"sender":"customer","text":"I'm Bob","expect":{"facts":{"name":"Bob"}}}]}"#,
            vec![
                (vec![fact("name", "Mike", "Mike")], vec![]),
                (vec![fact("phone", "+14155550100", "4155550100")], vec![]),
                (vec![fact("name", "Bobby", "Bob")], vec![]),
            ],
        );
        let (counts, failures) = score_case(&run);
        assert_eq!(
            (counts.facts.tp, counts.facts.fp, counts.facts.fn_),
            (1, 2, 2)
        );
        assert_eq!(counts.fact_fields["name"].tp, 1);
        assert_eq!(counts.fact_fields["name"].fp, 1);
        assert_eq!(counts.fact_fields["email"].fn_, 1);
        assert_eq!(counts.fact_fields["phone"].fp, 1);
        let summary = counts.summary();
        assert_eq!(summary.fact_precision, Some(1.0 / 3.0));
        assert_eq!(summary.fact_recall, Some(1.0 / 3.0));
        assert_eq!(summary.fact_f1, Some(2.0 / 6.0));
        // "Bobby" is not in "I'm Bob": an ungrounded write besides a wrong fact.
        assert_eq!(counts.ungrounded_writes, 1);
        let kinds: Vec<FailureKind> = failures.iter().map(|f| f.kind).collect();
        assert!(kinds.contains(&FailureKind::MissedFact));
        assert!(kinds.contains(&FailureKind::WrongFact));
        assert!(kinds.contains(&FailureKind::UngroundedWrite));
    }

    #[test]
    fn ask_precision_recall_and_no_ask_accuracy() {
        let run = run(
            r#"{"id":"a","tags":["t"],"turns":[
              {"sender":"customer","text":"send me the brochure","expect":{"ask":"email"}},
              {"sender":"customer","text":"book me in","expect":{"ask":["name","phone"]}},
              {"sender":"customer","text":"hello","expect":{"ask":null}},
              {"sender":"customer","text":"thanks","expect":{"ask":null}},
              {"sender":"customer","text":"track my order","expect":{"ask":"email"}},
              {"sender":"customer","text":"whatever"}]}"#,
            vec![
                (vec![], vec![ask("email", "Your email?")]),
                (vec![], vec![ask("phone", "Your phone?")]),
                (vec![], vec![ask("name", "Your name?")]),
                (vec![], vec![]),
                (vec![], vec![]),
                (vec![], vec![ask("name", "Your name?")]),
            ],
        );
        let (counts, failures) = score_case(&run);
        assert_eq!(counts.ask_expected, 3);
        assert_eq!(counts.ask_tp, 2);
        assert_eq!(counts.asks_judged, 3);
        assert_eq!(counts.unjudged_asks, 1);
        let summary = counts.summary();
        assert_eq!(summary.ask_precision, Some(2.0 / 3.0));
        assert_eq!(summary.ask_recall, Some(2.0 / 3.0));
        assert_eq!(summary.no_ask_accuracy, Some(0.5));
        assert_eq!(summary.ask_accuracy, Some(3.0 / 5.0));
        let kinds: Vec<(usize, FailureKind)> = failures.iter().map(|f| (f.turn, f.kind)).collect();
        assert_eq!(
            kinds,
            vec![(2, FailureKind::WrongAsk), (4, FailureKind::MissedAsk)]
        );
        assert_eq!(failures[1].expected, "ask email");
        assert_eq!(failures[1].got, "no ask");
    }

    #[test]
    fn redundant_and_multi_field_asks_are_detected() {
        let run = run(
            r#"{"id":"r","turns":[
              {"sender":"customer","text":"I'm Ana"},
              {"sender":"customer","text":"book a table"},
              {"sender":"customer","text":"send me it"},
              {"sender":"customer","text":"call me"}]}"#,
            vec![
                (vec![fact("name", "Ana", "Ana")], vec![]),
                (vec![], vec![ask("name", "May I have your name?")]),
                (
                    vec![],
                    vec![ask("email", "What are your email and phone number?")],
                ),
                (
                    vec![],
                    vec![ask("phone", "Your phone?"), ask("vip", "Are you a VIP?")],
                ),
            ],
        );
        let (counts, _) = score_case(&run);
        assert_eq!(counts.redundant_asks, 1);
        // The two-field question, the second ask of a turn, and the
        // unconfigured field it targets.
        assert_eq!(counts.multi_field_asks, 3);
        let named = fields_named(&fields(), &ask("name", "What name is on the booking?"));
        assert_eq!(named, vec!["name".to_owned()]);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&samples, 0.5), Some(10.0));
        assert_eq!(percentile(&samples, 0.95), Some(19.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
