//! Rules that decide what may be written: which source outranks which. Pure,
//! so the worker, the evals and the tests share one definition.

use serde::{Deserialize, Serialize};

use crate::event::UpdateSource;

/// Where a field value came from, from strongest to weakest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An agent's edit; locks the field against the AI.
    Agent,
    /// A form submission.
    Form,
    /// An external system's data update (also a logged-in user's identity hint).
    Api,
    /// A bulk import of existing customers (`POST /v1/import`).
    Import,
    /// Stated by the customer in chat (pattern extractor or AI).
    Customer,
    /// Metadata.
    System,
}

impl Source {
    /// Every source, strongest first.
    pub const ALL: [Source; 6] = [
        Source::Agent,
        Source::Form,
        Source::Api,
        Source::Import,
        Source::Customer,
        Source::System,
    ];

    /// The contract's name of this source.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Agent => "agent",
            Source::Form => "form",
            Source::Api => "api",
            Source::Import => "import",
            Source::Customer => "customer",
            Source::System => "system",
        }
    }

    /// Rank: agent 4 > form = api = import 3 > customer 2 > system 1.
    /// Postgres has its own copy, `enrich.source_rank`, which the field
    /// writes use; `tests/schema.rs` checks the two agree for every source.
    pub fn rank(self) -> u8 {
        match self {
            Source::Agent => 4,
            Source::Form | Source::Api | Source::Import => 3,
            Source::Customer => 2,
            Source::System => 1,
        }
    }

    /// Whether a value from `self` may replace one from `current`.
    pub fn may_overwrite(self, current: Source) -> bool {
        self.rank() >= current.rank()
    }
}

impl From<UpdateSource> for Source {
    fn from(source: UpdateSource) -> Self {
        match source {
            UpdateSource::Agent => Source::Agent,
            UpdateSource::Form => Source::Form,
            UpdateSource::Api => Source::Api,
            UpdateSource::Import => Source::Import,
            UpdateSource::System => Source::System,
        }
    }
}

/// Limits on asking, from the `[asks]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AskPolicy {
    /// Customer turns to wait after an ask before asking again in the conversation.
    pub cooldown_turns: u32,
    /// Asks per conversation, at most.
    pub max_per_conversation: u32,
    /// Times one field is asked of a customer, over all conversations, at most.
    pub max_attempts_per_field: u32,
    /// Customer turns after which an unanswered ask counts as ignored.
    pub ignored_after_turns: u32,
}

impl Default for AskPolicy {
    fn default() -> Self {
        AskPolicy {
            cooldown_turns: 2,
            max_per_conversation: 2,
            max_attempts_per_field: 2,
            ignored_after_turns: 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_source_once() {
        // A new variant fails to compile here until it is placed in `ALL`.
        let position = |source: Source| match source {
            Source::Agent => 0,
            Source::Form => 1,
            Source::Api => 2,
            Source::Import => 3,
            Source::Customer => 4,
            Source::System => 5,
        };
        let positions: Vec<usize> = Source::ALL.into_iter().map(position).collect();
        assert_eq!(positions, (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn ranks_follow_the_contract() {
        assert!(Source::Agent.may_overwrite(Source::Form));
        assert!(Source::Form.may_overwrite(Source::Api));
        assert!(Source::Api.may_overwrite(Source::Form));
        assert!(Source::Import.may_overwrite(Source::Api));
        assert!(Source::Api.may_overwrite(Source::Import));
        assert!(!Source::Import.may_overwrite(Source::Agent));
        assert!(Source::Import.may_overwrite(Source::Customer));
        assert!(Source::Form.may_overwrite(Source::Customer));
        assert!(Source::Customer.may_overwrite(Source::Customer));
        assert!(!Source::Customer.may_overwrite(Source::Agent));
        assert!(!Source::Customer.may_overwrite(Source::Form));
        assert!(!Source::System.may_overwrite(Source::Customer));
    }
}
