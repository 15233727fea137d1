//! The chat-completions request body of one structured call (enrichment,
//! summaries, insights): the rendered prompts plus the tool, asked for in
//! the configured output mode (`tools`, `json_schema` or `json_object`).

use serde_json::{Value, json};

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
        json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "strict": true,
                "parameters": self.parameters,
            }
        })
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
    pub fn request(&self, rendered: &Rendered, tool: &Tool) -> Value {
        let mut system = rendered.system.clone();
        let mut body = json!({
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
        });
        match self.mode {
            OutputMode::Tools => {
                body["tools"] = json!([tool.definition()]);
                body["tool_choice"] = json!({"type": "function", "function": {"name": tool.name}});
            }
            OutputMode::JsonSchema => {
                body["response_format"] = json!({"type": "json_schema", "json_schema": {
                    "name": tool.name, "strict": true, "schema": tool.parameters}});
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
