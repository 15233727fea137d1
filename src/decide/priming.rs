//! Pays the decision core's one-time costs before the worker takes its first
//! event. The extractor's patterns are compiled on first use and the
//! phone-number metadata is loaded on the first phone number; measured in a
//! release build, the first `extract_facts` call took 9.3 ms, the first
//! `declined_fields` 2.5 ms and the first phone number 77 ms, against tens of
//! microseconds afterwards. Left to the first events, those costs land in
//! their latency, with every lane waiting on the same initialisation.

use std::collections::BTreeMap;

use super::triggers::Triggers;
use super::{AskState, Known, PastAsk, Proposal, ProposedAsk, ProposedFact, TurnContext};
use crate::decide::policy::{AskPolicy, Source};
use crate::fields::FieldSet;

/// Customer messages that between them reach every pattern family: names in
/// English, Spanish and Portuguese, emails, phone numbers, refusals, dates,
/// amounts and keyword triggers.
const SAMPLE_MESSAGES: [&str; 5] = [
    "Hi, my name is Ana Souza, email ana.souza@example.com, phone +1 415 555 0100",
    "Me llamo Carlos Pérez, mi correo es carlos@example.com; no quiero dar mi teléfono",
    "Meu nome é João Silva, prefiro não informar o telefone, pode enviar o orçamento?",
    "I'd rather not share my email. Book an appointment on 12 March 2026, budget $2,500",
    "no thanks, call me at (415) 555-0101 about my order, I'm a returning customer",
];

/// Replies read only in a conversation's later state: answers to an open
/// name ask and corrections of a known name.
const LATER_REPLIES: [&str; 3] = [
    "Jim. oh and the number ends in 0168",
    "佐藤です",
    "sorry, autocorrect — it's Stefan Clark",
];

/// Runs the whole decision on the sample messages with `fields`, once with
/// and once without a default phone region, including a proposal with facts
/// and an ask so the grounding checks run too; then the later replies with
/// a name known and the ask for it open.
pub fn prime(fields: &FieldSet, policy: &AskPolicy, triggers: &Triggers) {
    let known = BTreeMap::new();
    let asks = AskState::default();
    let name_known = BTreeMap::from([(
        "name".to_owned(),
        Known {
            value: "Ana".to_owned(),
            source: Source::Customer,
        },
    )]);
    let name_asked = AskState {
        asks: vec![PastAsk {
            field: "name".to_owned(),
            customer_turn: 1,
            pending: true,
        }],
        ..AskState::default()
    };
    for (text, known, asks) in LATER_REPLIES
        .iter()
        .flat_map(|text| [(text, &name_known, &asks), (text, &known, &name_asked)])
    {
        let ctx = TurnContext {
            fields,
            default_region: None,
            text,
            known,
            asks,
            policy,
            triggers,
            recent: &[],
        };
        super::pattern_stage(&ctx);
    }
    for region in [None, Some("US")] {
        for text in SAMPLE_MESSAGES {
            let ctx = TurnContext {
                fields,
                default_region: region,
                text,
                known: &known,
                asks: &asks,
                policy,
                triggers,
                recent: &[],
            };
            let stage = super::pattern_stage(&ctx);
            let offline = super::offline_proposal(&ctx, &stage);
            super::decide(&ctx, &stage, &offline);
            super::decide(&ctx, &stage, &model_like_proposal(fields, text));
        }
    }
}

/// A proposal of every field quoting the whole message, plus an ask for the
/// first field, as a model might send.
fn model_like_proposal(fields: &FieldSet, text: &str) -> Proposal {
    Proposal {
        facts: fields
            .iter()
            .map(|field| ProposedFact {
                field: field.name.clone(),
                value: text.to_owned(),
                quote: text.to_owned(),
            })
            .collect(),
        asks: fields
            .iter()
            .take(1)
            .map(|field| ProposedAsk {
                field: field.name.clone(),
                question: "?".to_owned(),
                reason: "priming".to_owned(),
            })
            .collect(),
        declined: Vec::new(),
        language: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::patterns::extract_facts;

    #[test]
    fn the_sample_messages_reach_the_name_email_and_phone_patterns() {
        let fields = FieldSet::new(Vec::new(), &[]).expect("built-in fields");
        let found: Vec<String> = SAMPLE_MESSAGES
            .iter()
            .flat_map(|text| extract_facts(text, &fields, Some("US")))
            .map(|fact| fact.field)
            .collect();
        for field in ["name", "email", "phone"] {
            assert!(
                found.iter().any(|f| f == field),
                "no sample message yields {field}: {found:?}"
            );
        }
    }

    #[test]
    fn the_later_replies_reach_the_answer_and_correction_patterns() {
        use crate::extract::patterns::{answer_to_name_ask, corrected_name};
        let fields = FieldSet::new(Vec::new(), &[]).expect("built-in fields");
        assert!(answer_to_name_ask(LATER_REPLIES[0], &fields, None).is_some());
        assert!(answer_to_name_ask(LATER_REPLIES[1], &fields, None).is_some());
        assert!(corrected_name(LATER_REPLIES[2], &fields, None).is_some());
    }

    #[test]
    fn the_sample_messages_reach_the_refusal_patterns() {
        let fields = FieldSet::new(Vec::new(), &[]).expect("built-in fields");
        let declined: Vec<String> = SAMPLE_MESSAGES
            .iter()
            .flat_map(|text| crate::extract::declines::declined_fields(text, &fields))
            .collect();
        assert!(
            declined.iter().any(|f| f == "phone") && declined.iter().any(|f| f == "email"),
            "refusals found: {declined:?}"
        );
    }
}
