//! TEMPORARY placeholder until the field module lands.
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldFormat {
    Text,
    Textarea,
    Select,
    Radio,
    Checkbox,
    Email,
    Phone,
    Number,
    Date,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    pub name: String,
    #[serde(default)]
    pub label: String,
    pub format: FieldFormat,
    #[serde(default)]
    pub options: Vec<String>,
    #[serde(default)]
    pub validation: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub ask_priority: i32,
    #[serde(default)]
    pub ai_writable: bool,
    #[serde(default)]
    pub max_length: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("unknown")]
    UnknownField,
}
#[derive(Debug, thiserror::Error)]
#[error("bad")]
pub struct FieldConfigError;

#[derive(Debug, Clone)]
pub struct FieldSet {
    defs: Vec<FieldDef>,
}
impl FieldSet {
    pub fn new(custom: Vec<FieldDef>, _required: &[String]) -> Result<FieldSet, FieldConfigError> {
        Ok(FieldSet { defs: custom })
    }
    pub fn get(&self, name: &str) -> Option<&FieldDef> {
        self.defs.iter().find(|d| d.name == name)
    }
    pub fn iter(&self) -> impl Iterator<Item = &FieldDef> {
        self.defs.iter()
    }
    pub fn normalize(
        &self,
        _field: &str,
        raw: &str,
        _region: Option<&str>,
    ) -> Result<String, Rejection> {
        Ok(raw.to_string())
    }
}
pub const BUILTIN_FIELDS: [&str; 6] = ["name", "email", "phone", "language", "country", "location"];
impl Rejection {
    pub fn as_str(&self) -> &'static str {
        "unknown_field"
    }
}
