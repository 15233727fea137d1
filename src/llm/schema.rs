//! The tool the model must call, as a JSON schema generated from Rust types
//! (so the parser and the schema cannot drift apart) and rewritten into what
//! OpenAI's strict mode accepts: every object closed, every property
//! required, optionals nullable, no `format`. At run time the field names are
//! narrowed to enums of this workspace's fields, so even a sloppy model can
//! only name fields that exist; the decision core still checks everything.

use std::sync::LazyLock;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::decide::{Proposal, ProposedAsk, ProposedFact};
use crate::fields::FieldSet;
use crate::llm::TOOL_NAME;
use crate::llm::request::Tool;

/// What the model reports for one customer message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EnrichmentOutput {
    /// The customer's own facts in the new message.
    pub facts: Vec<FactOutput>,
    /// One field to ask now, or null.
    pub ask: Option<AskOutput>,
    /// Fields the customer refused to give.
    pub declined: Vec<String>,
    /// ISO 639-1 code of the customer's language.
    pub language: Option<String>,
}

/// One fact with the customer's own words it rests on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FactOutput {
    /// The field name.
    pub field: String,
    /// The value.
    pub value: String,
    /// The customer's exact words stating it.
    pub quote: String,
}

/// One ask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct AskOutput {
    /// The field.
    pub field: String,
    /// The question, in the customer's language.
    pub question: String,
    /// Why now.
    pub reason: String,
}

impl From<EnrichmentOutput> for Proposal {
    fn from(output: EnrichmentOutput) -> Proposal {
        Proposal {
            facts: output
                .facts
                .into_iter()
                .map(|f| ProposedFact {
                    field: f.field,
                    value: f.value,
                    quote: f.quote,
                })
                .collect(),
            asks: output
                .ask
                .into_iter()
                .map(|a| ProposedAsk {
                    field: a.field,
                    question: a.question,
                    reason: a.reason,
                })
                .collect(),
            declined: output.declined,
            language: output.language,
        }
    }
}

/// The field-name enums of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldEnums {
    /// Fields the model may write.
    pub writable: Vec<String>,
    /// Fields the model may ask for.
    pub askable: Vec<String>,
    /// Every configured field (for declines).
    pub all: Vec<String>,
}

impl FieldEnums {
    /// Enums for a workspace: writable = AI-writable fields, askable = the
    /// missing fields given (already in priority order).
    pub fn for_fields(fields: &FieldSet, askable: Vec<String>) -> FieldEnums {
        FieldEnums {
            writable: fields
                .iter()
                .filter(|f| f.ai_writable)
                .map(|f| f.name.clone())
                .collect(),
            askable,
            all: fields.iter().map(|f| f.name.clone()).collect(),
        }
    }
}

/// The strict schema of the tool's output without the runtime enums,
/// generated once; every call clones it and fills in the enums.
static STRICT_OUTPUT_SCHEMA: LazyLock<Value> = LazyLock::new(|| {
    let generated =
        serde_json::to_value(schemars::schema_for!(EnrichmentOutput)).unwrap_or(Value::Null);
    let mut schema = strict(inline_refs(&generated, &generated));
    if let Value::Object(root) = &mut schema {
        root.remove("$schema");
        root.remove("title");
        root.remove("$defs");
        root.remove("definitions");
    }
    keep_descriptions(&mut schema, &["quote"]);
    schema
});

/// Drops every description but those of the named properties: the system
/// prompt explains the rest, and each description is paid for on every call.
fn keep_descriptions(node: &mut Value, keep: &[&str]) {
    match node {
        Value::Object(map) => {
            map.remove("description");
            for (key, child) in map.iter_mut() {
                if key == "properties"
                    && let Value::Object(properties) = child
                {
                    for (name, property) in properties.iter_mut() {
                        let description = property.get("description").cloned();
                        keep_descriptions(property, keep);
                        if let (Some(text), true, Value::Object(kept)) =
                            (description, keep.contains(&name.as_str()), property)
                        {
                            kept.insert("description".to_owned(), text);
                        }
                    }
                } else {
                    keep_descriptions(child, keep);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| keep_descriptions(item, keep)),
        _ => {}
    }
}

/// The strict JSON schema of the tool's parameters for one call.
pub fn parameters_schema(enums: &FieldEnums) -> Value {
    let mut schema = STRICT_OUTPUT_SCHEMA.clone();
    set_enum(
        &mut schema,
        &["properties", "facts", "items", "properties", "field"],
        &enums.writable,
    );
    set_enum(
        &mut schema,
        &["properties", "ask", "properties", "field"],
        &enums.askable,
    );
    set_enum(
        &mut schema,
        &["properties", "declined", "items"],
        &enums.all,
    );
    if enums.askable.is_empty()
        && let Some(ask) = schema.pointer_mut("/properties/ask")
    {
        *ask = json!({"type": "null", "description": "No field may be asked now."});
    }
    schema
}

/// The enrichment tool with this call's enums.
pub fn tool(enums: &FieldEnums) -> Tool {
    Tool {
        name: TOOL_NAME,
        description: "Record the customer's own facts and at most one ask.",
        parameters: parameters_schema(enums),
    }
}

/// The `tools` array entry for the enrichment tool.
pub fn tool_definition(enums: &FieldEnums) -> Value {
    tool(enums).definition()
}

/// Replaces `$ref`s with the definitions they point to.
fn inline_refs(node: &Value, root: &Value) -> Value {
    match node {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let pointer = reference.trim_start_matches('#');
                if let Some(target) = root.pointer(pointer) {
                    return inline_refs(target, root);
                }
            }
            Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), inline_refs(v, root)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| inline_refs(v, root)).collect()),
        other => other.clone(),
    }
}

/// Rewrites a schema into strict mode: closed objects, all properties
/// required, nullable optionals as `anyOf [T, null]`, no `format`.
pub fn strict(node: Value) -> Value {
    match node {
        Value::Object(map) => {
            let mut map: Map<String, Value> =
                map.into_iter().map(|(k, v)| (k, strict(v))).collect();
            map.remove("format");
            map.remove("default");
            if let Some(Value::Array(types)) = map.get("type").cloned() {
                // ["string", "null"] → anyOf, which every strict validator accepts.
                let variants: Vec<Value> = types
                    .into_iter()
                    .map(|t| {
                        let mut variant = Map::new();
                        variant.insert("type".into(), t.clone());
                        if t == "object" || t == "array" {
                            for key in ["properties", "required", "additionalProperties", "items"] {
                                if let Some(v) = map.get(key) {
                                    variant.insert(key.into(), v.clone());
                                }
                            }
                        }
                        Value::Object(variant)
                    })
                    .collect();
                for key in [
                    "type",
                    "properties",
                    "required",
                    "additionalProperties",
                    "items",
                ] {
                    map.remove(key);
                }
                map.insert("anyOf".into(), Value::Array(variants));
            }
            if map.get("type") == Some(&Value::String("object".into()))
                || map.contains_key("properties")
            {
                let keys: Vec<Value> = map
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().cloned().map(Value::String).collect())
                    .unwrap_or_default();
                map.insert("required".into(), Value::Array(keys));
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            // schemars writes Option<Struct> as anyOf [{...}, {type: null}]; keep it.
            Value::Object(map)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(strict).collect()),
        other => other,
    }
}

fn set_enum(schema: &mut Value, path: &[&str], values: &[String]) {
    let Some((key, rest)) = path.split_first() else {
        if let Value::Object(map) = schema {
            map.insert(
                "enum".into(),
                Value::Array(values.iter().cloned().map(Value::String).collect()),
            );
        }
        return;
    };
    let Value::Object(map) = schema else { return };
    if map.contains_key(*key) {
        if let Some(next) = map.get_mut(*key) {
            set_enum(next, rest, values);
        }
        return;
    }
    // Step through anyOf [T, null] wrappers.
    if let Some(Value::Array(variants)) = map.get_mut("anyOf") {
        for variant in variants.iter_mut().filter(|v| v.get(*key).is_some()) {
            if let Some(next) = variant.get_mut(*key) {
                set_enum(next, rest, values);
            }
        }
    }
}

/// Every way a schema breaks OpenAI's strict mode, as paths with reasons.
pub fn strict_violations(schema: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    walk(schema, "$", &mut problems);
    problems
}

fn walk(node: &Value, path: &str, problems: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if map.contains_key("$ref") {
                problems.push(format!("{path}: $ref is not inlined"));
            }
            if map.contains_key("format") {
                problems.push(format!("{path}: `format` is not supported"));
            }
            let is_object = map.get("type") == Some(&Value::String("object".into()))
                || map.contains_key("properties");
            if is_object {
                if map.get("additionalProperties") != Some(&Value::Bool(false)) {
                    problems.push(format!(
                        "{path}: object without additionalProperties: false"
                    ));
                }
                let properties: Vec<&String> = map
                    .get("properties")
                    .and_then(Value::as_object)
                    .map(|p| p.keys().collect())
                    .unwrap_or_default();
                let required: Vec<&str> = map
                    .get("required")
                    .and_then(Value::as_array)
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                for property in properties {
                    if !required.contains(&property.as_str()) {
                        problems.push(format!("{path}: property `{property}` is not required"));
                    }
                }
            }
            for (key, child) in map {
                walk(child, &format!("{path}.{key}"), problems);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                walk(child, &format!("{path}[{i}]"), problems);
            }
        }
        _ => {}
    }
}

/// The tool's arguments as parsed, before the policy looks at them.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedOutput {
    /// Facts.
    pub facts: Vec<FactOutput>,
    /// Asks (the contract allows one; more are kept for the policy to refuse).
    pub asks: Vec<AskOutput>,
    /// Declined fields.
    pub declined: Vec<String>,
    /// Language code.
    pub language: Option<String>,
}

impl From<ParsedOutput> for Proposal {
    fn from(output: ParsedOutput) -> Proposal {
        EnrichmentOutput {
            facts: output.facts,
            ask: None,
            declined: output.declined,
            language: output.language,
        }
        .into_proposal(output.asks)
    }
}

impl EnrichmentOutput {
    fn into_proposal(self, extra_asks: Vec<AskOutput>) -> Proposal {
        let mut proposal = Proposal::from(self);
        proposal
            .asks
            .extend(extra_asks.into_iter().map(|a| ProposedAsk {
                field: a.field,
                question: a.question,
                reason: a.reason,
            }));
        proposal
    }
}

/// Parses the tool's arguments leniently: servers wrap them in strings,
/// drop empty arrays or add keys; a missing list is an empty list.
pub fn parse_output(arguments: &Value) -> Result<ParsedOutput, String> {
    let value = match arguments {
        Value::String(text) => serde_json::from_str::<Value>(strip_code_fence(text))
            .map_err(|e| format!("arguments are not JSON: {e}"))?,
        other => other.clone(),
    };
    let Value::Object(map) = value else {
        return Err("arguments are not a JSON object".into());
    };
    let facts = match map.get("facts") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|item| serde_json::from_value::<FactOutput>(item.clone()).ok())
            .collect(),
        Some(_) => return Err("`facts` is not a list".into()),
    };
    // One ask is the contract; a list is accepted so the policy, not the
    // parser, is what reduces it to one.
    let asks: Vec<AskOutput> = match map.get("ask").or_else(|| map.get("asks")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| serde_json::from_value::<AskOutput>(item.clone()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("`ask` is malformed: {e}"))?,
        Some(value) => vec![
            serde_json::from_value::<AskOutput>(value.clone())
                .map_err(|e| format!("`ask` is malformed: {e}"))?,
        ],
    };
    let declined = match map.get("declined") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let language = map
        .get("language")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(ParsedOutput {
        facts,
        asks,
        declined,
        language,
    })
}

/// The text inside a Markdown code fence, if the model wrapped its JSON in one.
pub fn strip_code_fence(text: &str) -> &str {
    let trimmed = text.trim();
    let without_open = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .unwrap_or(trimmed);
    without_open
        .strip_suffix("```")
        .unwrap_or(without_open)
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fields::{FieldDef, FieldFormat};

    fn enums() -> FieldEnums {
        let mut size = FieldDef::new("company_size", FieldFormat::Select);
        size.options = vec!["1-10".into(), "11-50".into()];
        let fields = FieldSet::new(vec![size], &["name".into(), "email".into()]).expect("fields");
        FieldEnums::for_fields(&fields, vec!["email".into()])
    }

    #[test]
    fn every_generated_schema_is_strict_valid() {
        let schema = parameters_schema(&enums());
        assert_eq!(
            strict_violations(&schema),
            Vec::<String>::new(),
            "{schema:#}"
        );
        let no_ask = parameters_schema(&FieldEnums {
            askable: vec![],
            ..enums()
        });
        assert_eq!(
            strict_violations(&no_ask),
            Vec::<String>::new(),
            "{no_ask:#}"
        );
    }

    #[test]
    fn the_checker_catches_loose_objects() {
        let loose =
            json!({"type": "object", "properties": {"a": {"type": "string", "format": "email"}}});
        let problems = strict_violations(&loose);
        assert_eq!(problems.len(), 3, "{problems:?}");
    }

    #[test]
    fn field_names_are_narrowed_to_the_workspace() {
        let schema = parameters_schema(&enums());
        let text = schema.to_string();
        assert!(text.contains("company_size"));
        let ask_enum = schema
            .pointer("/properties/ask")
            .map(|v| v.to_string())
            .unwrap_or_default();
        assert!(ask_enum.contains("\"enum\":[\"email\"]"), "{ask_enum}");
    }

    #[test]
    fn lenient_parsing_accepts_what_servers_send() {
        let parsed = parse_output(&json!("```json\n{\"facts\":[{\"field\":\"name\",\"value\":\"Mike\",\"quote\":\"Mike here\"}]}\n```"))
            .expect("parses");
        assert_eq!(parsed.facts.len(), 1);
        assert!(parsed.asks.is_empty());
        let two = parse_output(
            &json!({"ask": [{"field": "email", "question": "q", "reason": "r"},
                                               {"field": "name", "question": "q", "reason": "r"}]}),
        )
        .expect("parses");
        assert_eq!(
            Proposal::from(two).asks.len(),
            2,
            "the policy, not the parser, keeps one"
        );
        assert!(parse_output(&json!("not json")).is_err());
        assert!(parse_output(&json!({"facts": 3})).is_err());
        let dropped =
            parse_output(&json!({"facts": [{"field": "name"}], "ask": null})).expect("parses");
        assert!(dropped.facts.is_empty(), "incomplete facts are dropped");
    }
}
