//! Plays eval cases through the decision core the worker runs, turn by
//! turn, keeping the state the worker would keep in Postgres (known fields,
//! earlier asks, declines) in memory. Where the facts and asks come from is a
//! [`Proposer`]: the keyword triggers offline, a scripted adversary in the
//! hostile suite, a language model in live evals. Whatever it proposes goes
//! through [`decide::decide`], so the scores are those of production.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};

use super::case::{Case, DEFAULT_REQUIRED, Expect};
use crate::config::AsksSettings;
use crate::decide::policy::{AskPolicy, Source};
use crate::decide::triggers::{TriggerError, Triggers};
use crate::decide::{
    self, AcceptedAsk, AskState, Decision, Gate, Known, PastAsk, PatternStage, Proposal,
    TurnContext,
};
use crate::event::Sender;
use crate::fields::FieldSet;
use crate::turn::Turn;

/// Turns before a message the decision core sees unless configured.
pub const DEFAULT_RECENT_TURNS: usize = 10;

/// Phone region of a case whose workspace sets none.
pub const DEFAULT_REGION: &str = "US";

/// What every case runs with besides its own workspace.
#[derive(Debug, Clone)]
pub struct EvalEnv {
    /// Ask limits.
    pub policy: AskPolicy,
    /// Natural moments to ask.
    pub triggers: Triggers,
    /// Required fields of a case that does not set them.
    pub default_required: Vec<String>,
    /// Phone region of a case that does not set one.
    pub default_region: String,
    /// Source of the values in a case's `profile`.
    pub profile_source: Source,
    /// Turns before a message the decision core sees, as the worker's
    /// `redis.recent_turns`.
    pub recent_turns: usize,
}

impl EvalEnv {
    /// The environment for the configured ask policy and triggers, with the
    /// default workspace of docs/contract.md §1.1 (`name` and `email` required, region
    /// US) and profile values known from an external system (`api`).
    pub fn new(asks: &AsksSettings) -> Result<EvalEnv, TriggerError> {
        Ok(EvalEnv {
            policy: asks.policy.clone(),
            triggers: Triggers::new(&asks.triggers, &asks.lexicon)?,
            default_required: DEFAULT_REQUIRED.iter().map(|s| s.to_string()).collect(),
            default_region: DEFAULT_REGION.to_owned(),
            profile_source: Source::Api,
            recent_turns: DEFAULT_RECENT_TURNS,
        })
    }
}

/// An earlier message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryTurn {
    /// Who wrote it.
    pub sender: Sender,
    /// The message.
    pub text: String,
}

/// What a proposer is given for one customer message.
#[derive(Debug, Clone, Copy)]
pub struct ProposalRequest<'a> {
    /// The case being run.
    pub case_id: &'a str,
    /// Index of the message in the case's turns (0-based).
    pub turn_index: usize,
    /// The decision core's view of the message.
    pub ctx: TurnContext<'a>,
    /// What the deterministic extractor already found.
    pub stage: &'a PatternStage,
    /// Earlier messages of the conversation, oldest first.
    pub history: &'a [HistoryTurn],
}

/// A proposer's answer for one message and what it cost.
#[derive(Debug, Clone)]
pub struct ProposalResult {
    /// The proposal, or why none could be made (a failed or malformed model
    /// reply). On an error the runner decides on the patterns alone (an
    /// empty proposal), as the worker's model stage degrades.
    pub proposal: Result<Proposal, String>,
    /// Model calls made.
    pub calls: u32,
    /// Prompt tokens spent.
    pub prompt_tokens: u64,
    /// Completion tokens spent.
    pub completion_tokens: u64,
    /// Latency to report instead of the measured one (a replayed call's
    /// recorded latency).
    pub latency: Option<Duration>,
}

impl ProposalResult {
    /// A proposal made without a model call.
    pub fn free(proposal: Proposal) -> ProposalResult {
        ProposalResult {
            proposal: Ok(proposal),
            calls: 0,
            prompt_tokens: 0,
            completion_tokens: 0,
            latency: None,
        }
    }

    /// No usable proposal.
    pub fn failed(reason: impl Into<String>) -> ProposalResult {
        ProposalResult {
            proposal: Err(reason.into()),
            ..ProposalResult::free(Proposal::default())
        }
    }
}

/// Proposes facts and asks for a customer message. Object-safe and
/// asynchronous so a language-model client can implement it.
pub trait Proposer: Send + Sync {
    /// Short name for reports.
    fn name(&self) -> &str;

    /// Whether the runner consults [`decide::gate`] first, as the worker
    /// does before paying for a model call. A gated-out message is decided
    /// on the patterns alone (an empty proposal) and costs nothing.
    fn gated(&self) -> bool {
        false
    }

    /// The proposal for one customer message.
    fn propose<'a>(&'a self, request: &'a ProposalRequest<'a>) -> BoxFuture<'a, ProposalResult>;
}

/// The offline proposer: keyword triggers only, exactly what the worker
/// runs with no model configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineProposer;

impl Proposer for OfflineProposer {
    fn name(&self) -> &str {
        "offline"
    }

    fn propose<'a>(&'a self, request: &'a ProposalRequest<'a>) -> BoxFuture<'a, ProposalResult> {
        let proposal = decide::offline_proposal(&request.ctx, request.stage);
        futures::future::ready(ProposalResult::free(proposal)).boxed()
    }
}

/// How the proposer was used on one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProposerUse {
    /// The proposer was asked.
    pub called: bool,
    /// The gate skipped it, for this reason.
    pub skipped: Option<&'static str>,
    /// It failed, and the message was decided on the patterns alone.
    pub error: Option<String>,
    /// Model calls.
    pub calls: u32,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// How long it took.
    pub latency: Option<Duration>,
}

/// One customer message of a case and what was decided on it.
#[derive(Debug, Clone)]
pub struct TurnRecord {
    /// Index in the case's turns (0-based).
    pub turn_index: usize,
    /// Customer turn number (1 for the first customer message).
    pub customer_turn: u32,
    /// The message.
    pub text: String,
    /// What the case expects here.
    pub expect: Option<Expect>,
    /// Fields known before this message.
    pub known_before: BTreeMap<String, Known>,
    /// Fields declined before this message.
    pub declined_before: BTreeSet<String>,
    /// The decision core's decision.
    pub decision: Decision,
    /// Asks accepted on this message (the core allows at most one; kept as
    /// a list so the metrics can check that).
    pub asks: Vec<AcceptedAsk>,
    /// Proposer use.
    pub proposer: ProposerUse,
}

/// A case after running it.
#[derive(Debug, Clone)]
pub struct CaseRun {
    /// The case id.
    pub case_id: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// The workspace's fields.
    pub fields: FieldSet,
    /// The phone region used.
    pub default_region: String,
    /// Every customer message, in order.
    pub turns: Vec<TurnRecord>,
}

/// Why a case could not run.
#[derive(Debug, thiserror::Error)]
#[error("case {case_id}: {message}")]
pub struct RunError {
    /// The case.
    pub case_id: String,
    /// What went wrong.
    pub message: String,
}

/// Runs one case.
pub async fn run_case(
    case: &Case,
    env: &EvalEnv,
    proposer: &dyn Proposer,
) -> Result<CaseRun, RunError> {
    let fields = case
        .field_set(&env.default_required)
        .map_err(|e| RunError {
            case_id: case.id.clone(),
            message: format!("workspace fields: {e}"),
        })?;
    let region = case
        .default_region()
        .unwrap_or(&env.default_region)
        .to_owned();
    let mut known: BTreeMap<String, Known> = case
        .profile
        .iter()
        .map(|(field, value)| {
            (
                field.clone(),
                Known {
                    value: value.clone(),
                    source: case.profile_source.unwrap_or(env.profile_source),
                },
            )
        })
        .collect();
    let mut asks = AskState::default();
    let mut history: Vec<HistoryTurn> = Vec::new();
    let mut said: Vec<Turn> = Vec::new();
    let mut turns = Vec::new();
    for (turn_index, turn) in case.turns.iter().enumerate() {
        if turn.sender != Sender::Customer {
            history.push(HistoryTurn {
                sender: turn.sender,
                text: turn.text.clone(),
            });
            said.push(Turn {
                message_id: turn_index as i64,
                sender: turn.sender,
                text: turn.text.clone(),
            });
            continue;
        }
        asks.customer_turn += 1;
        // The worker sees the last `recent_turns` turns before a message.
        let recent = &said[said.len().saturating_sub(env.recent_turns)..];
        let ctx = TurnContext {
            fields: &fields,
            default_region: Some(&region),
            text: &turn.text,
            known: &known,
            asks: &asks,
            policy: &env.policy,
            triggers: &env.triggers,
            recent,
        };
        let stage = decide::pattern_stage(&ctx);
        let mut usage = ProposerUse::default();
        let skip = match proposer.gated() {
            true => match decide::gate(&ctx, &stage, true, true) {
                Gate::Skip(reason) => Some(reason),
                Gate::CallModel => None,
            },
            false => None,
        };
        let proposal = match skip {
            Some(reason) => {
                usage.skipped = Some(reason);
                Proposal::default()
            }
            None => {
                let request = ProposalRequest {
                    case_id: &case.id,
                    turn_index,
                    ctx,
                    stage: &stage,
                    history: &history,
                };
                let started = Instant::now();
                let result = proposer.propose(&request).await;
                usage.called = true;
                usage.latency = Some(result.latency.unwrap_or_else(|| started.elapsed()));
                usage.calls = result.calls;
                usage.prompt_tokens = result.prompt_tokens;
                usage.completion_tokens = result.completion_tokens;
                match result.proposal {
                    Ok(proposal) => proposal,
                    Err(error) => {
                        usage.error = Some(error);
                        Proposal::default()
                    }
                }
            }
        };
        let decided = decide::decide(&ctx, &stage, &proposal);
        let record = TurnRecord {
            turn_index,
            customer_turn: asks.customer_turn,
            text: turn.text.clone(),
            expect: turn.expect.clone(),
            known_before: known.clone(),
            declined_before: asks.declined.clone(),
            asks: decided.ask.iter().cloned().collect(),
            decision: decided,
            proposer: usage,
        };
        apply(&record.decision, &mut known, &mut asks, &env.policy);
        history.push(HistoryTurn {
            sender: Sender::Customer,
            text: turn.text.clone(),
        });
        said.push(Turn {
            message_id: turn_index as i64,
            sender: Sender::Customer,
            text: turn.text.clone(),
        });
        turns.push(record);
    }
    Ok(CaseRun {
        case_id: case.id.clone(),
        tags: case.tags.clone(),
        fields,
        default_region: region,
        turns,
    })
}

/// Writes a decision into the in-memory state the way the worker writes it
/// into the store: facts become known (source `customer`), declines are
/// remembered, pending asks are closed when answered, declined or ignored
/// for too long, and an accepted ask is logged as pending.
pub fn apply(
    decided: &Decision,
    known: &mut BTreeMap<String, Known>,
    asks: &mut AskState,
    policy: &AskPolicy,
) {
    for fact in &decided.facts {
        known.insert(
            fact.field.clone(),
            Known {
                value: fact.value.clone(),
                source: Source::Customer,
            },
        );
    }
    asks.declined.extend(decided.declined.iter().cloned());
    let turn = asks.customer_turn;
    for past in asks.asks.iter_mut().filter(|a| a.pending) {
        if known.contains_key(&past.field)
            || asks.declined.contains(&past.field)
            || past.customer_turn + policy.ignored_after_turns <= turn
        {
            past.pending = false;
        }
    }
    if let Some(ask) = &decided.ask {
        asks.asks.push(PastAsk {
            field: ask.field.clone(),
            customer_turn: turn,
            pending: true,
        });
        *asks.field_attempts.entry(ask.field.clone()).or_insert(0) += 1;
    }
}

/// Runs `cases` with up to `concurrency` at once, results in case order;
/// `done` is called after each case.
pub async fn run_cases(
    cases: &[Case],
    env: &EvalEnv,
    proposer: &dyn Proposer,
    concurrency: usize,
    done: &(dyn Fn(&CaseRun) + Sync),
) -> Result<Vec<CaseRun>, RunError> {
    let mut stream = futures::stream::iter(cases)
        .map(|case| run_case(case, env, proposer))
        .buffered(concurrency.max(1));
    let mut runs = Vec::with_capacity(cases.len());
    while let Some(run) = stream.next().await {
        let run = run?;
        done(&run);
        runs.push(run);
    }
    Ok(runs)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::decide::triggers::TriggerConfig;

    /// The environment unit tests run with: the default policy and the
    /// `send` and `booking` triggers.
    pub(crate) fn env() -> EvalEnv {
        EvalEnv {
            policy: AskPolicy::default(),
            triggers: Triggers::new(
                &[
                    TriggerConfig {
                        name: "send".into(),
                        reason: "wants something sent".into(),
                        fields: vec!["email".into()],
                        keywords: vec!["send me".into(), "brochure".into()],
                    },
                    TriggerConfig {
                        name: "booking".into(),
                        reason: "wants to book".into(),
                        fields: vec!["name".into(), "phone".into()],
                        keywords: vec!["book".into()],
                    },
                ],
                &Default::default(),
            )
            .expect("triggers"),
            default_required: vec!["name".into(), "email".into()],
            default_region: DEFAULT_REGION.into(),
            profile_source: Source::Api,
            recent_turns: DEFAULT_RECENT_TURNS,
        }
    }

    pub(crate) fn case(json: &str) -> Case {
        serde_json::from_str(json).expect("case parses")
    }

    pub(crate) fn run(case: &Case, proposer: &dyn Proposer) -> CaseRun {
        futures::executor::block_on(run_case(case, &env(), proposer)).expect("case runs")
    }

    #[test]
    fn state_carries_across_turns() {
        let case = case(
            r#"{"id":"flow","turns":[
                {"sender":"customer","text":"Hi, Mike here. Can you send me the brochure?"},
                {"sender":"bot","text":"Sure Mike! What's your email?"},
                {"sender":"customer","text":"mike.tan@acme.io"},
                {"sender":"customer","text":"and send me the brochure again please"}]}"#,
        );
        let run = run(&case, &OfflineProposer);
        assert_eq!(run.turns.len(), 3);
        let first = &run.turns[0];
        assert_eq!(first.customer_turn, 1);
        assert_eq!(first.asks.len(), 1);
        assert_eq!(first.asks[0].field, "email");
        let second = &run.turns[1];
        assert_eq!(second.turn_index, 2);
        assert!(second.known_before.contains_key("name"));
        assert_eq!(second.decision.facts[0].value, "mike.tan@acme.io");
        let third = &run.turns[2];
        assert!(third.known_before.contains_key("email"));
        assert!(third.asks.is_empty());
    }

    #[test]
    fn profile_values_are_known_from_the_start() {
        let case = case(
            r#"{"id":"p","profile":{"email":"a@b.co"},"turns":[
                {"sender":"customer","text":"send me the brochure"}]}"#,
        );
        let run = run(&case, &OfflineProposer);
        assert_eq!(run.turns[0].known_before["email"].source, Source::Api);
        assert!(run.turns[0].asks.is_empty());
    }

    #[test]
    fn a_customer_may_correct_what_they_stated_but_not_what_an_api_set() {
        let text =
            r#""turns":[{"sender":"customer","text":"I've changed my email, it's now new@b.co"}]}"#;
        let from_api = case(&format!(
            r#"{{"id":"a","profile":{{"email":"old@b.co"}},{text}"#
        ));
        let turn = &run(&from_api, &OfflineProposer).turns[0];
        assert!(turn.decision.facts.is_empty(), "{:?}", turn.decision.facts);
        let stated = case(&format!(
            r#"{{"id":"c","profile":{{"email":"old@b.co"}},"profile_source":"customer",{text}"#
        ));
        let turn = &run(&stated, &OfflineProposer).turns[0];
        assert_eq!(turn.known_before["email"].source, Source::Customer);
        assert_eq!(turn.decision.facts[0].value, "new@b.co");
    }

    #[test]
    fn a_failing_proposer_degrades_to_the_pattern_only_decision() {
        struct Broken;
        impl Proposer for Broken {
            fn name(&self) -> &str {
                "broken"
            }
            fn propose<'a>(&'a self, _: &'a ProposalRequest<'a>) -> BoxFuture<'a, ProposalResult> {
                futures::future::ready(ProposalResult::failed("malformed")).boxed()
            }
        }
        let case = case(
            r#"{"id":"b","turns":[{"sender":"customer","text":"I'm Ana, send me the brochure"}]}"#,
        );
        let run = run(&case, &Broken);
        let turn = &run.turns[0];
        assert_eq!(turn.proposer.error.as_deref(), Some("malformed"));
        assert_eq!(turn.decision.facts[0].value, "Ana");
        assert!(turn.asks.is_empty(), "no model, no ask: {:?}", turn.asks);
    }
}
