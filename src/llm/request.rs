//! The chat-completions request body of one structured call (enrichment,
//! summaries, insights): the rendered prompts plus the tool, asked for in
//! the configured output mode (`tools`, `json_schema` or `json_object`).

use serde_json::{Map, Value, json};

use super::prompts::Rendered;
use crate::config::{LlmSettings, OutputMode};

/// A tool the model must call.
#[derive(Debug, Clone)]
pub struct Tool {
    /// Its name.
    pub name: &'static str,
    /// What it is for.
    pub description: &'static str,
    /// Strict JSON schema of its arguments.
    pub parameters: Value,
}

impl Tool {
    /// Its entry in a request's `tools` array.
    pub fn definition(&self) -> Value {
        self.clone().into_definition()
    }

    /// Its entry in a request's `tools` array, moving the schema in rather
    /// than copying it (`json!` would serialize it node by node).
    pub fn into_definition(self) -> Value {
        let mut function = Map::new();
        function.insert("name".into(), self.name.into());
        function.insert("description".into(), self.description.into());
        function.insert("strict".into(), true.into());
        function.insert("parameters".into(), self.parameters);
        let mut definition = Map::new();
        definition.insert("type".into(), "function".into());
        definition.insert("function".into(), Value::Object(function));
        Value::Object(definition)
    }
}

/// Model, output mode, sampling and answer length of a kind of call.
#[derive(Debug, Clone)]
pub struct CallShape {
    /// Model name.
    pub model: String,
    /// Structured-output mode.
    pub mode: OutputMode,
    /// Sampling temperature.
    pub temperature: f32,
    /// Longest answer.
    pub max_tokens: u32,
}

impl CallShape {
    /// The configured model and mode with this call's answer length.
    pub fn new(llm: &LlmSettings, max_tokens: u32) -> CallShape {
        CallShape {
            model: llm.model.clone(),
            mode: llm.mode,
            temperature: llm.temperature,
            max_tokens,
        }
    }

    /// The chat-completions request body.
    pub fn request(&self, rendered: &Rendered, tool: Tool) -> Value {
        let mut system = rendered.system.clone();
        let mut body = json!({
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        });
        match self.mode {
            OutputMode::Tools => {
                body["tool_choice"] = json!({"type": "function", "function": {"name": tool.name}});
                body["tools"] = Value::Array(vec![tool.into_definition()]);
            }
            OutputMode::JsonSchema => {
                let mut format = json!({"type": "json_schema", "json_schema": {
                    "name": tool.name, "strict": true}});
                format["json_schema"]["schema"] = tool.parameters;
                body["response_format"] = format;
            }
            OutputMode::JsonObject => {
                system.push_str("\n\nAnswer with one JSON object matching this schema:\n");
                system.push_str(&tool.parameters.to_string());
                body["response_format"] = json!({"type": "json_object"});
            }
        }
        body["messages"] = json!([
            {"role": "system", "content": system},
            {"role": "user", "content": rendered.user},
        ]);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool() -> Tool {
        Tool {
            name: "record",
            description: "Record it.",
            parameters: json!({"type": "object", "properties": {"x": {"type": "string"}},
                "required": ["x"], "additionalProperties": false}),
        }
    }

    fn request(mode: OutputMode) -> Value {
        let shape = CallShape {
            model: "m".into(),
            mode,
            temperature: 0.0,
            max_tokens: 100,
        };
        let rendered = Rendered {
            system: "sys".into(),
            user: "usr".into(),
            version: "v".into(),
        };
        shape.request(&rendered, tool())
    }

    #[test]
    fn tools_mode_forces_the_tool_with_its_strict_schema() {
        let body = request(OutputMode::Tools);
        assert_eq!(body["tools"], json!([tool().definition()]));
        assert_eq!(
            body["tools"][0]["function"]["parameters"],
            tool().parameters
        );
        assert_eq!(body["tools"][0]["function"]["strict"], json!(true));
        assert_eq!(body["tool_choice"]["function"]["name"], json!("record"));
        assert_eq!(body["messages"][0]["content"], json!("sys"));
        assert_eq!(body["messages"][1]["content"], json!("usr"));
        assert!(body.get("response_format").is_none());
    }

    #[test]
    fn json_schema_mode_puts_the_schema_in_the_response_format() {
        let body = request(OutputMode::JsonSchema);
        let format = &body["response_format"];
        assert_eq!(format["type"], json!("json_schema"));
        assert_eq!(format["json_schema"]["name"], json!("record"));
        assert_eq!(format["json_schema"]["strict"], json!(true));
        assert_eq!(format["json_schema"]["schema"], tool().parameters);
        assert!(body.get("tools").is_none());
    }

    #[test]
    fn json_object_mode_writes_the_schema_into_the_system_prompt() {
        let body = request(OutputMode::JsonObject);
        assert_eq!(body["response_format"], json!({"type": "json_object"}));
        let system = body["messages"][0]["content"].as_str().unwrap_or_default();
        assert!(system.starts_with("sys\n\n"));
        assert!(system.ends_with(&tool().parameters.to_string()));
        assert!(body.get("tools").is_none());
    }
}
