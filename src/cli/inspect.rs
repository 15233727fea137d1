//! `enricher schema`, `enricher schema events` and `enricher prompts check`:
//! let operators see the tool schema the model receives, give chat backends
//! the inbound events' JSON Schemas (generated from the decoder's types, so
//! the two cannot drift apart), and check prompt templates before a deploy.

use std::path::Path;

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde_json::{Map, Value, json};

use crate::config::Settings;
use crate::event::{
    ChatMessage, ConversationClosed, ConversationStatus, CustomerRefKeys, Envelope, ForgetKeys,
    MAX_EVENT_BYTES, NoteKeys, ProfileUpdateKeys,
};
use crate::insights::{profile, summary};
use crate::llm::prompt_size;
use crate::llm::prompts::{PromptSet, SampleContext, TemplatePair, sample_context};
use crate::llm::schema::{FieldEnums, strict_violations, tool_definition};

/// Prints the tool definition for a workspace (all missing fields askable).
pub fn print_schema(settings: &Settings, workspace: Option<&str>) -> anyhow::Result<()> {
    let workspace_settings = match workspace {
        Some(id) => settings.workspaces.for_workspace(id).ok_or_else(|| {
            anyhow::anyhow!("workspace `{id}` is not configured and workspaces are restricted")
        })?,
        None => &settings.workspaces.default,
    };
    let fields = workspace_settings.field_set()?;
    let mut askable: Vec<&crate::fields::FieldDef> = fields.iter().filter(|f| f.required).collect();
    askable.sort_by_key(|f| (f.ask_priority, f.name.clone()));
    let enums = FieldEnums::for_fields(
        &fields,
        askable.into_iter().map(|f| f.name.clone()).collect(),
    );
    let tool = tool_definition(&enums);
    let problems = strict_violations(&tool["function"]["parameters"]);
    println!("{}", serde_json::to_string_pretty(&tool)?);
    anyhow::ensure!(
        problems.is_empty(),
        "schema is not strict-valid: {}",
        problems.join("; ")
    );
    Ok(())
}

/// The inbound event types, in the contract's order.
pub const INBOUND_EVENT_TYPES: [&str; 6] = [
    "chat.message",
    "conversation.closed",
    "conversation.status",
    "profile.update",
    "customer.forget",
    "note.added",
];

/// Where the generated event schemas are committed, from the repository root.
pub const EVENT_SCHEMAS_PATH: &str = "docs/schemas/events.json";

/// Prints the JSON Schemas of the inbound events: the whole document, or one
/// event type's schema with the shared definitions it refers to.
pub fn print_event_schemas(event_type: Option<&str>) -> anyhow::Result<()> {
    let document = inbound_event_schemas();
    let printed = match event_type {
        None => document,
        Some(kind) => single_event_schema(&document, kind)?,
    };
    println!("{}", serde_json::to_string_pretty(&printed)?);
    Ok(())
}

/// JSON Schemas (draft 2020-12) of the inbound events, generated from the
/// types the decoder reads in `crate::event`. One document: its `oneOf`
/// accepts any inbound event; `$defs` holds one schema per event type, named
/// by the type, beside the shared definitions (`Platform`, `Visitor`...).
pub fn inbound_event_schemas() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let envelope = Envelope::json_schema(&mut generator);
    let mut defs = Map::new();
    for kind in INBOUND_EVENT_TYPES {
        let (body, customer_level) = match kind {
            "chat.message" => (ChatMessage::json_schema(&mut generator), false),
            "conversation.closed" => (ConversationClosed::json_schema(&mut generator), false),
            "conversation.status" => (ConversationStatus::json_schema(&mut generator), false),
            "profile.update" => (ProfileUpdateKeys::json_schema(&mut generator), true),
            "note.added" => (NoteKeys::json_schema(&mut generator), true),
            _ => (ForgetKeys::json_schema(&mut generator), true),
        };
        let mut parts = vec![envelope.clone(), body.clone()];
        if customer_level {
            parts.push(CustomerRefKeys::json_schema(&mut generator));
        }
        let mut schema = merged_object(kind, &parts);
        if let Some(description) = body.get("description") {
            schema["description"] = description.clone();
        }
        if customer_level {
            schema["anyOf"] = customer_reference_rule();
        }
        defs.insert(kind.to_owned(), schema);
    }
    defs.extend(generator.take_definitions(true));
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "enricher inbound events",
        "description": format!(
            "Events chat backends publish to the inbound exchange (docs/contract.md §2): \
             UTF-8 JSON objects of at most {MAX_EVENT_BYTES} bytes, told apart by `type`. \
             Keys not listed are ignored. Generated from the decoder's types by \
             `enricher schema events`."
        ),
        "oneOf": INBOUND_EVENT_TYPES
            .iter()
            .map(|kind| json!({ "$ref": format!("#/$defs/{kind}") }))
            .collect::<Vec<_>>(),
        "$defs": defs,
    })
}

/// One event type's schema as a document of its own.
fn single_event_schema(document: &Value, kind: &str) -> anyhow::Result<Value> {
    let mut schema = document["$defs"].get(kind).cloned().ok_or_else(|| {
        anyhow::anyhow!(
            "unknown event type `{kind}`; inbound types are {}",
            INBOUND_EVENT_TYPES.join(", ")
        )
    })?;
    let shared: Map<String, Value> = document["$defs"]
        .as_object()
        .map(|defs| {
            defs.iter()
                .filter(|(name, _)| !INBOUND_EVENT_TYPES.contains(&name.as_str()))
                .map(|(name, def)| (name.clone(), def.clone()))
                .collect()
        })
        .unwrap_or_default();
    schema["$schema"] = document["$schema"].clone();
    schema["$defs"] = Value::Object(shared);
    Ok(schema)
}

/// The envelope's and the body's keys in one object schema, with `type`
/// fixed to the event's type.
fn merged_object(kind: &str, parts: &[Schema]) -> Value {
    let mut properties = Map::new();
    properties.insert(
        "type".into(),
        json!({ "description": "The event type.", "const": kind }),
    );
    let mut required = vec![Value::from("type")];
    for part in parts {
        if let Some(Value::Object(keys)) = part.get("properties") {
            properties.extend(keys.clone());
        }
        if let Some(Value::Array(keys)) = part.get("required") {
            required.extend(keys.iter().cloned());
        }
    }
    json!({
        "title": kind,
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

/// The decoder's customer reference: `customer_id` wins; otherwise
/// `platform` and `platform_user_id` together; otherwise `email`, with
/// neither of the other two (a key set to null counts as absent).
fn customer_reference_rule() -> Value {
    let present =
        |key: &str| json!({ "required": [key], "properties": { key: { "type": "string" } } });
    json!([
        {
            "description": "By enricher's customer id.",
            "required": ["customer_id"],
            "properties": { "customer_id": { "type": "string" } }
        },
        {
            "description": "By an identity on a platform.",
            "required": ["platform", "platform_user_id"],
            "properties": {
                "platform": { "type": "string" },
                "platform_user_id": { "type": "string" }
            }
        },
        {
            "description": "By email, without `platform` or `platform_user_id`.",
            "required": ["email"],
            "properties": { "email": { "type": "string" } },
            "not": { "anyOf": [present("platform"), present("platform_user_id")] }
        }
    ])
}

/// Renders every template with sample data; fails on any error.
pub fn check_prompts(dir: &Path) -> anyhow::Result<()> {
    let set = PromptSet::load(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let rendered = set.render(&sample_context())?;
    println!(
        "enrichment prompts in {} are valid (version {})",
        dir.display(),
        set.version()
    );
    println!(
        "--- system ---\n{}\n--- user ---\n{}",
        rendered.system, rendered.user
    );
    let sizes = prompt_size::measure_conversation(&set)?;
    let median = prompt_size::median_total(&sizes);
    let size = prompt_size::measure(&set)?;
    println!(
        "enrichment prompts for a {}-turn conversation with {} custom fields: median {} prompt tokens \
         over its {} requests; the last (all {} turns) {} (o200k_base: system {}, user {}, tool definition {}); \
         budget for the median {}",
        prompt_size::SAMPLE_TURNS,
        prompt_size::SAMPLE_CUSTOM_FIELDS,
        median,
        sizes.len(),
        prompt_size::SAMPLE_TURNS,
        size.total(),
        size.system,
        size.user,
        size.tool,
        prompt_size::PROMPT_TOKEN_BUDGET
    );
    if median > prompt_size::PROMPT_TOKEN_BUDGET {
        println!(
            "warning: over the {}-token budget the shipped templates keep; every model call pays for it",
            prompt_size::PROMPT_TOKEN_BUDGET
        );
    }
    let pairs: [(&str, TemplatePair, SampleContext); 2] = [
        ("summary", summary::TEMPLATES, summary::sample_context),
        ("insights", profile::TEMPLATES, profile::sample_context),
    ];
    for (purpose, pair, sample) in pairs {
        let set = PromptSet::load_pair(dir, pair, sample)
            .map_err(|e| anyhow::anyhow!("{} ({purpose}): {e}", dir.display()))?;
        println!("{purpose} prompts are valid (version {})", set.version());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::event::{Event, Limits};

    const CUSTOMER_ID: &str = "6f1c2a8e-1d7e-4c55-9a4e-2f5b8f0f2a11";

    /// An event of `kind` with every key its schema lists (the customer
    /// reference by `customer_id` only).
    fn full_event(kind: &str) -> Value {
        let mut event = json!({
            "type": kind, "version": 1, "id": "e1", "workspace_id": "w1",
            "occurred_at": "2026-01-02T03:04:05Z",
        });
        let body = match kind {
            "chat.message" => json!({
                "conversation_id": "c1", "platform": "web", "platform_user_id": "u1",
                "sender": "customer", "text": "hi", "agent_id": "a1",
                "visitor": {"country": "GB"}, "identity_hint": {"name": "Ann"},
                "source": "organic", "first_message_tag": "spring",
            }),
            "conversation.closed" => json!({
                "conversation_id": "c1", "resolved_by": "bot", "resolution": "answered",
            }),
            "conversation.status" => json!({
                "conversation_id": "c1", "status": "requesting", "agent_id": "a1",
                "reason": "asked for a human",
            }),
            "profile.update" => json!({
                "customer_id": CUSTOMER_ID, "fields": {"name": "Ann"}, "source": "agent",
                "actor": "a1", "conversation_id": "c1", "tags_add": ["vip"],
                "tags_remove": ["new"], "agent_instructions": "formal",
            }),
            "note.added" => json!({
                "customer_id": CUSTOMER_ID, "text": "prefers mornings", "author": "a1",
            }),
            _ => json!({ "customer_id": CUSTOMER_ID, "actor": "a1" }),
        };
        if let (Some(event), Some(body)) = (event.as_object_mut(), body.as_object()) {
            event.extend(body.clone());
        }
        event
    }

    fn decodes(event: &Value) -> bool {
        Event::decode(&serde_json::to_vec(event).expect("json"), Limits::default()).is_ok()
    }

    fn without(event: &Value, key: &str) -> Value {
        let mut event = event.clone();
        if let Some(object) = event.as_object_mut() {
            object.remove(key);
        }
        event
    }

    fn keys(value: &Value) -> BTreeSet<String> {
        value
            .as_object()
            .map(|object| object.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The string values a property schema allows, following `$ref`,
    /// `anyOf` and `oneOf`; empty when it allows any string.
    fn allowed_values(schema: &Value, defs: &Value) -> BTreeSet<String> {
        let mut values = BTreeSet::new();
        if let Some(Value::String(value)) = schema.get("const") {
            values.insert(value.clone());
        }
        if let Some(Value::Array(listed)) = schema.get("enum") {
            values.extend(listed.iter().filter_map(|v| v.as_str().map(str::to_owned)));
        }
        if let Some(Value::String(reference)) = schema.get("$ref") {
            let name = reference.trim_start_matches("#/$defs/");
            values.extend(allowed_values(&defs[name], defs));
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(options)) = schema.get(key) {
                for option in options {
                    values.extend(allowed_values(option, defs));
                }
            }
        }
        values
    }

    /// Evaluates the subset of JSON Schema the customer reference rule uses.
    fn matches(rule: &Value, event: &Value) -> bool {
        if let Some(Value::Array(required)) = rule.get("required")
            && !required
                .iter()
                .all(|key| event.get(key.as_str().unwrap_or("")).is_some())
        {
            return false;
        }
        if let Some(Value::Object(properties)) = rule.get("properties") {
            for (key, property) in properties {
                if property["type"] == "string"
                    && event.get(key).is_some_and(|value| !value.is_string())
                {
                    return false;
                }
            }
        }
        if let Some(not) = rule.get("not")
            && matches(not, event)
        {
            return false;
        }
        if let Some(Value::Array(options)) = rule.get("anyOf")
            && !options.iter().any(|option| matches(option, event))
        {
            return false;
        }
        true
    }

    #[test]
    fn the_committed_event_schemas_are_what_the_code_generates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(EVENT_SCHEMAS_PATH);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = format!(
            "{}\n",
            serde_json::to_string_pretty(&inbound_event_schemas()).expect("json")
        );
        assert!(
            committed == generated,
            "{EVENT_SCHEMAS_PATH} differs from what the code generates; regenerate it with \
             `cargo run -q -- schema events > {EVENT_SCHEMAS_PATH}`"
        );
    }

    #[test]
    fn every_event_type_has_a_schema_and_the_document_accepts_each() {
        let document = inbound_event_schemas();
        let refs: Vec<&str> = document["oneOf"]
            .as_array()
            .expect("oneOf")
            .iter()
            .filter_map(|r| r["$ref"].as_str())
            .collect();
        for kind in INBOUND_EVENT_TYPES {
            assert!(refs.contains(&format!("#/$defs/{kind}").as_str()), "{kind}");
            let schema = &document["$defs"][kind];
            assert_eq!(schema["properties"]["type"]["const"], kind);
            assert!(
                decodes(&full_event(kind)),
                "{kind}: the full sample must decode"
            );
        }
        let unknown = json!({"type": "chat.reaction"});
        assert!(single_event_schema(&document, "chat.reaction").is_err());
        assert!(!decodes(&unknown));
    }

    #[test]
    fn required_keys_are_exactly_those_the_decoder_cannot_do_without() {
        let document = inbound_event_schemas();
        for kind in INBOUND_EVENT_TYPES {
            let schema = &document["$defs"][kind];
            let event = full_event(kind);
            let mut listed = keys(&schema["properties"]);
            let customer_level = schema.get("anyOf").is_some();
            if customer_level {
                for key in ["platform", "platform_user_id", "email"] {
                    assert!(
                        listed.remove(key),
                        "{kind}: `{key}` missing from the schema"
                    );
                }
            }
            assert_eq!(
                listed,
                keys(&event),
                "{kind}: schema keys and sample keys differ"
            );
            let required: BTreeSet<String> = schema["required"]
                .as_array()
                .expect("required")
                .iter()
                .filter_map(|k| k.as_str().map(str::to_owned))
                .collect();
            for key in keys(&event) {
                if customer_level && key == "customer_id" {
                    continue;
                }
                assert_eq!(
                    !decodes(&without(&event, &key)),
                    required.contains(&key),
                    "{kind}: `{key}` is required by the decoder or by the schema, not both"
                );
            }
        }
    }

    #[test]
    fn enumerated_keys_allow_exactly_what_the_decoder_accepts() {
        let document = inbound_event_schemas();
        let defs = &document["$defs"];
        let expected: [(&str, &[&str]); 6] = [
            ("chat.message", &["platform", "sender", "source", "type"]),
            ("conversation.closed", &["type"]),
            ("conversation.status", &["status", "type"]),
            ("profile.update", &["platform", "source", "type"]),
            ("customer.forget", &["platform", "type"]),
            ("note.added", &["platform", "type"]),
        ];
        for (kind, enumerated) in expected {
            let schema = &defs[kind];
            let event = full_event(kind);
            let mut found = Vec::new();
            for (key, property) in schema["properties"].as_object().expect("properties") {
                let values = allowed_values(property, defs);
                if values.is_empty() {
                    continue;
                }
                found.push(key.as_str());
                for value in values.iter().map(String::as_str).chain(["bogus"]) {
                    let mut changed = event.clone();
                    changed[key] = json!(value);
                    if key == "platform" && kind != "chat.message" {
                        changed["platform_user_id"] = json!("u1");
                    }
                    let allowed = value != "bogus";
                    assert_eq!(decodes(&changed), allowed, "{kind}: `{key}` = {value}");
                }
            }
            assert_eq!(found, enumerated, "{kind}: enumerated keys");
        }
    }

    #[test]
    fn the_customer_reference_rule_agrees_with_the_decoder() {
        let document = inbound_event_schemas();
        for kind in ["profile.update", "customer.forget", "note.added"] {
            let rule = json!({ "anyOf": document["$defs"][kind]["anyOf"].clone() });
            let base = without(&full_event(kind), "customer_id");
            let cases = [
                json!({}),
                json!({"customer_id": CUSTOMER_ID}),
                json!({"customer_id": null}),
                json!({"customer_id": CUSTOMER_ID, "platform": "web"}),
                json!({"platform": "web", "platform_user_id": "u1"}),
                json!({"platform": "web"}),
                json!({"platform_user_id": "u1"}),
                json!({"email": "ann@example.com"}),
                json!({"email": "ann@example.com", "platform": null}),
                json!({"email": "ann@example.com", "platform": "web"}),
                json!({"email": "ann@example.com", "platform_user_id": "u1"}),
                json!({"email": null, "platform": "web", "platform_user_id": "u1"}),
            ];
            for case in cases {
                let mut event = base.clone();
                if let (Some(event), Some(keys)) = (event.as_object_mut(), case.as_object()) {
                    event.extend(keys.clone());
                }
                assert_eq!(
                    matches(&rule, &event),
                    decodes(&event),
                    "{kind}: customer reference {case}"
                );
            }
        }
    }
}
