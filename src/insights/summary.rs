//! The summary of one ended conversation: the transcript goes to the model
//! once, and what comes back (summary, sentiment and score, topics,
//! resolution) is checked, stored on the conversation with the call's
//! accounting, and announced as `conversation.summarized`, all in one
//! transaction that only lands while this worker still holds the claim.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use super::call::{self, Accounting, Answer, CallRow, Model, Tool, clip};
use crate::event::{ConversationSummarized, Outbound, SummaryResolution};
use crate::llm::model_client::CallFailure;
use crate::llm::prompts::TemplatePair;
use crate::store::StoreError;
use crate::store::outbox::{self, Pending};
use crate::store::summaries::{self, SummaryWrite};
pub use crate::store::summaries::{Claimed, TranscriptRow};

/// Name of the summary tool.
pub const TOOL_NAME: &str = "record_conversation_summary";
/// The summary call's templates.
pub const TEMPLATES: TemplatePair = TemplatePair {
    system: "summary_system.j2",
    turn: "summary_turn.j2",
};
/// Most topics kept.
pub const MAX_TOPICS: usize = 5;
const MAX_TOPIC_CHARS: usize = 40;
const MAX_SUMMARY_CHARS: usize = 2000;
const MAX_DETAIL_CHARS: usize = 300;
const MAX_MESSAGE_CHARS: usize = 2000;

/// What the model reports about one ended conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SummaryOutput {
    /// Two to four sentences on what the customer wanted and what happened.
    pub summary: String,
    /// The customer's overall mood by the end.
    pub sentiment: Sentiment,
    /// From -1 (very negative) through 0 (neutral) to 1 (very positive).
    pub sentiment_score: f64,
    /// At most five short lowercase tags, most important first.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Whether, how, by whom and when the customer's request was settled.
    pub resolution: ResolutionOutput,
}

/// Sentiment labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sentiment {
    // Variants carry no doc comments: schemars would turn documented variants
    // into `oneOf` / `const`, which strict mode does not accept.
    Positive,
    Neutral,
    Negative,
}

impl Sentiment {
    /// The stored label.
    pub fn as_str(self) -> &'static str {
        match self {
            Sentiment::Positive => "positive",
            Sentiment::Neutral => "neutral",
            Sentiment::Negative => "negative",
        }
    }
}

/// How the conversation ended, as the model read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ResolutionOutput {
    /// "resolved" only when the request was settled in this conversation.
    pub status: ResolutionStatus,
    /// Who settled it; null when unresolved.
    pub resolved_by: Option<Resolver>,
    /// Number of the transcript message in which it was settled; null when unresolved.
    pub resolved_at_message: Option<i64>,
    /// One short sentence on how it was settled, or what is still open.
    pub detail: String,
}

/// Whether the request was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ResolutionStatus {
    // Undocumented variants: a plain string enum in the schema.
    Resolved,
    Unresolved,
}

/// Who settled a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Resolver {
    // Undocumented variants: a plain string enum in the schema.
    Bot,
    Agent,
    Customer,
}

impl Resolver {
    fn as_str(self) -> &'static str {
        match self {
            Resolver::Bot => "bot",
            Resolver::Agent => "agent",
            Resolver::Customer => "customer",
        }
    }
}

/// The summary tool.
pub fn tool() -> Tool {
    Tool {
        name: TOOL_NAME,
        description: "Record the summary, sentiment, topics and resolution of one finished conversation.",
        parameters: call::strict_parameters::<SummaryOutput>(),
    }
}

/// The conversation as the templates see it.
#[derive(Debug, Clone, Serialize)]
pub struct ConversationInfo {
    /// The backend's conversation id.
    pub id: String,
    /// Platform.
    pub platform: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, when closed.
    pub ended_at: Option<String>,
    /// The backend's `resolved_by`.
    pub resolved_by: Option<String>,
    /// The backend's `resolution`.
    pub resolution: Option<String>,
}

/// One numbered transcript line.
#[derive(Debug, Clone, Serialize)]
pub struct TranscriptLine {
    /// 1-based position in the whole conversation.
    pub number: usize,
    /// Who wrote it.
    pub sender: String,
    /// The agent, for agent messages.
    pub agent_id: Option<String>,
    /// RFC 3339.
    pub at: String,
    /// Text (long messages are clipped).
    pub text: String,
}

/// Everything the summary templates receive.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryContext {
    /// The tool's name.
    pub tool_name: String,
    /// Most topics.
    pub max_topics: usize,
    /// The conversation.
    pub conversation: ConversationInfo,
    /// Earlier messages left out.
    pub omitted_messages: usize,
    /// The transcript.
    pub transcript: Vec<TranscriptLine>,
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The template context of a claimed conversation.
pub fn context(claimed: &Claimed, rows: &[TranscriptRow], omitted: usize) -> SummaryContext {
    SummaryContext {
        tool_name: TOOL_NAME.to_owned(),
        max_topics: MAX_TOPICS,
        conversation: ConversationInfo {
            id: claimed.external_id.clone(),
            platform: claimed.platform.clone(),
            started_at: rfc3339(claimed.started_at),
            ended_at: claimed.ended_at.map(rfc3339),
            resolved_by: claimed.resolved_by.clone(),
            resolution: claimed.resolution.clone(),
        },
        omitted_messages: omitted,
        transcript: rows
            .iter()
            .enumerate()
            .map(|(i, row)| TranscriptLine {
                number: omitted + i + 1,
                sender: row.sender.clone(),
                agent_id: row.agent_id.clone(),
                at: rfc3339(row.occurred_at),
                text: clip(&row.text, MAX_MESSAGE_CHARS),
            })
            .collect(),
    }
}

/// Sample data that exercises every variable, for template checks.
pub fn sample_context() -> Value {
    serde_json::to_value(SummaryContext {
        tool_name: TOOL_NAME.to_owned(),
        max_topics: MAX_TOPICS,
        conversation: ConversationInfo {
            id: "c-1".into(),
            platform: "web".into(),
            started_at: "2026-03-01T10:00:00Z".into(),
            ended_at: Some("2026-03-01T10:09:00Z".into()),
            resolved_by: Some("agent-7".into()),
            resolution: Some("refund issued".into()),
        },
        omitted_messages: 3,
        transcript: vec![
            TranscriptLine {
                number: 4,
                sender: "customer".into(),
                agent_id: None,
                at: "2026-03-01T10:00:00Z".into(),
                text: "My order arrived broken".into(),
            },
            TranscriptLine {
                number: 5,
                sender: "agent".into(),
                agent_id: Some("agent-7".into()),
                at: "2026-03-01T10:05:00Z".into(),
                text: "Sorry! I have refunded it.".into(),
            },
        ],
    })
    .unwrap_or(Value::Null)
}

/// A checked summary, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The text.
    pub summary: String,
    /// Label.
    pub sentiment: Sentiment,
    /// In [-1, 1] (stored as `real`).
    pub sentiment_score: f64,
    /// Normalised tags, at most five.
    pub topics: Vec<String>,
    /// Whether the model read the request as settled.
    pub resolved: bool,
    /// Who settled it (the agent's id when an identified agent's message did).
    pub resolved_by: Option<String>,
    /// When.
    pub resolved_at: Option<DateTime<Utc>>,
    /// How, or what is open.
    pub detail: String,
    /// Optional parts of the answer dropped as invalid, by code.
    pub rejections: BTreeMap<String, u32>,
}

/// Checks and normalises the model's answer: a non-empty summary, a score
/// clamped to [-1, 1], at most five short distinct lowercase topics, and a
/// resolution whose message number exists in the transcript.
pub fn validate(
    output: SummaryOutput,
    claimed: &Claimed,
    rows: &[TranscriptRow],
    omitted: usize,
) -> Result<Summary, CallFailure> {
    let summary = output.summary.trim();
    if summary.is_empty() {
        return Err(CallFailure::MalformedOutput("empty summary".into()));
    }
    let score = if output.sentiment_score.is_finite() {
        output.sentiment_score.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let mut topics: Vec<String> = Vec::new();
    for topic in &output.topics {
        let topic = topic.split_whitespace().collect::<Vec<_>>().join(" ");
        let topic = clip(&topic.to_lowercase(), MAX_TOPIC_CHARS);
        if !topic.is_empty() && !topics.contains(&topic) && topics.len() < MAX_TOPICS {
            topics.push(topic);
        }
    }
    let resolution = output.resolution;
    let resolved = resolution.status == ResolutionStatus::Resolved;
    let message = resolution
        .resolved_at_message
        .and_then(|n| usize::try_from(n).ok())
        .filter(|n| *n > 0)
        .and_then(|n| n.checked_sub(omitted + 1))
        .and_then(|index| rows.get(index))
        .filter(|_| resolved);
    let resolved_by = resolved
        .then(|| {
            resolution.resolved_by.map(|who| match (who, message) {
                (Resolver::Agent, Some(row)) if row.sender == "agent" => row
                    .agent_id
                    .clone()
                    .unwrap_or_else(|| who.as_str().to_owned()),
                _ => who.as_str().to_owned(),
            })
        })
        .flatten();
    let resolved_at = resolved.then(|| {
        message
            .map(|row| row.occurred_at)
            .or(claimed.ended_at)
            .or(claimed.last_message_at)
            .unwrap_or(claimed.started_at)
    });
    Ok(Summary {
        summary: clip(summary, MAX_SUMMARY_CHARS),
        sentiment: output.sentiment,
        sentiment_score: score,
        topics,
        resolved,
        resolved_by,
        resolved_at,
        detail: clip(resolution.detail.trim(), MAX_DETAIL_CHARS),
        rejections: BTreeMap::new(),
    })
}

/// Renders, calls the model once and checks the answer.
pub async fn summarise(
    model: &Model,
    claimed: &Claimed,
    rows: &[TranscriptRow],
    omitted: usize,
) -> (Result<Summary, CallFailure>, Accounting) {
    let Answer { output, accounting } = call::call::<Value, _>(
        model,
        &model.summary_prompts,
        &context(claimed, rows, omitted),
        &tool(),
    )
    .await;
    let checked = output
        .and_then(parse_answer)
        .and_then(|(output, rejections)| {
            validate(output, claimed, rows, omitted).map(|summary| Summary {
                rejections,
                ..summary
            })
        });
    (checked, accounting)
}

/// Reads the model's answer, keeping what is valid: an optional part that
/// is not (`resolved_by` outside its values, a `resolved_at_message` that
/// is no number, `topics` that are no list of strings) becomes null or
/// empty and is counted, as the facts path drops one bad fact and keeps the
/// rest. A required part that is invalid still fails the answer.
pub fn parse_answer(
    mut value: Value,
) -> Result<(SummaryOutput, BTreeMap<String, u32>), CallFailure> {
    let mut rejections = BTreeMap::new();
    let mut reject = |code: &str| *rejections.entry(code.to_owned()).or_insert(0) += 1;
    if let Some(resolved_by) = value.pointer_mut("/resolution/resolved_by")
        && !resolved_by.is_null()
        && serde_json::from_value::<Resolver>(resolved_by.clone()).is_err()
    {
        *resolved_by = Value::Null;
        reject("summary:invalid_resolved_by");
    }
    if let Some(message) = value.pointer_mut("/resolution/resolved_at_message")
        && !message.is_null()
        && !message.is_i64()
    {
        *message = Value::Null;
        reject("summary:invalid_resolved_at_message");
    }
    if let Some(topics) = value.get_mut("topics")
        && !topics.is_null()
    {
        let kept: Vec<Value> = match topics {
            Value::Array(items) => items.iter().filter(|t| t.is_string()).cloned().collect(),
            _ => Vec::new(),
        };
        if topics
            .as_array()
            .is_none_or(|items| items.len() != kept.len())
        {
            reject("summary:invalid_topics");
        }
        *topics = Value::Array(kept);
    }
    let output = serde_json::from_value::<SummaryOutput>(value)
        .map_err(|e| CallFailure::MalformedOutput(e.to_string()))?;
    Ok((output, rejections))
}

/// What a stored summary changed.
#[derive(Debug)]
pub struct Stored {
    /// The conversation's customer at the write (a merge may have moved it).
    pub customer_id: Uuid,
    /// `conversation.summarized`, in the outbox.
    pub pending: Pending,
}

/// Stores a summary with its call and the outbound event, if the claim is
/// still ours; `None` when another worker took it over meanwhile.
pub async fn store(
    conn: &mut PgConnection,
    claimed: &Claimed,
    summary: &Summary,
    accounting: &Accounting,
) -> Result<Option<Stored>, StoreError> {
    // The backend's resolved_by / resolution are facts and win over the model's reading.
    let resolution_text = if summary.resolved {
        if summary.detail.is_empty() {
            "resolved".to_owned()
        } else {
            summary.detail.clone()
        }
    } else {
        "unresolved".to_owned()
    };
    let write = SummaryWrite {
        summary: &summary.summary,
        sentiment: summary.sentiment.as_str(),
        sentiment_score: summary.sentiment_score as f32,
        topics: &summary.topics,
        resolved_by: summary.resolved_by.as_deref(),
        resolution: &resolution_text,
        resolved_at: summary.resolved_at,
    };
    let written = summaries::write(conn, claimed, &write).await?;
    let Some(written) = written else {
        return Ok(None);
    };
    call::record(
        conn,
        &CallRow {
            message_id: None,
            workspace_id: &claimed.workspace_id,
            conversation_id: claimed.id,
            customer_id: written.customer_id,
            purpose: "summary",
            outcome: "ok",
            rejections: summary.rejections.clone(),
            timing: None,
        },
        accounting,
    )
    .await?;
    let resolved = summary.resolved || written.resolved_by.is_some();
    let event = Outbound::ConversationSummarized(ConversationSummarized {
        workspace_id: claimed.workspace_id.clone(),
        conversation_id: claimed.external_id.clone(),
        customer_id: written.customer_id,
        summary: summary.summary.clone(),
        sentiment: summary.sentiment.as_str().to_owned(),
        sentiment_score: summary.sentiment_score,
        topics: summary.topics.clone(),
        resolution: SummaryResolution {
            status: if resolved { "resolved" } else { "unresolved" }.to_owned(),
            resolved_by: written.resolved_by.filter(|_| resolved),
            resolved_at: written
                .resolved_at
                .or(written.ended_at)
                .filter(|_| resolved),
            detail: written
                .resolution
                .filter(|text| *text != resolution_text)
                .or_else(|| (!summary.detail.is_empty()).then(|| summary.detail.clone())),
        },
    });
    let pending = outbox::enqueue(conn, &event).await?;
    Ok(Some(Stored {
        customer_id: written.customer_id,
        pending,
    }))
}

/// Marks a claimed conversation as finished without a summary: `failed`
/// (with the failed call's row), `offline` or `skipped` (no call, no row).
/// Returns false when the claim is no longer ours.
pub async fn finish_without_summary(
    conn: &mut PgConnection,
    claimed: &Claimed,
    status: &'static str,
    failed_call: Option<(&'static str, &Accounting)>,
) -> Result<bool, StoreError> {
    if !summaries::finish_claim(conn, claimed, status).await? {
        return Ok(false);
    }
    if let Some((outcome, accounting)) = failed_call {
        call::record(
            conn,
            &CallRow {
                message_id: None,
                workspace_id: &claimed.workspace_id,
                conversation_id: claimed.id,
                customer_id: claimed.customer_id,
                purpose: "summary",
                outcome,
                rejections: BTreeMap::new(),
                timing: None,
            },
            accounting,
        )
        .await?;
    }
    Ok(true)
}

/// The summary as the insights call sees it (`resolution` in words).
pub fn resolution_words(resolved_by: Option<&str>, resolution: Option<&str>) -> String {
    match (resolved_by, resolution) {
        (Some(who), Some(how)) => format!("resolved by {who}: {how}"),
        (Some(who), None) => format!("resolved by {who}"),
        (None, Some(how)) => how.to_owned(),
        (None, None) => "unknown".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::schema::strict_violations;

    fn claimed() -> Claimed {
        let at = DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("time");
        Claimed {
            id: 1,
            workspace_id: "w".into(),
            external_id: "c1".into(),
            customer_id: Uuid::nil(),
            platform: "web".into(),
            status: "closed".into(),
            started_at: at,
            last_message_at: Some(at),
            ended_at: None,
            resolved_by: None,
            resolution: None,
            customer_turns: 1,
            summary_claim: Uuid::nil(),
        }
    }

    fn rows() -> Vec<TranscriptRow> {
        let base = claimed().started_at;
        vec![
            TranscriptRow {
                sender: "customer".into(),
                agent_id: None,
                text: "broken".into(),
                occurred_at: base,
            },
            TranscriptRow {
                sender: "agent".into(),
                agent_id: Some("agent-7".into()),
                text: "refunded".into(),
                occurred_at: base + chrono::Duration::minutes(5),
            },
        ]
    }

    fn output(status: ResolutionStatus, message: Option<i64>) -> SummaryOutput {
        SummaryOutput {
            summary: " The customer got a refund. ".into(),
            sentiment: Sentiment::Positive,
            sentiment_score: 3.0,
            topics: vec![
                "Refund".into(),
                "refund".into(),
                "  broken   item ".into(),
                "a".into(),
                "b".into(),
                "c".into(),
                "d".into(),
            ],
            resolution: ResolutionOutput {
                status,
                resolved_by: Some(Resolver::Agent),
                resolved_at_message: message,
                detail: "Refund issued".into(),
            },
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
        assert!(
            text.contains(r#""enum":["positive","neutral","negative"]"#),
            "{text}"
        );
        for unsupported in ["$ref", "oneOf", "const", "minimum"] {
            assert!(!text.contains(unsupported), "{unsupported} in {text}");
        }
    }

    #[test]
    fn answers_are_normalised() {
        let summary = validate(
            output(ResolutionStatus::Resolved, Some(2)),
            &claimed(),
            &rows(),
            0,
        )
        .expect("valid");
        assert_eq!(summary.summary, "The customer got a refund.");
        assert_eq!(summary.sentiment_score, 1.0);
        assert_eq!(summary.topics, vec!["refund", "broken item", "a", "b", "c"]);
        assert_eq!(summary.resolved_by.as_deref(), Some("agent-7"));
        assert_eq!(summary.resolved_at, Some(rows()[1].occurred_at));
    }

    #[test]
    fn unresolved_and_out_of_range_messages() {
        let open = validate(
            output(ResolutionStatus::Unresolved, Some(2)),
            &claimed(),
            &rows(),
            0,
        )
        .expect("valid");
        assert!(!open.resolved);
        assert_eq!((open.resolved_by, open.resolved_at), (None, None));
        let far = validate(
            output(ResolutionStatus::Resolved, Some(99)),
            &claimed(),
            &rows(),
            0,
        )
        .expect("valid");
        assert_eq!(far.resolved_by.as_deref(), Some("agent"));
        assert_eq!(far.resolved_at, claimed().last_message_at);
        let mut empty = output(ResolutionStatus::Resolved, None);
        empty.summary = "  ".into();
        assert!(validate(empty, &claimed(), &rows(), 0).is_err());
    }

    #[test]
    fn an_invalid_optional_part_is_dropped_and_the_rest_kept() {
        let answer = serde_json::json!({
            "summary": "The customer asked for a refund and got it.",
            "sentiment": "positive",
            "sentiment_score": 0.6,
            "topics": ["refund", 7],
            "resolution": {"status": "resolved", "resolved_by": "manager",
                           "resolved_at_message": "third", "detail": "Refunded."}
        });
        let (output, rejections) = parse_answer(answer).expect("kept");
        assert_eq!(
            output.summary,
            "The customer asked for a refund and got it."
        );
        assert_eq!(output.topics, ["refund"]);
        assert_eq!(output.resolution.resolved_by, None);
        assert_eq!(output.resolution.resolved_at_message, None);
        assert_eq!(output.resolution.status, ResolutionStatus::Resolved);
        assert_eq!(rejections["summary:invalid_resolved_by"], 1);
        assert_eq!(rejections["summary:invalid_resolved_at_message"], 1);
        assert_eq!(rejections["summary:invalid_topics"], 1);
        let summary = validate(output, &claimed(), &rows(), 0).expect("valid");
        assert!(summary.resolved, "the summary keeps its valid parts");
        let broken = serde_json::json!({"summary": "x", "sentiment": "ecstatic",
            "sentiment_score": 1, "resolution": {"status": "resolved", "detail": ""}});
        assert!(parse_answer(broken).is_err(), "a required part still fails");
    }

    #[test]
    fn shipped_templates_render() {
        let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts");
        let set = crate::llm::prompts::PromptSet::load_pair(&dir, TEMPLATES, sample_context)
            .expect("templates load");
        let rendered = set
            .render_context(&context(&claimed(), &rows(), 0))
            .expect("render");
        assert!(
            rendered
                .user
                .contains("[2] 2026-03-01T10:05:00Z agent (agent-7): refunded")
        );
        assert!(rendered.system.contains(TOOL_NAME));
    }
}
