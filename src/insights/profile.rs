//! The customer's AI profile ("insights"), updated incrementally after each
//! summary: the model sees the previous insights and the ONE new summary,
//! never the whole history, and returns the updated profile. Every item must
//! cite the conversations it rests on; an item citing none, or any id that
//! is not a conversation of this customer, is dropped in code.
//!
//! Updates of one customer are serialised by a transaction-level advisory
//! lock held across the call, so two workers finishing two conversations of
//! the same customer at once cannot lose an update; the loser leaves its
//! conversation `pending` and the holder (or the next sweep) picks it up.
//! Insights are written only here: `profile.update` cannot reach them.

use std::collections::{BTreeMap, HashSet};

use chrono::SecondsFormat;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::call::{self, Answer, CallRow, Model, Tool, clip};
use super::summary::resolution_words;
use crate::event::{CustomerInsightsUpdated, Outbound};
use crate::llm::prompts::TemplatePair;
use crate::queue::publisher::Publisher;
use crate::store::StoreError;
use crate::store::insights::{self as insights_store, PendingSummary};
use crate::store::outbox;

/// Name of the insights tool.
pub const TOOL_NAME: &str = "record_customer_insights";
/// The insights call's templates.
pub const TEMPLATES: TemplatePair = TemplatePair {
    system: "insights_system.j2",
    turn: "insights_turn.j2",
};
/// Most items kept per list.
pub const MAX_ITEMS: usize = 8;
const MAX_ITEM_CHARS: usize = 300;

/// The customer's AI profile: what the model returns and what is stored.
/// Read leniently: a malformed item (or list) is kept as an empty item,
/// which [`validate`] drops and counts, and the other items stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct InsightsOutput {
    /// How the customer likes to be addressed and contacted.
    #[serde(default, deserialize_with = "lenient_items")]
    pub communication_preferences: Vec<InsightItem>,
    /// Products, services and subjects they care about.
    #[serde(default, deserialize_with = "lenient_items")]
    pub topics_of_interest: Vec<InsightItem>,
    /// What, when and how they buy or mean to buy.
    #[serde(default, deserialize_with = "lenient_items")]
    pub purchase_patterns: Vec<InsightItem>,
    /// Lasting traits that help an agent.
    #[serde(default, deserialize_with = "lenient_items")]
    pub key_characteristics: Vec<InsightItem>,
}

/// A list of insight items in which each malformed item (or a list that is
/// no list) becomes one empty item, so it is dropped and counted later
/// instead of failing the whole answer.
fn lenient_items<'de, D>(deserializer: D) -> Result<Vec<InsightItem>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let value = Value::deserialize(deserializer)?;
    let empty = || InsightItem {
        text: String::new(),
        conversation_ids: Vec::new(),
    };
    Ok(match value {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .into_iter()
            .map(|item| serde_json::from_value(item).unwrap_or_else(|_| empty()))
            .collect(),
        _ => vec![empty()],
    })
}

/// One statement about the customer and the conversations it rests on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct InsightItem {
    /// One short sentence.
    pub text: String,
    /// Ids of the conversations it rests on.
    #[serde(default)]
    pub conversation_ids: Vec<String>,
}

impl InsightsOutput {
    fn sections(&self) -> [(&'static str, &Vec<InsightItem>); 4] {
        [
            ("communication_preferences", &self.communication_preferences),
            ("topics_of_interest", &self.topics_of_interest),
            ("purchase_patterns", &self.purchase_patterns),
            ("key_characteristics", &self.key_characteristics),
        ]
    }

    fn sections_mut(&mut self) -> [&mut Vec<InsightItem>; 4] {
        [
            &mut self.communication_preferences,
            &mut self.topics_of_interest,
            &mut self.purchase_patterns,
            &mut self.key_characteristics,
        ]
    }

    /// Whether every list is empty.
    pub fn is_empty(&self) -> bool {
        self.sections().iter().all(|(_, items)| items.is_empty())
    }
}

/// The insights tool.
pub fn tool() -> Tool {
    Tool {
        name: TOOL_NAME,
        description: "Record the customer's updated profile; every item cites the conversations it rests on.",
        parameters: call::strict_parameters::<InsightsOutput>(),
    }
}

/// Items dropped by [`validate`], by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Items citing no conversation, with no text, or malformed.
    pub uncited: u32,
    /// Items citing an id that is not a conversation of this customer.
    pub unknown_conversation: u32,
    /// Items over the per-list cap.
    pub over_limit: u32,
}

impl Dropped {
    fn counts(&self) -> BTreeMap<String, u32> {
        [
            ("insight:uncited", self.uncited),
            ("insight:unknown_conversation", self.unknown_conversation),
            ("insight:over_limit", self.over_limit),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| (k.to_owned(), n))
        .collect()
    }
}

/// Keeps the items that cite only conversations in `known`; trims texts,
/// dedupes ids and caps each list.
pub fn validate(mut output: InsightsOutput, known: &HashSet<String>) -> (InsightsOutput, Dropped) {
    let mut dropped = Dropped::default();
    for items in output.sections_mut() {
        let mut kept: Vec<InsightItem> = Vec::new();
        for item in items.drain(..) {
            let text = item.text.split_whitespace().collect::<Vec<_>>().join(" ");
            let mut ids: Vec<String> = Vec::new();
            for id in item.conversation_ids {
                let id = id.trim().to_owned();
                if !ids.contains(&id) {
                    ids.push(id);
                }
            }
            if text.is_empty() || ids.is_empty() {
                dropped.uncited += 1;
            } else if ids.iter().any(|id| !known.contains(id)) {
                dropped.unknown_conversation += 1;
            } else if kept.len() >= MAX_ITEMS {
                dropped.over_limit += 1;
            } else {
                kept.push(InsightItem {
                    text: clip(&text, MAX_ITEM_CHARS),
                    conversation_ids: ids,
                });
            }
        }
        *items = kept;
    }
    (output, dropped)
}

/// One list as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct Section {
    /// The list's name.
    pub name: String,
    /// Its items.
    pub items: Vec<InsightItem>,
}

/// The new conversation as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct NewConversation {
    /// The backend's conversation id (what items cite).
    pub id: String,
    /// RFC 3339.
    pub started_at: String,
    /// Its summary.
    pub summary: String,
    /// Label.
    pub sentiment: String,
    /// Score.
    pub sentiment_score: f64,
    /// Tags.
    pub topics: Vec<String>,
    /// In words.
    pub resolution: String,
}

/// Everything the insights templates receive.
#[derive(Debug, Clone, Serialize)]
pub struct InsightsContext {
    /// The tool's name.
    pub tool_name: String,
    /// Most items per list.
    pub max_items: usize,
    /// Whether there is a previous profile.
    pub has_previous: bool,
    /// The previous profile, list by list.
    pub previous: Vec<Section>,
    /// The one new conversation.
    pub conversation: NewConversation,
}

/// The template context: the previous insights and one new summary.
pub fn context(previous: &InsightsOutput, conversation: NewConversation) -> InsightsContext {
    InsightsContext {
        tool_name: TOOL_NAME.to_owned(),
        max_items: MAX_ITEMS,
        has_previous: !previous.is_empty(),
        previous: previous
            .sections()
            .into_iter()
            .map(|(name, items)| Section {
                name: name.to_owned(),
                items: items.clone(),
            })
            .collect(),
        conversation,
    }
}

/// Sample data that exercises every variable, for template checks.
pub fn sample_context() -> Value {
    let previous = InsightsOutput {
        communication_preferences: vec![InsightItem {
            text: "Prefers short answers by chat".into(),
            conversation_ids: vec!["c-1".into()],
        }],
        ..InsightsOutput::default()
    };
    serde_json::to_value(context(
        &previous,
        NewConversation {
            id: "c-2".into(),
            started_at: "2026-03-02T10:00:00Z".into(),
            summary: "The customer asked for a quote for 20 licences.".into(),
            sentiment: "neutral".into(),
            sentiment_score: 0.1,
            topics: vec!["licences".into(), "quote".into()],
            resolution: "resolved by agent".into(),
        },
    ))
    .unwrap_or(Value::Null)
}

/// Brings the customer's insights up to date with every summary not yet
/// folded in, one call per summary, oldest first. Returns at once when
/// another worker holds this customer (it will fold ours in too).
pub async fn update_customer(
    pool: &sqlx::PgPool,
    publisher: &Publisher,
    model: &Model,
    customer_id: Uuid,
) -> Result<u32, StoreError> {
    let mut updates = 0;
    loop {
        let mut tx = pool.begin().await?;
        if !insights_store::try_lock_customer(&mut tx, customer_id).await? {
            return Ok(updates);
        }
        let Some(next) = insights_store::next_pending_summary(&mut tx, customer_id).await? else {
            tx.commit().await?;
            return Ok(updates);
        };
        let Some(summary_text) = next.summary.clone() else {
            insights_store::set_status(&mut tx, next.id, "failed").await?;
            tx.commit().await?;
            continue;
        };
        let previous: InsightsOutput = insights_store::current(&mut tx, customer_id)
            .await?
            .and_then(|value| serde_json::from_value(value).ok())
            .unwrap_or_default();
        let known = insights_store::conversation_ids(&mut tx, customer_id).await?;
        let conversation = NewConversation {
            id: next.external_id.clone(),
            started_at: next.started_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            summary: summary_text,
            sentiment: next.sentiment.clone().unwrap_or_else(|| "neutral".into()),
            // Two decimals: a `real` read back as 0.800000011920929 reads badly.
            sentiment_score: (f64::from(next.sentiment_score.unwrap_or(0.0)) * 100.0).round()
                / 100.0,
            topics: next.topics.clone(),
            resolution: resolution_words(next.resolved_by.as_deref(), next.resolution.as_deref()),
        };
        let answer: Answer<InsightsOutput> = call::call(
            model,
            &model.insights_prompts,
            &context(&previous, conversation),
            &tool(),
        )
        .await;
        if answer.output.is_ok() {
            updates += 1;
        }
        match store_answer(tx, &next, customer_id, &known, answer).await {
            Ok(pending) => {
                crate::queue::outbox_relay::publish_pending(publisher, pool, pending).await
            }
            Err(error) => {
                // The call is spent: never call again for this summary.
                let _ = insights_store::fail_pending(pool, next.id).await;
                return Err(error);
            }
        }
    }
}

/// Writes the checked insights (or the failure) with the call's row and the
/// outbound event, and commits.
async fn store_answer(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    next: &PendingSummary,
    customer_id: Uuid,
    known: &HashSet<String>,
    answer: Answer<InsightsOutput>,
) -> Result<Vec<outbox::Pending>, StoreError> {
    let outcome = answer.outcome();
    let mut row = CallRow {
        message_id: None,
        workspace_id: &next.workspace_id,
        conversation_id: next.id,
        customer_id,
        purpose: "insights",
        outcome,
        rejections: BTreeMap::new(),
        timing: None,
    };
    let mut pending = Vec::new();
    match answer.output {
        Ok(output) => {
            let (insights, dropped) = validate(output, known);
            row.rejections = dropped.counts();
            let value = serde_json::to_value(&insights).unwrap_or(Value::Null);
            insights_store::write(
                &mut tx,
                customer_id,
                &value,
                &answer.accounting.model,
                &answer.accounting.prompt_version,
            )
            .await?;
            let event = Outbound::CustomerInsightsUpdated(CustomerInsightsUpdated {
                workspace_id: next.workspace_id.clone(),
                customer_id,
                insights: value,
            });
            pending.push(outbox::enqueue(&mut tx, &event).await?);
        }
        Err(failure) => {
            tracing::warn!(
                conversation = next.id,
                outcome = failure.outcome(),
                attempts = answer.accounting.attempts,
                "insights call failed; the previous insights stay"
            );
        }
    }
    let status = if outcome == "ok" { "done" } else { "failed" };
    insights_store::set_status(&mut tx, next.id, status).await?;
    call::record(&mut tx, &row, &answer.accounting).await?;
    tx.commit().await?;
    Ok(pending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::schema::strict_violations;

    fn item(text: &str, ids: &[&str]) -> InsightItem {
        InsightItem {
            text: text.into(),
            conversation_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn the_schema_is_strict_valid() {
        let schema = tool().parameters;
        assert_eq!(
            strict_violations(&schema),
            Vec::<String>::new(),
            "{schema:#}"
        );
        let text = schema.to_string();
        for unsupported in ["$ref", "oneOf", "const", "minimum", "format"] {
            assert!(!text.contains(unsupported), "{unsupported} in {text}");
        }
    }

    #[test]
    fn a_malformed_item_is_dropped_and_counted_and_the_rest_kept() {
        let answer = serde_json::json!({
            "communication_preferences": [{"text": "Prefers email.", "conversation_ids": ["c1"]},
                                          {"text": 42}],
            "topics_of_interest": "hosting",
            "purchase_patterns": [],
            "key_characteristics": null
        });
        let output: InsightsOutput = serde_json::from_value(answer).expect("lenient");
        let known: HashSet<String> = ["c1".to_owned()].into_iter().collect();
        let (kept, dropped) = validate(output, &known);
        assert_eq!(
            kept.communication_preferences,
            vec![item("Prefers email.", &["c1"])]
        );
        assert!(kept.topics_of_interest.is_empty());
        assert_eq!(dropped.uncited, 2);
    }

    #[test]
    fn items_must_cite_known_conversations() {
        let known: HashSet<String> = ["c1".to_owned(), "c2".to_owned()].into();
        let output = InsightsOutput {
            communication_preferences: vec![
                item("  Prefers   email ", &["c1", "c1"]),
                item("Made up", &["c9"]),
                item("Half made up", &["c2", "c9"]),
                item("Uncited", &[]),
            ],
            topics_of_interest: (0..10).map(|i| item(&format!("t{i}"), &["c2"])).collect(),
            ..InsightsOutput::default()
        };
        let (kept, dropped) = validate(output, &known);
        assert_eq!(
            kept.communication_preferences,
            vec![item("Prefers email", &["c1"])]
        );
        assert_eq!(kept.topics_of_interest.len(), MAX_ITEMS);
        assert_eq!(
            dropped,
            Dropped {
                uncited: 1,
                unknown_conversation: 2,
                over_limit: 2
            }
        );
    }

    #[test]
    fn shipped_templates_render_previous_insights_and_the_new_summary() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let set = crate::llm::prompts::PromptSet::load_pair(&dir, TEMPLATES, sample_context)
            .expect("templates load");
        let rendered = set.render_context(&sample_context()).expect("render");
        assert!(
            rendered
                .user
                .contains("- Prefers short answers by chat [c-1]"),
            "{}",
            rendered.user
        );
        assert!(rendered.user.contains("New conversation c-2"));
        assert!(rendered.system.contains(TOOL_NAME));
    }
}
