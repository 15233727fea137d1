use crate::fields::FieldSet;
pub fn declined_fields(_text: &str, _fields: &FieldSet) -> Vec<String> {
    vec![]
}
