//! The decision core: state in, decision out, no I/O. For one customer
//! message it runs the pattern extractor, decides whether the model is worth
//! calling, and then disposes of whatever was proposed (by the model, or by
//! the keyword triggers in offline mode): every fact must be configured,
//! writable, grounded in this turn's customer text, valid for its format and
//! allowed by source rank; every ask must target one missing, undeclined
//! field at a moment the policy allows. The worker and the eval runner both
//! drive this module, so what the evals measure is what production does.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::grounding::{find_quote, value_supported_by_quote};
use super::patterns::{Fact, extract_facts};
use super::triggers::Triggers;
use super::{declines, language};
use crate::fields::FieldSet;
use crate::policy::{AskPolicy, Source};

/// A field value already on the profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// The value.
    pub value: String,
    /// Where it came from.
    pub source: Source,
}

/// An ask made earlier in this conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PastAsk {
    /// The field asked for.
    pub field: String,
    /// The customer turn it answered.
    pub customer_turn: u32,
    /// Still waiting for an answer.
    pub pending: bool,
}

/// What the policy needs to know about earlier asks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskState {
    /// Customer turn number of the message being decided (1 for the first).
    pub customer_turn: u32,
    /// Asks made in this conversation, oldest first.
    pub asks: Vec<PastAsk>,
    /// Asks per field made of this customer in every conversation.
    pub field_attempts: BTreeMap<String, u32>,
    /// Fields the customer declined to give, in any conversation.
    pub declined: BTreeSet<String>,
}

/// Everything the core reads for one customer message.
#[derive(Debug, Clone, Copy)]
pub struct TurnContext<'a> {
    /// The workspace's fields.
    pub fields: &'a FieldSet,
    /// Region for phone numbers without a country code.
    pub default_region: Option<&'a str>,
    /// The customer's message.
    pub text: &'a str,
    /// Fields already on the profile.
    pub known: &'a BTreeMap<String, Known>,
    /// Earlier asks and declines.
    pub asks: &'a AskState,
    /// Ask limits.
    pub policy: &'a AskPolicy,
    /// Natural moments to ask.
    pub triggers: &'a Triggers,
}

/// What the deterministic extractor found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatternStage {
    /// Facts found by patterns.
    pub facts: Vec<Fact>,
    /// Fields the customer refused to give.
    pub declined: Vec<String>,
}

/// A fact proposed by the model (or a test double of it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedFact {
    /// Field name.
    pub field: String,
    /// Proposed value.
    pub value: String,
    /// The customer's words it rests on, verbatim.
    pub quote: String,
}

/// An ask proposed by the model or a trigger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedAsk {
    /// The field to ask for.
    pub field: String,
    /// The suggested question.
    pub question: String,
    /// Why now.
    pub reason: String,
}

/// Everything proposed for one turn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Proposed facts.
    pub facts: Vec<ProposedFact>,
    /// Proposed asks (the policy keeps at most one).
    pub asks: Vec<ProposedAsk>,
    /// Fields the customer declined.
    pub declined: Vec<String>,
    /// The customer's language (ISO 639-1).
    pub language: Option<String>,
}

/// Where an accepted fact came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// The deterministic extractor.
    Pattern,
    /// The model.
    Model,
}

/// A fact to write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedFact {
    /// Field name.
    pub field: String,
    /// Normalised value.
    pub value: String,
    /// The customer's words.
    pub quote: String,
    /// Who found it.
    pub origin: Origin,
}

/// The one ask to publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedAsk {
    /// The field.
    pub field: String,
    /// The question in the customer's language.
    pub question: String,
    /// Why now.
    pub reason: String,
    /// Language of the question.
    pub language: String,
}

/// A proposal that was not accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The field concerned.
    pub field: String,
    /// Stable reason code (metrics, the LLM-calls row, evals).
    pub reason: &'static str,
    /// `fact` or `ask`.
    pub kind: &'static str,
}

/// The outcome for one customer message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Facts to write.
    pub facts: Vec<AcceptedFact>,
    /// Fields to record as declined.
    pub declined: Vec<String>,
    /// The ask to publish, if any.
    pub ask: Option<AcceptedAsk>,
    /// What was refused.
    pub rejections: Vec<Rejected>,
    /// The customer's language.
    pub language: String,
}

/// Whether to call the model for this message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Something may be learnt or asked.
    CallModel,
    /// Skip it, for this reason.
    Skip(&'static str),
}

static GENERIC_REFUSAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?iu)^\W*(no|nope|nah|no thanks|no thank you|not now|i'?d rather not|rather not|prefer not|i prefer not|skip|no gracias|prefiero no|não|nao|não obrigado|prefiro não|tidak|nggak|non merci|nein|いいえ|結構です|ไม่)\b",
    )
    .expect("valid regex")
});

/// Runs the deterministic extractor.
pub fn pattern_stage(ctx: &TurnContext<'_>) -> PatternStage {
    PatternStage {
        facts: extract_facts(ctx.text, ctx.fields, ctx.default_region),
        declined: declines::declined_fields(ctx.text, ctx.fields),
    }
}

/// Decides whether the model is worth a call: only when enrichment is on,
/// budget is left, and a required field is still missing after the patterns
/// or a custom field could be learnt.
pub fn gate(
    ctx: &TurnContext<'_>,
    stage: &PatternStage,
    enrichment_enabled: bool,
    budget_left: bool,
) -> Gate {
    if !enrichment_enabled {
        return Gate::Skip("enrichment_off");
    }
    if !budget_left {
        return Gate::Skip("budget_spent");
    }
    let found: BTreeSet<&str> = stage.facts.iter().map(|f| f.field.as_str()).collect();
    let missing_required = ctx.fields.iter().any(|f| {
        f.required && !ctx.known.contains_key(&f.name) && !found.contains(f.name.as_str())
    });
    let custom_writable = ctx
        .fields
        .iter()
        .any(|f| f.ai_writable && !crate::fields::BUILTIN_FIELDS.contains(&f.name.as_str()));
    if missing_required || custom_writable {
        Gate::CallModel
    } else {
        Gate::Skip("nothing_to_collect")
    }
}

/// The offline proposal: an ask from the first keyword trigger that fires,
/// for the first of its fields still missing.
pub fn offline_proposal(ctx: &TurnContext<'_>, stage: &PatternStage) -> Proposal {
    let language = language::detect(ctx.text).to_owned();
    let found: BTreeSet<&str> = stage.facts.iter().map(|f| f.field.as_str()).collect();
    let mut asks = Vec::new();
    for fired in ctx.triggers.fired(ctx.text) {
        let missing = fired.fields.iter().find(|field| {
            ctx.fields.get(field).is_some()
                && !ctx.known.contains_key(*field)
                && !found.contains(field.as_str())
                && !ctx.asks.declined.contains(*field)
                && !stage.declined.contains(field)
        });
        if let Some(field) = missing {
            asks.push(ProposedAsk {
                field: field.clone(),
                question: String::new(),
                reason: fired.reason.to_owned(),
            });
            break;
        }
    }
    Proposal {
        facts: Vec::new(),
        asks,
        declined: Vec::new(),
        language: Some(language),
    }
}

/// Disposes of the patterns' findings and a proposal.
pub fn decide(ctx: &TurnContext<'_>, stage: &PatternStage, proposal: &Proposal) -> Decision {
    let mut decision = Decision {
        language: proposal
            .language
            .as_deref()
            .filter(|l| is_language_code(l))
            .unwrap_or_else(|| language::detect(ctx.text))
            .to_owned(),
        ..Decision::default()
    };
    for fact in &stage.facts {
        accept_fact(
            ctx,
            &mut decision,
            &fact.field,
            &fact.value,
            &fact.quote,
            Origin::Pattern,
        );
    }
    for proposed in &proposal.facts {
        if stage.facts.iter().any(|f| f.field == proposed.field) {
            continue;
        }
        match validate_model_fact(ctx, proposed) {
            Ok(value) => accept_fact(
                ctx,
                &mut decision,
                &proposed.field,
                &value,
                &proposed.quote,
                Origin::Model,
            ),
            Err(reason) => reject(&mut decision, &proposed.field, reason, "fact"),
        }
    }
    collect_declines(ctx, stage, proposal, &mut decision);
    choose_ask(ctx, proposal, &mut decision);
    decision
}

fn reject(decision: &mut Decision, field: &str, reason: &'static str, kind: &'static str) {
    decision.rejections.push(Rejected {
        field: field.to_owned(),
        reason,
        kind,
    });
}

fn accept_fact(
    ctx: &TurnContext<'_>,
    decision: &mut Decision,
    field: &str,
    value: &str,
    quote: &str,
    origin: Origin,
) {
    if let Some(known) = ctx.known.get(field) {
        if !Source::Customer.may_overwrite(known.source) {
            reject(decision, field, "outranked", "fact");
            return;
        }
        if known.value == value {
            return;
        }
    }
    if decision.facts.iter().any(|f| f.field == field) {
        return;
    }
    decision.facts.push(AcceptedFact {
        field: field.to_owned(),
        value: value.to_owned(),
        quote: quote.to_owned(),
        origin,
    });
}

fn validate_model_fact(
    ctx: &TurnContext<'_>,
    proposed: &ProposedFact,
) -> Result<String, &'static str> {
    let Some(def) = ctx.fields.get(&proposed.field) else {
        return Err("unconfigured_field");
    };
    if !def.ai_writable {
        return Err("not_ai_writable");
    }
    let Some(span) = find_quote(&proposed.quote, ctx.text) else {
        return Err("quote_not_in_customer_text");
    };
    let quote = &ctx.text[span];
    if !value_supported_by_quote(
        ctx.fields,
        &proposed.field,
        &proposed.value,
        quote,
        ctx.default_region,
    ) {
        return Err("value_not_in_quote");
    }
    ctx.fields
        .normalize(&proposed.field, &proposed.value, ctx.default_region)
        .map_err(|rejection| rejection.as_str())
}

fn collect_declines(
    ctx: &TurnContext<'_>,
    stage: &PatternStage,
    proposal: &Proposal,
    decision: &mut Decision,
) {
    let mut declined: BTreeSet<String> = stage.declined.iter().cloned().collect();
    // A bare refusal right after an ask declines the field that was asked.
    if let Some(last) = ctx.asks.asks.last()
        && last.pending
        && last.customer_turn + 1 == ctx.asks.customer_turn
        && GENERIC_REFUSAL.is_match(ctx.text)
    {
        declined.insert(last.field.clone());
    }
    // The model may only confirm refusals the text makes explicitly or that
    // answer a pending ask; it cannot invent them for other fields.
    for field in &proposal.declined {
        let answers_pending = ctx.asks.asks.iter().any(|a| a.pending && &a.field == field);
        if ctx.fields.get(field).is_some() && answers_pending && GENERIC_REFUSAL.is_match(ctx.text)
        {
            declined.insert(field.clone());
        }
    }
    declined.retain(|field| !decision.facts.iter().any(|f| &f.field == field));
    decision.declined = declined.into_iter().collect();
}

fn choose_ask(ctx: &TurnContext<'_>, proposal: &Proposal, decision: &mut Decision) {
    for ask in &proposal.asks {
        if decision.ask.is_some() {
            reject(decision, &ask.field, "multiple_asks", "ask");
            continue;
        }
        match validate_ask(ctx, ask, decision) {
            Ok(()) => {
                let question = if ask.question.trim().is_empty() {
                    language::default_question(&decision.language, &ask.field, ctx.fields)
                } else {
                    ask.question.trim().to_owned()
                };
                decision.ask = Some(AcceptedAsk {
                    field: ask.field.clone(),
                    question,
                    reason: ask.reason.clone(),
                    language: decision.language.clone(),
                });
            }
            Err(reason) => reject(decision, &ask.field, reason, "ask"),
        }
    }
}

fn validate_ask(
    ctx: &TurnContext<'_>,
    ask: &ProposedAsk,
    decision: &Decision,
) -> Result<(), &'static str> {
    let Some(def) = ctx.fields.get(&ask.field) else {
        return Err("unconfigured_field");
    };
    if ctx.known.contains_key(&ask.field) || decision.facts.iter().any(|f| f.field == ask.field) {
        return Err("known_field");
    }
    if ctx.asks.declined.contains(&ask.field) || decision.declined.contains(&ask.field) {
        return Err("declined_field");
    }
    if !def.required && !moment_calls_for(ctx, &ask.field) {
        return Err("optional_field");
    }
    let conversation_asks = ctx.asks.asks.len() as u32;
    if conversation_asks >= ctx.policy.max_per_conversation {
        return Err("conversation_cap");
    }
    if let Some(last) = ctx.asks.asks.last()
        && ctx.asks.customer_turn.saturating_sub(last.customer_turn) <= ctx.policy.cooldown_turns
    {
        return Err("cooldown");
    }
    let attempts = ctx
        .asks
        .field_attempts
        .get(&ask.field)
        .copied()
        .unwrap_or(0);
    if attempts >= ctx.policy.max_attempts_per_field {
        return Err("field_cap");
    }
    Ok(())
}

/// An optional field may be asked only when a trigger for it fires now.
fn moment_calls_for(ctx: &TurnContext<'_>, field: &str) -> bool {
    ctx.triggers
        .fired(ctx.text)
        .iter()
        .any(|fired| fired.fields.iter().any(|f| f == field))
}

fn is_language_code(code: &str) -> bool {
    (2..=3).contains(&code.len()) && code.chars().all(|c| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::triggers::TriggerConfig;

    struct World {
        fields: FieldSet,
        known: BTreeMap<String, Known>,
        asks: AskState,
        policy: AskPolicy,
        triggers: Triggers,
    }

    impl World {
        fn new() -> World {
            World {
                fields: FieldSet::new(vec![], &["name".into(), "email".into()]).expect("fields"),
                known: BTreeMap::new(),
                asks: AskState {
                    customer_turn: 1,
                    ..AskState::default()
                },
                policy: AskPolicy::default(),
                triggers: Triggers::new(&[
                    TriggerConfig {
                        name: "send".into(),
                        reason: "wants something sent".into(),
                        fields: vec!["email".into()],
                        keywords: vec!["send me".into()],
                    },
                    TriggerConfig {
                        name: "booking".into(),
                        reason: "wants to book".into(),
                        fields: vec!["name".into(), "phone".into()],
                        keywords: vec!["book".into()],
                    },
                ])
                .expect("triggers"),
            }
        }

        fn ctx<'a>(&'a self, text: &'a str) -> TurnContext<'a> {
            TurnContext {
                fields: &self.fields,
                default_region: Some("US"),
                text,
                known: &self.known,
                asks: &self.asks,
                policy: &self.policy,
                triggers: &self.triggers,
            }
        }

        fn offline(&self, text: &str) -> Decision {
            let ctx = self.ctx(text);
            let stage = pattern_stage(&ctx);
            decide(&ctx, &stage, &offline_proposal(&ctx, &stage))
        }

        fn with_model(&self, text: &str, proposal: &Proposal) -> Decision {
            let ctx = self.ctx(text);
            decide(&ctx, &pattern_stage(&ctx), proposal)
        }
    }

    fn fact(field: &str, value: &str, quote: &str) -> ProposedFact {
        ProposedFact {
            field: field.into(),
            value: value.into(),
            quote: quote.into(),
        }
    }

    fn ask(field: &str) -> ProposedAsk {
        ProposedAsk {
            field: field.into(),
            question: format!("What is your {field}?"),
            reason: "test".into(),
        }
    }

    #[test]
    fn volunteered_name_is_recorded_and_send_asks_for_email() {
        let world = World::new();
        let decision = world.offline("Hi, Mike here. Can you send me the price list?");
        assert_eq!(decision.facts.len(), 1);
        assert_eq!(
            (
                decision.facts[0].field.as_str(),
                decision.facts[0].value.as_str()
            ),
            ("name", "Mike")
        );
        let asked = decision.ask.expect("an ask");
        assert_eq!(asked.field, "email");
        assert!(!asked.question.is_empty());
    }

    #[test]
    fn a_plain_greeting_asks_nothing() {
        assert_eq!(
            World::new()
                .offline("Hello! What are your opening hours?")
                .ask,
            None
        );
    }

    #[test]
    fn booking_asks_name_first_then_phone() {
        let mut world = World::new();
        assert_eq!(
            world
                .offline("I'd like to book a table")
                .ask
                .map(|a| a.field),
            Some("name".into())
        );
        world.known.insert(
            "name".into(),
            Known {
                value: "Ann".into(),
                source: Source::Customer,
            },
        );
        assert_eq!(
            world
                .offline("I'd like to book a table")
                .ask
                .map(|a| a.field),
            Some("phone".into())
        );
    }

    #[test]
    fn model_values_must_be_grounded_in_the_customer_text() {
        let world = World::new();
        let text = "hi, I need help with my order";
        let proposal = Proposal {
            facts: vec![
                fact("name", "John", "I need help"),
                fact("email", "john@x.com", "john@x.com"),
                fact("vip_tag", "yes", "help"),
            ],
            ..Proposal::default()
        };
        let decision = world.with_model(text, &proposal);
        assert!(decision.facts.is_empty());
        let reasons: Vec<&str> = decision.rejections.iter().map(|r| r.reason).collect();
        assert_eq!(
            reasons,
            vec![
                "value_not_in_quote",
                "quote_not_in_customer_text",
                "unconfigured_field"
            ]
        );
    }

    #[test]
    fn a_grounded_model_fact_is_normalised() {
        let world = World::new();
        let text = "you can reach me at Mike.Tan@Acme.io!";
        let proposal = Proposal {
            facts: vec![fact("email", "Mike.Tan@Acme.io", "Mike.Tan@Acme.io")],
            ..Proposal::default()
        };
        let decision = world.with_model(text, &proposal);
        assert_eq!(decision.facts.len(), 1);
        assert_eq!(decision.facts[0].value, "mike.tan@acme.io");
    }

    #[test]
    fn agent_values_are_locked_against_the_customer() {
        let mut world = World::new();
        world.known.insert(
            "email".into(),
            Known {
                value: "agent@x.com".into(),
                source: Source::Agent,
            },
        );
        let decision = world.offline("my email is me@y.com");
        assert!(decision.facts.is_empty());
        assert_eq!(decision.rejections[0].reason, "outranked");
    }

    #[test]
    fn asks_for_known_declined_or_extra_fields_are_dropped() {
        let mut world = World::new();
        world.known.insert(
            "name".into(),
            Known {
                value: "Ann".into(),
                source: Source::Customer,
            },
        );
        world.asks.declined.insert("email".into());
        let proposal = Proposal {
            asks: vec![ask("name"), ask("email")],
            ..Proposal::default()
        };
        let decision = world.with_model("ok send me info", &proposal);
        assert_eq!(decision.ask, None);
        let reasons: Vec<&str> = decision.rejections.iter().map(|r| r.reason).collect();
        assert_eq!(reasons, vec!["known_field", "declined_field"]);
    }

    #[test]
    fn two_asks_become_one() {
        let world = World::new();
        let proposal = Proposal {
            asks: vec![ask("email"), ask("name")],
            ..Proposal::default()
        };
        let decision = world.with_model("send me the brochure", &proposal);
        assert_eq!(decision.ask.map(|a| a.field), Some("email".into()));
        assert_eq!(decision.rejections[0].reason, "multiple_asks");
    }

    #[test]
    fn cooldown_and_caps_hold() {
        let mut world = World::new();
        world.asks.asks.push(PastAsk {
            field: "name".into(),
            customer_turn: 1,
            pending: true,
        });
        world.asks.customer_turn = 3;
        let decision = world.with_model(
            "send me it",
            &Proposal {
                asks: vec![ask("email")],
                ..Proposal::default()
            },
        );
        assert_eq!(decision.rejections[0].reason, "cooldown");
        world.asks.customer_turn = 4;
        let decision = world.with_model(
            "send me it",
            &Proposal {
                asks: vec![ask("email")],
                ..Proposal::default()
            },
        );
        assert_eq!(decision.ask.map(|a| a.field), Some("email".into()));
        world.asks.asks.push(PastAsk {
            field: "phone".into(),
            customer_turn: 2,
            pending: false,
        });
        world.asks.customer_turn = 10;
        let decision = world.with_model(
            "send me it",
            &Proposal {
                asks: vec![ask("email")],
                ..Proposal::default()
            },
        );
        assert_eq!(decision.rejections[0].reason, "conversation_cap");
        world.asks.asks.clear();
        world.asks.field_attempts.insert("email".into(), 2);
        let decision = world.with_model(
            "send me it",
            &Proposal {
                asks: vec![ask("email")],
                ..Proposal::default()
            },
        );
        assert_eq!(decision.rejections[0].reason, "field_cap");
    }

    #[test]
    fn optional_fields_are_asked_only_when_the_moment_calls_for_it() {
        let world = World::new();
        let decision = world.with_model(
            "thanks",
            &Proposal {
                asks: vec![ask("phone")],
                ..Proposal::default()
            },
        );
        assert_eq!(decision.rejections[0].reason, "optional_field");
        let decision = world.with_model(
            "can I book for 7pm",
            &Proposal {
                asks: vec![ask("phone")],
                ..Proposal::default()
            },
        );
        assert_eq!(decision.ask.map(|a| a.field), Some("phone".into()));
    }

    #[test]
    fn a_bare_no_after_an_ask_declines_that_field() {
        let mut world = World::new();
        world.asks.asks.push(PastAsk {
            field: "email".into(),
            customer_turn: 1,
            pending: true,
        });
        world.asks.customer_turn = 2;
        assert_eq!(
            world.offline("no thanks").declined,
            vec!["email".to_owned()]
        );
        assert!(world.offline("what time do you open?").declined.is_empty());
    }

    #[test]
    fn the_gate_skips_when_there_is_nothing_to_learn() {
        let mut world = World::new();
        let ctx = world.ctx("hello");
        let stage = pattern_stage(&ctx);
        assert_eq!(gate(&ctx, &stage, true, true), Gate::CallModel);
        assert_eq!(
            gate(&ctx, &stage, false, true),
            Gate::Skip("enrichment_off")
        );
        assert_eq!(gate(&ctx, &stage, true, false), Gate::Skip("budget_spent"));
        world.known.insert(
            "name".into(),
            Known {
                value: "A".into(),
                source: Source::Customer,
            },
        );
        world.known.insert(
            "email".into(),
            Known {
                value: "a@b.co".into(),
                source: Source::Customer,
            },
        );
        let ctx = world.ctx("hello");
        assert_eq!(
            gate(&ctx, &stage, true, true),
            Gate::Skip("nothing_to_collect")
        );
    }
}
