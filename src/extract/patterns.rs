use crate::fields::FieldSet;
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fact {
    pub field: String,
    pub value: String,
    pub quote: String,
}
pub fn extract_facts(_text: &str, _fields: &FieldSet, _default_region: Option<&str>) -> Vec<Fact> {
    vec![]
}
