//! What the model is told about a customer message: the fields it may ask
//! for now and the template context. Shared by the worker's model stage and
//! the eval runner, so live evals send exactly what production sends.

use crate::decide::{self, PastAsk};
use crate::fields::FieldSet;
use crate::llm::TOOL_NAME;
use crate::llm::prompts::{EnrichContext, LastAsk, PromptField, PromptTurn};
use crate::store::asks::DecisionState;

/// Fields the policy would let the model ask for now, in priority order.
pub fn askable_fields(
    fields: &FieldSet,
    state: &DecisionState,
    stage: &decide::PatternStage,
    policy: &crate::decide::policy::AskPolicy,
    customer_turn: u32,
) -> Vec<String> {
    let asks = &state.asks.asks;
    let cooling = asks.last().is_some_and(|last| {
        customer_turn.saturating_sub(last.customer_turn) <= policy.cooldown_turns
    });
    if cooling || asks.len() as u32 >= policy.max_per_conversation {
        return Vec::new();
    }
    let mut missing: Vec<&crate::fields::FieldDef> = fields
        .iter()
        .filter(|f| !state.known.contains_key(&f.name))
        .filter(|f| !stage.facts.iter().any(|fact| fact.field == f.name))
        .filter(|f| !state.asks.declined.contains(&f.name) && !stage.declined.contains(&f.name))
        .filter(|f| {
            state.asks.field_attempts.get(&f.name).copied().unwrap_or(0)
                < policy.max_attempts_per_field
        })
        .filter(|f| f.required || f.name == "phone")
        .collect();
    missing.sort_by_key(|f| (f.ask_priority, f.name.clone()));
    missing.into_iter().map(|f| f.name.clone()).collect()
}

pub fn prompt_context(
    fields: &FieldSet,
    state: &DecisionState,
    askable: Vec<String>,
    recent_turns: Vec<PromptTurn>,
    new_message: &str,
    agent_instructions: Option<String>,
) -> EnrichContext {
    let last_ask = state.asks.asks.last().map(
        |PastAsk {
             field,
             customer_turn,
             ..
         }| LastAsk {
            field: field.clone(),
            turns_ago: state.asks.customer_turn.saturating_sub(*customer_turn),
        },
    );
    EnrichContext {
        tool_name: TOOL_NAME.to_owned(),
        fields: fields
            .iter()
            .filter(|f| f.ai_writable)
            .map(|f| PromptField {
                name: f.name.clone(),
                label: f.label.clone(),
                description: f.description.clone(),
                format: serde_json::to_value(f.format)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                options: f.options.clone(),
                required: f.required,
            })
            .collect(),
        known_fields: state.known.keys().cloned().collect(),
        missing_fields: fields
            .iter()
            .filter(|f| f.required && !state.known.contains_key(&f.name))
            .map(|f| f.name.clone())
            .collect(),
        declined: state.asks.declined.iter().cloned().collect(),
        asks_allowed: !askable.is_empty(),
        last_ask,
        recent_turns,
        new_message: new_message.to_owned(),
        agent_instructions,
    }
}
