//! The wire contract (docs/contract.md §2): inbound events chat backends publish and the
//! outbound events enricher emits. Decoding is strict about what the contract
//! requires and lenient about extra keys, so producers can add fields without
//! breaking the worker; every refusal says exactly what was wrong, because the
//! reason travels with the event to the dead-letter queue.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest event accepted, in bytes.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// Longest `agent_instructions`, in characters.
pub const MAX_AGENT_INSTRUCTIONS_CHARS: usize = 2000;
/// Longest note text, in characters.
pub const MAX_NOTE_CHARS: usize = 2000;
const MAX_ID_CHARS: usize = 200;

/// A decoded, validated inbound event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Keys every event carries.
    pub envelope: Envelope,
    /// What the event says.
    pub body: EventBody,
}

/// Keys every inbound event carries.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct Envelope {
    /// Unique per workspace; redelivery of the same id is a no-op.
    #[schemars(length(min = 1, max = MAX_ID_CHARS), regex(pattern = r"\S"))]
    pub id: String,
    /// Contract version; only 1 exists.
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Tenant; nothing crosses tenants.
    #[schemars(length(min = 1, max = MAX_ID_CHARS), regex(pattern = r"\S"))]
    pub workspace_id: String,
    /// When it happened at the source (RFC 3339).
    #[schemars(with = "String", extend("format" = "date-time"))]
    pub occurred_at: DateTime<Utc>,
}

/// The type-specific part of an inbound event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventBody {
    /// A chat message from any participant.
    ChatMessage(Box<ChatMessage>),
    /// A conversation ended.
    ConversationClosed(ConversationClosed),
    /// A conversation changed status (a `requesting` status is an escalation).
    ConversationStatus(ConversationStatus),
    /// Field values from an agent, a form, an external system or metadata.
    ProfileUpdate(ProfileUpdate),
    /// Erase a customer everywhere.
    CustomerForget(CustomerForget),
    /// An agent's note about a customer.
    NoteAdded(NoteAdded),
}

/// Where a conversation happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// Web chat widget.
    Web,
    /// WhatsApp.
    Whatsapp,
    /// LINE.
    Line,
    /// Facebook Messenger.
    Messenger,
    /// Instagram direct messages.
    Instagram,
    /// Telegram.
    Telegram,
    /// A mobile app's chat.
    Mobile,
    /// Email threads.
    Email,
    /// Messages sent through an API.
    Api,
}

impl Platform {
    /// The contract's name for this platform.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Web => "web",
            Platform::Whatsapp => "whatsapp",
            Platform::Line => "line",
            Platform::Messenger => "messenger",
            Platform::Instagram => "instagram",
            Platform::Telegram => "telegram",
            Platform::Mobile => "mobile",
            Platform::Email => "email",
            Platform::Api => "api",
        }
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Sender {
    /// The customer: the only source of customer facts.
    Customer,
    /// The chat bot.
    Bot,
    /// A human agent.
    Agent,
    /// The platform itself.
    System,
}

impl Sender {
    /// The contract's name for this sender.
    pub fn as_str(self) -> &'static str {
        match self {
            Sender::Customer => "customer",
            Sender::Bot => "bot",
            Sender::Agent => "agent",
            Sender::System => "system",
        }
    }
}

/// `chat.message`: a chat message from any participant.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct ChatMessage {
    /// The chat backend's conversation id.
    #[schemars(length(min = 1, max = MAX_ID_CHARS), regex(pattern = r"\S"))]
    pub conversation_id: String,
    /// Where the conversation happens.
    pub platform: Platform,
    /// The customer's id on that platform.
    #[schemars(length(min = 1, max = MAX_ID_CHARS), regex(pattern = r"\S"))]
    pub platform_user_id: String,
    /// Who wrote the message.
    pub sender: Sender,
    /// The message text, at most `worker.max_text_bytes` bytes (65536 by default).
    pub text: String,
    /// The agent who wrote it, for agent messages.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Browser and session metadata of the visitor.
    #[serde(default)]
    pub visitor: Option<Visitor>,
    /// A logged-in user the chat backend already knows.
    #[serde(default)]
    pub identity_hint: Option<IdentityHint>,
    /// How the customer arrived: organic, api, campaign, import.
    #[serde(default)]
    pub source: Option<CustomerSource>,
    /// Tag of the first message of the conversation (e.g. a campaign entry point).
    #[serde(default)]
    pub first_message_tag: Option<String>,
}

/// Visitor metadata: kept on the identity, never used as a source of stated facts.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Visitor {
    /// IP address.
    pub ip: Option<String>,
    /// Raw user agent.
    pub user_agent: Option<String>,
    /// Browser name.
    pub browser: Option<String>,
    /// Operating system.
    pub os: Option<String>,
    /// Device type.
    pub device: Option<String>,
    /// Country the visitor appears to be in (ISO 3166 alpha-2).
    pub country: Option<String>,
    /// Browser locale.
    pub locale: Option<String>,
    /// Page the chat was opened on.
    pub page_url: Option<String>,
    /// Referring page.
    pub referrer: Option<String>,
    /// First visit time of the session (RFC 3339).
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub session_started_at: Option<DateTime<Utc>>,
}

/// A logged-in user's details the chat backend passes along.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, JsonSchema)]
pub struct IdentityHint {
    /// Display name.
    pub name: Option<String>,
    /// Login email.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Avatar URL.
    pub profile_picture_url: Option<String>,
}

/// How a customer first arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CustomerSource {
    /// Came on their own.
    Organic,
    /// Created through an API.
    Api,
    /// From a campaign.
    Campaign,
    /// Imported.
    Import,
}

impl CustomerSource {
    /// The contract's name for this source.
    pub fn as_str(self) -> &'static str {
        match self {
            CustomerSource::Organic => "organic",
            CustomerSource::Api => "api",
            CustomerSource::Campaign => "campaign",
            CustomerSource::Import => "import",
        }
    }
}

/// `conversation.closed`: a conversation ended.
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct ConversationClosed {
    /// The chat backend's conversation id.
    #[schemars(length(min = 1, max = MAX_ID_CHARS), regex(pattern = r"\S"))]
    pub conversation_id: String,
    /// Who resolved it (`bot`, `agent`, an agent id...).
    #[serde(default)]
    pub resolved_by: Option<String>,
    /// How it was resolved.
    #[serde(default)]
    pub resolution: Option<String>,
}

/// Conversation statuses of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ConversationState {
    /// The bot is handling it.
    Active,
    /// The customer asked for a human: an escalation.
    Requesting,
    /// An agent took over.
    Intervened,
    /// Ended.
    Closed,
}

impl ConversationState {
    /// The contract's name for this status.
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Active => "active",
            ConversationState::Requesting => "requesting",
            ConversationState::Intervened => "intervened",
            ConversationState::Closed => "closed",
        }
    }
}

/// `conversation.status`: a conversation changed status (a `requesting`
/// status is an escalation).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
pub struct ConversationStatus {
    /// The chat backend's conversation id.
    #[schemars(length(min = 1, max = MAX_ID_CHARS), regex(pattern = r"\S"))]
    pub conversation_id: String,
    /// The new status.
    pub status: ConversationState,
    /// The agent involved.
    #[serde(default)]
    pub agent_id: Option<String>,
    /// Why the status changed.
    #[serde(default)]
    pub reason: Option<String>,
}

/// Which customer a customer-level event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CustomerRef {
    /// enricher's customer id.
    Id(Uuid),
    /// An identity on a platform.
    Identity {
        /// The platform.
        platform: Platform,
        /// The user's id there.
        platform_user_id: String,
    },
    /// The customer's email (stored lower-case).
    Email(String),
}

impl CustomerRef {
    /// A stable key for routing and lane selection.
    pub fn routing_key(&self) -> String {
        match self {
            CustomerRef::Id(id) => format!("customer:{id}"),
            CustomerRef::Identity {
                platform,
                platform_user_id,
            } => format!("customer:{}:{platform_user_id}", platform.as_str()),
            CustomerRef::Email(email) => format!("customer:{email}"),
        }
    }
}

/// Sources of field values, by the contract's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum UpdateSource {
    /// An agent's edit: locks the field against the AI.
    Agent,
    /// A form submission.
    Form,
    /// An external system's data update.
    Api,
    /// A bulk import of existing customers.
    Import,
    /// Metadata.
    System,
}

/// `profile.update`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileUpdate {
    /// The customer concerned.
    pub customer: CustomerRef,
    /// Field values by field name; `null` clears the field.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Where the values come from.
    pub source: UpdateSource,
    /// Who made the change (agent id, form id, system name).
    pub actor: Option<String>,
    /// Conversation the update happened in.
    pub conversation_id: Option<String>,
    /// Tags to add.
    pub tags_add: Vec<String>,
    /// Tags to remove.
    pub tags_remove: Vec<String>,
    /// How the bot should address this customer.
    pub agent_instructions: Option<String>,
}

/// `note.added`: an agent's note about a customer (SPEC §5).
#[derive(Debug, Clone, PartialEq)]
pub struct NoteAdded {
    /// The customer concerned.
    pub customer: CustomerRef,
    /// The note, 1 to 2,000 characters.
    pub text: String,
    /// Who wrote it (agent id or name).
    pub author: String,
}

/// `customer.forget`.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerForget {
    /// The customer to erase.
    pub customer: CustomerRef,
    /// Who asked.
    pub actor: Option<String>,
}

/// The keys of a customer reference: `customer_id`, or `platform` with
/// `platform_user_id`, or `email`.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct CustomerRefKeys {
    /// enricher's customer id.
    #[schemars(extend("format" = "uuid"))]
    customer_id: Option<String>,
    /// The platform of the customer's identity.
    platform: Option<Platform>,
    /// The customer's id on that platform.
    #[schemars(length(min = 1, max = MAX_ID_CHARS), regex(pattern = r"\S"))]
    platform_user_id: Option<String>,
    /// The customer's email (matched lower-cased).
    #[schemars(regex(pattern = "@"))]
    email: Option<String>,
}

/// `profile.update`: field values from an agent, a form, an external system
/// or metadata, for one customer.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct ProfileUpdateKeys {
    /// Field values by field name.
    fields: serde_json::Map<String, serde_json::Value>,
    /// Where the values come from.
    source: UpdateSource,
    /// Who made the change (agent id, form id, system name).
    actor: Option<String>,
    /// Conversation the update happened in.
    conversation_id: Option<String>,
    /// Tags to add.
    #[serde(default)]
    tags_add: Vec<String>,
    /// Tags to remove.
    #[serde(default)]
    tags_remove: Vec<String>,
    /// How the bot should address this customer.
    #[schemars(length(max = MAX_AGENT_INSTRUCTIONS_CHARS))]
    agent_instructions: Option<String>,
}

/// `note.added`: an agent's note on a customer.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct NoteKeys {
    /// The note, at most 2,000 characters.
    #[schemars(length(min = 1, max = MAX_NOTE_CHARS))]
    text: String,
    /// Who wrote it.
    author: String,
}

/// `customer.forget`: erase a customer everywhere.
#[derive(Deserialize, JsonSchema)]
pub(crate) struct ForgetKeys {
    /// Who asked.
    actor: Option<String>,
}

/// The inbound event types, for the reason of an unknown one.
const KNOWN_TYPES: &str = "`chat.message`, `conversation.closed`, `conversation.status`, `profile.update`, `customer.forget`, `note.added`";

#[derive(Deserialize)]
struct TypeKey {
    #[serde(rename = "type")]
    kind: String,
}

/// Why an event was refused; the text goes into `x-enrich-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

fn invalid(reason: impl Into<String>) -> InvalidEvent {
    InvalidEvent(reason.into())
}

/// Limits that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest message text in bytes.
    pub max_text_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_text_bytes: MAX_EVENT_BYTES,
        }
    }
}

impl Event {
    /// Decodes and validates one event body.
    pub fn decode(bytes: &[u8], limits: Limits) -> Result<Event, InvalidEvent> {
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(invalid(format!(
                "event is {} bytes; the limit is {MAX_EVENT_BYTES}",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| invalid(format!("event is not valid UTF-8: {e}")))?;
        let mut value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| invalid(format!("malformed JSON: {e}")))?;
        if !value.is_object() {
            return Err(invalid("event must be a JSON object"));
        }
        crate::boundary::enforce(&mut value, Utc::now()).map_err(|v| invalid(v.0))?;
        let kind: TypeKey = from_value(&value, "type")?;
        let envelope: Envelope = from_value(&value, "envelope")?;
        validate_envelope(&envelope)?;
        let body = match kind.kind.as_str() {
            "chat.message" => {
                EventBody::ChatMessage(Box::new(decode_chat_message(&value, limits)?))
            }
            "conversation.closed" => {
                let closed: ConversationClosed = from_value(&value, "conversation.closed")?;
                check_id("conversation_id", &closed.conversation_id)?;
                EventBody::ConversationClosed(closed)
            }
            "conversation.status" => {
                let status: ConversationStatus = from_value(&value, "conversation.status")?;
                check_id("conversation_id", &status.conversation_id)?;
                EventBody::ConversationStatus(status)
            }
            "profile.update" => EventBody::ProfileUpdate(decode_profile_update(&value)?),
            "customer.forget" => {
                let keys: ForgetKeys = from_value(&value, "customer.forget")?;
                EventBody::CustomerForget(CustomerForget {
                    customer: decode_customer_ref(&value)?,
                    actor: keys.actor,
                })
            }
            "note.added" => EventBody::NoteAdded(decode_note(&value)?),
            _ => {
                return Err(invalid(format!(
                    "unknown `type`, expected one of {KNOWN_TYPES}"
                )));
            }
        };
        Ok(Event { envelope, body })
    }

    /// The contract's name of this event's type.
    pub fn type_name(&self) -> &'static str {
        match &self.body {
            EventBody::ChatMessage(_) => "chat.message",
            EventBody::ConversationClosed(_) => "conversation.closed",
            EventBody::ConversationStatus(_) => "conversation.status",
            EventBody::ProfileUpdate(_) => "profile.update",
            EventBody::CustomerForget(_) => "customer.forget",
            EventBody::NoteAdded(_) => "note.added",
        }
    }

    /// The key that orders events: the conversation, or the customer for
    /// customer-level events. Events with the same key are handled in order.
    pub fn ordering_key(&self) -> String {
        let key = match &self.body {
            EventBody::ChatMessage(m) => format!("conversation:{}", m.conversation_id),
            EventBody::ConversationClosed(c) => format!("conversation:{}", c.conversation_id),
            EventBody::ConversationStatus(s) => format!("conversation:{}", s.conversation_id),
            EventBody::ProfileUpdate(u) => u.customer.routing_key(),
            EventBody::CustomerForget(f) => f.customer.routing_key(),
            EventBody::NoteAdded(n) => n.customer.routing_key(),
        };
        format!("{}/{key}", self.envelope.workspace_id)
    }
}

fn from_value<T: DeserializeOwned>(
    value: &serde_json::Value,
    what: &str,
) -> Result<T, InvalidEvent> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let kind = error_kind(&e.into_inner().to_string());
        let at = if path == "." {
            String::new()
        } else {
            format!("`{path}`: ")
        };
        match what {
            "type" => invalid(format!("missing or invalid `type`: {at}{kind}")),
            _ => invalid(format!("invalid {what}: {at}{kind}")),
        }
    })
}

/// The kind of a decode error without the offending value: serde's texts
/// quote it (``unknown variant `x@y.com` ``, `invalid type: string "…"`),
/// and a reason is logged and stored, so only the key (added by the
/// caller), the kind and what was expected survive.
fn error_kind(message: &str) -> String {
    let expected = |rest: &str| {
        rest.split_once(", expected ")
            .map(|(_, expected)| format!(", expected {expected}"))
            .unwrap_or_default()
    };
    if message.starts_with("missing field `") {
        return message.to_owned();
    }
    if let Some(rest) = message.strip_prefix("unknown variant ") {
        return format!("unknown variant{}", expected(rest));
    }
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            // "string \"…\"", "integer `5`", "map": the first word is the kind.
            let found = rest
                .split([' ', ','])
                .next()
                .filter(|word| word.chars().all(|c| c.is_ascii_alphabetic()))
                .unwrap_or("value");
            return format!("{prefix}{found}{}", expected(rest));
        }
    }
    if let Some(rest) = message.strip_prefix("invalid length ") {
        return format!("invalid length{}", expected(rest));
    }
    // Anything else (a date or UUID parser's message) may quote the input.
    "invalid value".to_owned()
}

fn validate_envelope(envelope: &Envelope) -> Result<(), InvalidEvent> {
    if envelope.version != 1 {
        return Err(invalid(format!(
            "unsupported version {}; only 1 exists",
            envelope.version
        )));
    }
    check_id("id", &envelope.id)?;
    check_id("workspace_id", &envelope.workspace_id)
}

fn check_id(key: &str, value: &str) -> Result<(), InvalidEvent> {
    if value.trim().is_empty() {
        return Err(invalid(format!("`{key}` must not be empty")));
    }
    if value.chars().count() > MAX_ID_CHARS {
        return Err(invalid(format!(
            "`{key}` is longer than {MAX_ID_CHARS} characters"
        )));
    }
    Ok(())
}

fn decode_chat_message(
    value: &serde_json::Value,
    limits: Limits,
) -> Result<ChatMessage, InvalidEvent> {
    let message: ChatMessage = from_value(value, "chat.message")?;
    check_id("conversation_id", &message.conversation_id)?;
    check_id("platform_user_id", &message.platform_user_id)?;
    if message.text.len() > limits.max_text_bytes {
        return Err(invalid(format!(
            "`text` is {} bytes; the limit is {}",
            message.text.len(),
            limits.max_text_bytes
        )));
    }
    Ok(message)
}

fn decode_profile_update(value: &serde_json::Value) -> Result<ProfileUpdate, InvalidEvent> {
    let keys: ProfileUpdateKeys = from_value(value, "profile.update")?;
    if let Some(instructions) = &keys.agent_instructions
        && instructions.chars().count() > MAX_AGENT_INSTRUCTIONS_CHARS
    {
        return Err(invalid(format!(
            "`agent_instructions` is longer than {MAX_AGENT_INSTRUCTIONS_CHARS} characters"
        )));
    }
    Ok(ProfileUpdate {
        customer: decode_customer_ref(value)?,
        fields: keys.fields,
        source: keys.source,
        actor: keys.actor,
        conversation_id: keys.conversation_id,
        tags_add: keys.tags_add,
        tags_remove: keys.tags_remove,
        agent_instructions: keys.agent_instructions,
    })
}

fn decode_note(value: &serde_json::Value) -> Result<NoteAdded, InvalidEvent> {
    let keys: NoteKeys = from_value(value, "note.added")?;
    let text = keys.text.trim();
    if text.is_empty() {
        return Err(invalid("`text` must not be empty"));
    }
    if text.chars().count() > MAX_NOTE_CHARS {
        return Err(invalid(format!(
            "`text` is longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    check_id("author", &keys.author)?;
    Ok(NoteAdded {
        customer: decode_customer_ref(value)?,
        text: text.to_owned(),
        author: keys.author.trim().to_owned(),
    })
}

fn decode_customer_ref(value: &serde_json::Value) -> Result<CustomerRef, InvalidEvent> {
    let keys: CustomerRefKeys = from_value(value, "customer reference")?;
    if let Some(id) = keys.customer_id {
        let id = Uuid::parse_str(&id).map_err(|_| invalid("`customer_id` is not a UUID"))?;
        return Ok(CustomerRef::Id(id));
    }
    match (keys.platform, keys.platform_user_id) {
        (Some(platform), Some(platform_user_id)) => {
            check_id("platform_user_id", &platform_user_id)?;
            return Ok(CustomerRef::Identity {
                platform,
                platform_user_id,
            });
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid("`platform` and `platform_user_id` go together"));
        }
        (None, None) => {}
    }
    match keys.email {
        Some(email) if email.contains('@') => Ok(CustomerRef::Email(email.trim().to_lowercase())),
        Some(_) => Err(invalid("`email` is not an email address")),
        None => Err(invalid(
            "missing customer reference: `customer_id`, `platform` + `platform_user_id`, or `email`",
        )),
    }
}

/// `ask.requested`: the worker suggests the bot ask for one field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AskRequested {
    /// Tenant.
    pub workspace_id: String,
    /// The chat backend's conversation id.
    pub conversation_id: String,
    /// enricher's customer id.
    pub customer_id: Uuid,
    /// The one field to ask for.
    pub field: String,
    /// A suggested question in the customer's language and tone.
    pub question: String,
    /// Language of the question.
    pub language: String,
    /// Why now: a note for operators (one line, at most 200 characters),
    /// never to be shown to the customer.
    pub reason: String,
    /// Id of the customer message this answers.
    pub in_reply_to: String,
}

/// One field change inside `profile.updated`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// Field name.
    pub field: String,
    /// Previous value.
    pub old: Option<String>,
    /// New value; `None` (JSON `null`) when the field was cleared.
    pub new: Option<String>,
    /// Source of the new value.
    pub source: String,
}

/// `profile.updated`: fields of a customer changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileUpdated {
    /// Tenant.
    pub workspace_id: String,
    /// enricher's customer id.
    pub customer_id: Uuid,
    /// What changed.
    pub changes: Vec<FieldChange>,
}

/// `customer.merged`: two customers became one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerMerged {
    /// Tenant.
    pub workspace_id: String,
    /// The surviving customer.
    pub into: Uuid,
    /// The customer merged away.
    pub from: Uuid,
    /// What moved.
    pub moved: serde_json::Value,
}

/// How a conversation ended, inside `conversation.summarized`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryResolution {
    /// `resolved` or `unresolved`.
    pub status: String,
    /// Who resolved it: the backend's `resolved_by`, else `bot`, `agent`
    /// (or the agent's id) or `customer` as the model read it.
    pub resolved_by: Option<String>,
    /// When: the time of the message that resolved it, else the close.
    pub resolved_at: Option<DateTime<Utc>>,
    /// The backend's resolution, else one sentence from the model.
    pub detail: Option<String>,
}

/// `conversation.summarized`: an ended conversation was summarised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummarized {
    /// Tenant.
    pub workspace_id: String,
    /// The chat backend's conversation id.
    pub conversation_id: String,
    /// enricher's customer id.
    pub customer_id: Uuid,
    /// A few sentences on what happened.
    pub summary: String,
    /// `positive`, `neutral` or `negative`.
    pub sentiment: String,
    /// From -1 (very negative) to 1 (very positive).
    pub sentiment_score: f64,
    /// Short tags, at most five.
    pub topics: Vec<String>,
    /// Who resolved it and when, or `unresolved`.
    pub resolution: SummaryResolution,
}

/// `customer.insights_updated`: the customer's AI profile changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerInsightsUpdated {
    /// Tenant.
    pub workspace_id: String,
    /// enricher's customer id.
    pub customer_id: Uuid,
    /// The whole profile: lists of `{text, conversation_ids}` by category.
    pub insights: serde_json::Value,
}

/// `note.added` on the outbound exchange: a note was stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoteStored {
    /// Tenant.
    pub workspace_id: String,
    /// enricher's customer id.
    pub customer_id: Uuid,
    /// The note's id (`enrich.notes.note_id`).
    pub note_id: i64,
    /// The note.
    pub text: String,
    /// Who wrote it.
    pub author: String,
    /// When it was written.
    pub created_at: DateTime<Utc>,
}

/// An event the worker publishes on the outbound exchange.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
    /// Ask the customer for one field.
    AskRequested(AskRequested),
    /// Fields changed.
    ProfileUpdated(ProfileUpdated),
    /// Two customers were merged.
    CustomerMerged(CustomerMerged),
    /// An ended conversation was summarised.
    ConversationSummarized(ConversationSummarized),
    /// A customer's AI profile was updated.
    CustomerInsightsUpdated(CustomerInsightsUpdated),
    /// A note was added to a customer.
    NoteAdded(NoteStored),
}

impl Outbound {
    /// The routing key: the event type.
    pub fn routing_key(&self) -> &'static str {
        match self {
            Outbound::AskRequested(_) => "ask.requested",
            Outbound::ProfileUpdated(_) => "profile.updated",
            Outbound::CustomerMerged(_) => "customer.merged",
            Outbound::ConversationSummarized(_) => "conversation.summarized",
            Outbound::CustomerInsightsUpdated(_) => "customer.insights_updated",
            Outbound::NoteAdded(_) => "note.added",
        }
    }

    /// The JSON body.
    pub fn to_value(&self) -> serde_json::Value {
        let value = match self {
            Outbound::AskRequested(e) => serde_json::to_value(e),
            Outbound::ProfileUpdated(e) => serde_json::to_value(e),
            Outbound::CustomerMerged(e) => serde_json::to_value(e),
            Outbound::ConversationSummarized(e) => serde_json::to_value(e),
            Outbound::CustomerInsightsUpdated(e) => serde_json::to_value(e),
            Outbound::NoteAdded(e) => serde_json::to_value(e),
        };
        // Plain structs of strings and ids always serialise.
        value.unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(overrides: serde_json::Value) -> Vec<u8> {
        let mut event = json!({
            "type": "chat.message", "version": 1, "id": "e1", "workspace_id": "w1",
            "occurred_at": "2026-01-02T03:04:05Z", "conversation_id": "c1",
            "platform": "web", "platform_user_id": "u1", "sender": "customer", "text": "hi"
        });
        if let (Some(event), Some(overrides)) = (event.as_object_mut(), overrides.as_object()) {
            for (key, value) in overrides {
                if value.is_null() {
                    event.remove(key);
                } else {
                    event.insert(key.clone(), value.clone());
                }
            }
        }
        serde_json::to_vec(&event).expect("json")
    }

    fn reason(bytes: &[u8]) -> String {
        Event::decode(bytes, Limits::default())
            .expect_err("must be refused")
            .0
    }

    #[test]
    fn decodes_a_chat_message() {
        let event = Event::decode(&chat(json!({})), Limits::default()).expect("valid");
        assert_eq!(event.type_name(), "chat.message");
        assert_eq!(event.ordering_key(), "w1/conversation:c1");
        let EventBody::ChatMessage(message) = event.body else {
            panic!("not a chat message");
        };
        assert_eq!(message.sender, Sender::Customer);
        assert_eq!(message.text, "hi");
    }

    #[test]
    fn extra_keys_are_ignored() {
        assert!(Event::decode(&chat(json!({"new_key": 1})), Limits::default()).is_ok());
    }

    #[test]
    fn refusals_say_why() {
        assert!(reason(b"{not json").starts_with("malformed JSON"));
        assert!(reason(&[0xff, 0xfe]).contains("UTF-8"));
        assert!(reason(b"[1]").contains("object"));
        let unknown_type = reason(&chat(json!({"type": "chat.poke"})));
        assert!(unknown_type.contains("unknown `type`"), "{unknown_type}");
        assert!(!unknown_type.contains("chat.poke"), "{unknown_type}");
        assert!(reason(&chat(json!({"conversation_id": null}))).contains("conversation_id"));
        assert!(reason(&chat(json!({"text": 5}))).contains("invalid type"));
        assert!(reason(&chat(json!({"version": 2}))).contains("version"));
        let unknown_sender = reason(&chat(json!({"sender": "robot"})));
        assert!(unknown_sender.contains("`sender`"), "{unknown_sender}");
        assert!(
            unknown_sender.contains("unknown variant"),
            "{unknown_sender}"
        );
        assert!(!unknown_sender.contains("robot"), "{unknown_sender}");
        assert!(reason(&chat(json!({"occurred_at": "yesterday"}))).contains("envelope"));
        assert!(reason(&chat(json!({"id": ""}))).contains("`id`"));
    }

    #[test]
    fn reasons_name_the_key_and_kind_never_the_value() {
        let mark = "PII-MARK-x@y.com";
        let cases = [
            json!({"sender": mark}),
            json!({"text": {"nested": mark}}),
            json!({"conversation_id": 5551234567_i64}),
            json!({"occurred_at": mark}),
            json!({"platform": mark}),
            json!({"type": mark}),
            json!({"version": mark}),
        ];
        for case in cases {
            let why = reason(&chat(case.clone()));
            assert!(!why.contains("PII-MARK"), "{case}: {why}");
            assert!(!why.contains("5551234567"), "{case}: {why}");
        }
        let why = reason(&chat(json!({"sender": mark})));
        assert!(why.contains("`sender`: unknown variant, expected"), "{why}");
        let why = reason(&chat(json!({"text": 5551234567_i64})));
        assert!(why.contains("`text`: invalid type: integer"), "{why}");
        let forget = serde_json::to_vec(&json!({"type": "customer.forget", "envelope": {"id": "e",
            "workspace_id": "w", "version": 1, "occurred_at": "2026-01-02T03:04:05Z"},
            "customer_id": mark}))
        .expect("json");
        assert!(!reason(&forget).contains("PII-MARK"));
    }

    #[test]
    fn oversized_text_is_refused() {
        let limits = Limits { max_text_bytes: 10 };
        let err =
            Event::decode(&chat(json!({"text": "x".repeat(11)})), limits).expect_err("too long");
        assert!(err.0.contains("`text` is 11 bytes"), "{err}");
        let huge = chat(json!({"text": "x".repeat(MAX_EVENT_BYTES)}));
        assert!(reason(&huge).contains("limit is 65536"));
    }

    #[test]
    fn profile_update_needs_a_customer_reference() {
        let base = json!({"type": "profile.update", "version": 1, "id": "e", "workspace_id": "w",
            "occurred_at": "2026-01-02T03:04:05Z", "fields": {"name": "Ann"}, "source": "agent"});
        let err = reason(&serde_json::to_vec(&base).expect("json"));
        assert!(err.contains("missing customer reference"), "{err}");
        let mut with_email = base.clone();
        with_email["email"] = json!("Ann@Example.com");
        let event = Event::decode(
            &serde_json::to_vec(&with_email).expect("json"),
            Limits::default(),
        )
        .expect("valid");
        let EventBody::ProfileUpdate(update) = event.body else {
            panic!("not a profile update");
        };
        assert_eq!(
            update.customer,
            CustomerRef::Email("ann@example.com".into())
        );
        assert_eq!(update.source, UpdateSource::Agent);
    }

    fn note(overrides: serde_json::Value) -> Vec<u8> {
        let mut event = json!({"type": "note.added", "version": 1, "id": "n1", "workspace_id": "w",
            "occurred_at": "2026-01-02T03:04:05Z", "platform": "whatsapp",
            "platform_user_id": "u1", "text": "  Prefers calls after 5pm ", "author": "agent-7"});
        if let (Some(event), Some(overrides)) = (event.as_object_mut(), overrides.as_object()) {
            for (key, value) in overrides {
                if value.is_null() {
                    event.remove(key);
                } else {
                    event.insert(key.clone(), value.clone());
                }
            }
        }
        serde_json::to_vec(&event).expect("json")
    }

    #[test]
    fn decodes_a_note() {
        let event = Event::decode(&note(json!({})), Limits::default()).expect("valid");
        assert_eq!(event.type_name(), "note.added");
        assert_eq!(event.ordering_key(), "w/customer:whatsapp:u1");
        let EventBody::NoteAdded(note) = event.body else {
            panic!("not a note");
        };
        assert_eq!(note.text, "Prefers calls after 5pm");
        assert_eq!(note.author, "agent-7");
        assert_eq!(
            note.customer,
            CustomerRef::Identity {
                platform: Platform::Whatsapp,
                platform_user_id: "u1".into()
            }
        );
    }

    #[test]
    fn notes_are_checked() {
        assert!(reason(&note(json!({"text": "x".repeat(2001)}))).contains("longer than 2000"));
        assert!(Event::decode(&note(json!({"text": "é".repeat(2000)})), Limits::default()).is_ok());
        assert!(reason(&note(json!({"text": "   "}))).contains("`text` must not be empty"));
        assert!(reason(&note(json!({"text": null}))).contains("text"));
        assert!(reason(&note(json!({"author": null}))).contains("author"));
        assert!(reason(&note(json!({"author": " "}))).contains("`author` must not be empty"));
        let no_customer = note(json!({"platform": null, "platform_user_id": null}));
        assert!(reason(&no_customer).contains("missing customer reference"));
    }

    #[test]
    fn a_cleared_field_is_announced_as_null() {
        let change = FieldChange {
            field: "phone".into(),
            old: Some("+14155550100".into()),
            new: None,
            source: "agent".into(),
        };
        let body = serde_json::to_value(&change).expect("json");
        assert_eq!(body["new"], serde_json::Value::Null);
        assert_eq!(body["old"], json!("+14155550100"));
    }

    #[test]
    fn agent_instructions_are_capped() {
        let event = json!({"type": "profile.update", "version": 1, "id": "e", "workspace_id": "w",
            "occurred_at": "2026-01-02T03:04:05Z", "fields": {}, "source": "agent",
            "customer_id": "6f1c2a8e-1d7e-4c55-9a4e-2f5b8f0f2a11",
            "agent_instructions": "x".repeat(2001)});
        assert!(reason(&serde_json::to_vec(&event).expect("json")).contains("agent_instructions"));
    }
}
