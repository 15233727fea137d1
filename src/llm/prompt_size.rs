//! What enrichment requests cost in prompt tokens, counted with OpenAI's
//! `o200k_base` tokenizer (the GPT-4o family's) on a sized sample: a
//! ten-turn conversation in a workspace with five custom fields, whose every
//! customer message is sent with the turns before it. `enricher prompts
//! check` prints the median and the largest request for the operator's
//! templates, and a test keeps the shipped templates' median under
//! [`PROMPT_TOKEN_BUDGET`], so a prompt edit that makes every call dearer is
//! noticed before it ships.
//!
//! The tool definition is counted as the JSON the request carries; OpenAI
//! renders tools more compactly before tokenising, so this errs high.

use tiktoken_rs::CoreBPE;

use super::context;
use super::prompts::{PromptError, PromptSet, PromptTurn};
use super::schema::{self, FieldEnums};
use crate::event::Sender;
use crate::fields::{FieldDef, FieldFormat, FieldSet};
use crate::store::asks::DecisionState;

/// Earlier turns in the sized sample.
pub const SAMPLE_TURNS: usize = 10;
/// Custom fields in the sized sample's workspace.
pub const SAMPLE_CUSTOM_FIELDS: usize = 5;
/// Most prompt tokens the shipped templates' median request may cost on the
/// sized sample.
pub const PROMPT_TOKEN_BUDGET: usize = 700;

/// Tokens the chat format adds per message, and once to prime the reply.
const PER_MESSAGE: usize = 3;
const REPLY_PRIMING: usize = 3;

/// Prompt tokens of one enrichment request, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PromptSize {
    /// The system message.
    pub system: usize,
    /// The user message (earlier turns and the new message).
    pub user: usize,
    /// The tool definition.
    pub tool: usize,
}

impl PromptSize {
    /// Everything, with the chat format's per-message tokens.
    pub fn total(&self) -> usize {
        self.system + self.user + self.tool + 2 * PER_MESSAGE + REPLY_PRIMING
    }
}

/// Why the size could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum SizeError {
    /// The templates did not render.
    #[error(transparent)]
    Prompt(#[from] PromptError),
    /// The tokenizer could not be loaded.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The sample's field definitions were refused.
    #[error("sample fields: {0}")]
    Fields(String),
}

/// The five custom fields of the sized sample, one of each common shape.
pub fn sample_custom_fields() -> Vec<FieldDef> {
    let field = |name: &str, label: &str, format, description: &str, options: &[&str]| FieldDef {
        label: label.to_owned(),
        description: description.to_owned(),
        options: options.iter().map(|o| (*o).to_owned()).collect(),
        ..FieldDef::new(name, format)
    };
    vec![
        field(
            "company",
            "Company",
            FieldFormat::Text,
            "The company the customer works for",
            &[],
        ),
        field(
            "company_size",
            "Company size",
            FieldFormat::Select,
            "How many people work at the customer's company",
            &["1-10", "11-50", "51-200", "201-1000", "1000+"],
        ),
        field(
            "budget",
            "Budget",
            FieldFormat::Number,
            "Monthly budget in US dollars",
            &[],
        ),
        field(
            "move_in_date",
            "Move-in date",
            FieldFormat::Date,
            "When the customer wants to start",
            &[],
        ),
        field(
            "interests",
            "Interests",
            FieldFormat::Checkbox,
            "Products the customer asks about",
            &["hosting", "domains", "email", "support plans"],
        ),
    ]
}

/// Ten earlier turns of a sales conversation, bot and customer alternating.
fn sample_turns() -> Vec<PromptTurn> {
    let lines = [
        (
            "bot",
            "Hi there! Welcome to Northwind Hosting. How can I help you today?",
        ),
        (
            "customer",
            "Hi, we are looking for a new hosting provider for our online store.",
        ),
        (
            "bot",
            "Great, happy to help. Roughly how much traffic does the store get each month?",
        ),
        (
            "customer",
            "Around 40,000 visitors a month, more in December.",
        ),
        (
            "bot",
            "Our Business plan handles that easily. Do you also need email hosting?",
        ),
        (
            "customer",
            "Yes, for about twelve people on the team, and maybe a second domain.",
        ),
        (
            "bot",
            "Both are included in Business. Would you like a migration from your current host?",
        ),
        (
            "customer",
            "That would help a lot, our current host is very slow to respond.",
        ),
        (
            "bot",
            "We migrate for free within two working days. Anything else you want to know?",
        ),
        (
            "customer",
            "What does the Business plan cost per month if we pay yearly?",
        ),
    ];
    lines
        .iter()
        .take(SAMPLE_TURNS)
        .zip(1..)
        .map(|((sender, text), message_id)| PromptTurn {
            message_id,
            sender: match *sender {
                "bot" => crate::event::Sender::Bot,
                _ => crate::event::Sender::Customer,
            },
            text: (*text).to_owned(),
        })
        .collect()
}

/// Measures the enrichment request `set` renders for the sized sample's
/// last customer message, with all ten turns before it.
pub fn measure(set: &PromptSet) -> Result<PromptSize, SizeError> {
    let sizes = measure_conversation(set)?;
    sizes
        .last()
        .copied()
        .ok_or(SizeError::Fields("empty sample".into()))
}

/// Measures the request of every customer message of the sized sample,
/// each sent with the turns before it, in order.
pub fn measure_conversation(set: &PromptSet) -> Result<Vec<PromptSize>, SizeError> {
    let tokenizer = tiktoken_rs::o200k_base().map_err(|e| SizeError::Tokenizer(e.to_string()))?;
    let required = ["name".to_owned(), "email".to_owned()];
    let fields = FieldSet::new(sample_custom_fields(), &required)
        .map_err(|e| SizeError::Fields(e.to_string()))?;
    let askable = required.to_vec();
    let enums = FieldEnums::for_fields(&fields, askable.clone());
    let tool = count_tokens(&tokenizer, &schema::tool_definition(&enums).to_string());
    let mut turns = sample_turns();
    turns.push(PromptTurn {
        message_id: turns.len() as i64 + 1,
        sender: Sender::Customer,
        text: LAST_MESSAGE.to_owned(),
    });
    let mut sizes = Vec::new();
    for (at, turn) in turns.iter().enumerate() {
        if turn.sender != Sender::Customer {
            continue;
        }
        let before = turns[..at].to_vec();
        let prompt = context::prompt_context(
            &fields,
            &DecisionState::default(),
            askable.clone(),
            before,
            &turn.text,
            Some("Friendly and brief.".to_owned()),
            &[],
        );
        let rendered = set.render(&prompt)?;
        sizes.push(PromptSize {
            system: count_tokens(&tokenizer, &rendered.system),
            user: count_tokens(&tokenizer, &rendered.user),
            tool,
        });
    }
    Ok(sizes)
}

/// The median total of `sizes` (the lower middle one for an even count).
pub fn median_total(sizes: &[PromptSize]) -> usize {
    let mut totals: Vec<usize> = sizes.iter().map(PromptSize::total).collect();
    totals.sort_unstable();
    totals
        .get(totals.len().saturating_sub(1) / 2)
        .copied()
        .unwrap_or(0)
}

/// The sized sample's last customer message.
const LAST_MESSAGE: &str =
    "Sounds good. Can you send me a quote for the Business plan with email for 12 people?";

fn count_tokens(tokenizer: &CoreBPE, text: &str) -> usize {
    tokenizer.encode_ordinary(text).len()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::llm::prompts::SYSTEM_TEMPLATE;

    #[test]
    fn the_shipped_enrichment_prompt_stays_under_budget() {
        let set = PromptSet::load(Path::new("prompts")).expect("shipped templates load");
        let sizes = measure_conversation(&set).expect("measured");
        assert_eq!(
            sizes.len(),
            SAMPLE_TURNS / 2 + 1,
            "one request per customer message"
        );
        let last = measure(&set).expect("measured");
        assert!(
            last.system > 0 && last.user > 0 && last.tool > 0,
            "{last:?}"
        );
        assert!(
            sizes.windows(2).all(|w| w[0].user <= w[1].user),
            "later messages carry more turns: {sizes:?}"
        );
        let median = median_total(&sizes);
        assert!(
            median <= PROMPT_TOKEN_BUDGET,
            "the median request of a {SAMPLE_TURNS}-turn conversation with {SAMPLE_CUSTOM_FIELDS} custom fields costs {median} prompt tokens ({sizes:?}); the budget is {PROMPT_TOKEN_BUDGET}"
        );
    }

    #[test]
    fn the_sample_has_the_sized_shape() {
        assert_eq!(sample_turns().len(), SAMPLE_TURNS);
        assert_eq!(sample_custom_fields().len(), SAMPLE_CUSTOM_FIELDS);
    }

    #[test]
    fn longer_templates_cost_more() {
        let dir = std::env::temp_dir().join(format!("prompt-size-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        for entry in std::fs::read_dir("prompts").expect("prompts") {
            let path = entry.expect("entry").path();
            std::fs::copy(&path, dir.join(path.file_name().expect("name"))).expect("copy");
        }
        let base = measure(&PromptSet::load(&dir).expect("load")).expect("measure");
        let system = dir.join(SYSTEM_TEMPLATE);
        let mut text = std::fs::read_to_string(&system).expect("read");
        text.push_str("\nBe concise. Be concise. Be concise. Be concise.\n");
        std::fs::write(&system, text).expect("write");
        let longer = measure(&PromptSet::load(&dir).expect("load")).expect("measure");
        std::fs::remove_dir_all(&dir).ok();
        assert!(longer.system > base.system, "{base:?} vs {longer:?}");
        assert_eq!(longer.user, base.user);
        assert_eq!(longer.total() - base.total(), longer.system - base.system);
    }
}
