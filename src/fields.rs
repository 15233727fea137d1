//! Profile field definitions: which facts a workspace collects about its
//! customers, how each one is validated, and the one canonical form it is
//! stored in.
//!
//! Every value written to a profile, whether the deterministic extractor found
//! it or the language model proposed it, goes through [`FieldSet::normalize`].
//! That keeps one spelling per fact in the profile (lower-case emails, E.164
//! phone numbers, ISO dates, canonical option names) and turns every malformed
//! value into a [`Rejection`] with a stable reason code for metrics.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::NaiveDate;
use phonenumber::Mode;
use phonenumber::country::Id as RegionId;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// Fields every workspace has, in the order they are listed.
pub const BUILTIN_FIELDS: [&str; 6] = ["name", "email", "phone", "language", "country", "location"];

/// Most custom fields one workspace may define.
pub const MAX_CUSTOM_FIELDS: usize = 50;

/// Largest compiled size accepted for a custom validation pattern, so one
/// workspace's configuration cannot make matching arbitrarily expensive.
const VALIDATION_SIZE_LIMIT: usize = 1 << 20;

/// How a field's value is entered and therefore validated and stored.
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

impl FieldFormat {
    /// Longest value (in characters) accepted when a field sets no `max_length`.
    pub fn default_max_length(self) -> usize {
        match self {
            FieldFormat::Text | FieldFormat::Select | FieldFormat::Radio => 200,
            FieldFormat::Textarea | FieldFormat::Checkbox => 2000,
            FieldFormat::Email => 254,
            FieldFormat::Phone | FieldFormat::Number | FieldFormat::Date => 64,
        }
    }

    /// Whether values must be chosen from the field's `options`.
    pub fn has_options(self) -> bool {
        matches!(
            self,
            FieldFormat::Select | FieldFormat::Radio | FieldFormat::Checkbox
        )
    }
}

/// One profile field as a workspace configures it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    /// Key in the profile, snake_case.
    pub name: String,
    /// Human-readable name shown to agents and used when asking the customer.
    #[serde(default)]
    pub label: String,
    pub format: FieldFormat,
    /// Allowed values for select, radio and checkbox fields.
    #[serde(default)]
    pub options: Vec<String>,
    /// Pattern a text value must match in full.
    #[serde(default)]
    pub validation: Option<String>,
    /// What the field means, for agents and the language model.
    #[serde(default)]
    pub description: String,
    /// Whether the enricher should try to collect this field.
    #[serde(default)]
    pub required: bool,
    /// Lower values are asked for first.
    #[serde(default = "default_ask_priority")]
    pub ask_priority: i32,
    /// Whether the language model may write this field.
    #[serde(default = "default_true")]
    pub ai_writable: bool,
    /// Longest accepted value in characters; the format's default when unset.
    #[serde(default)]
    pub max_length: Option<usize>,
}

fn default_ask_priority() -> i32 {
    100
}

fn default_true() -> bool {
    true
}

impl FieldDef {
    /// A field with the given name and format and every other setting at its
    /// default.
    pub fn new(name: impl Into<String>, format: FieldFormat) -> FieldDef {
        FieldDef {
            name: name.into(),
            label: String::new(),
            format,
            options: Vec::new(),
            validation: None,
            description: String::new(),
            required: false,
            ask_priority: default_ask_priority(),
            ai_writable: true,
            max_length: None,
        }
    }

    /// The longest value accepted, in characters.
    pub fn effective_max_length(&self) -> usize {
        self.max_length
            .unwrap_or_else(|| self.format.default_max_length())
    }
}

/// The built-in fields, in [`BUILTIN_FIELDS`] order. None is required here;
/// the workspace configuration decides that.
pub fn builtin_definitions() -> Vec<FieldDef> {
    let builtin = |name: &str, label: &str, format, description: &str, ask_priority| FieldDef {
        label: label.to_owned(),
        description: description.to_owned(),
        ask_priority,
        ..FieldDef::new(name, format)
    };
    vec![
        builtin(
            "name",
            "Name",
            FieldFormat::Text,
            "The customer's name as they give it.",
            10,
        ),
        builtin(
            "email",
            "Email",
            FieldFormat::Email,
            "The customer's own email address.",
            20,
        ),
        builtin(
            "phone",
            "Phone",
            FieldFormat::Phone,
            "The customer's own phone number, stored in E.164 form.",
            30,
        ),
        builtin(
            "language",
            "Language",
            FieldFormat::Text,
            "Language the customer prefers: an ISO 639-1 code or the language's name.",
            100,
        ),
        builtin(
            "country",
            "Country",
            FieldFormat::Text,
            "Country the customer is in; an ISO 3166 alpha-2 code is preferred.",
            100,
        ),
        builtin(
            "location",
            "Location",
            FieldFormat::Text,
            "City, region or other place the customer says they are in.",
            100,
        ),
    ]
}

/// Why a workspace's field configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldConfigError {
    #[error(
        "custom field name {0:?} is not snake_case (a lower-case letter, then up to 62 of a-z, 0-9 or _)"
    )]
    InvalidName(String),
    #[error("custom field {0:?} has the name of a built-in field")]
    BuiltinClash(String),
    #[error("custom field {0:?} is defined more than once")]
    Duplicate(String),
    #[error("{count} custom fields are defined; at most {max} are allowed")]
    TooManyFields { count: usize, max: usize },
    #[error("field {0:?} is a choice field and needs at least one option")]
    MissingOptions(String),
    #[error("field {0:?} has a blank option")]
    BlankOption(String),
    #[error("field {field:?} has an invalid validation pattern: {message}")]
    InvalidValidation { field: String, message: String },
    #[error("required field {0:?} is not defined")]
    UnknownRequired(String),
}

/// Why a value was not written to a profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("unknown field")]
    UnknownField,
    #[error("empty value")]
    Empty,
    #[error("value too long")]
    TooLong,
    #[error("invalid email address")]
    InvalidEmail,
    #[error("invalid phone number")]
    InvalidPhone,
    #[error("not one of the field's options")]
    NotAnOption,
    #[error("value does not match the field's pattern")]
    PatternMismatch,
    #[error("invalid number")]
    InvalidNumber,
    #[error("invalid date")]
    InvalidDate,
}

impl Rejection {
    /// Stable snake_case reason code, used as a metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::UnknownField => "unknown_field",
            Rejection::Empty => "empty",
            Rejection::TooLong => "too_long",
            Rejection::InvalidEmail => "invalid_email",
            Rejection::InvalidPhone => "invalid_phone",
            Rejection::NotAnOption => "not_an_option",
            Rejection::PatternMismatch => "pattern_mismatch",
            Rejection::InvalidNumber => "invalid_number",
            Rejection::InvalidDate => "invalid_date",
        }
    }
}

static FIELD_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-z][a-z0-9_]{0,62}$").expect("valid regex"));

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$",
    )
    .expect("valid regex")
});

static PHONE_CHARS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^\+?[0-9\s().\-/]+$").expect("valid regex"));

static PHONE_EXTENSION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\s*(?:,\s*)?(?:ext\.?|extension|x|#)\s*[0-9]{1,6}$").expect("valid regex")
});

static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^[+-]?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)$")
        .expect("valid regex")
});

static DATE_ISO: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([0-9]{4})[-/.]([0-9]{1,2})[-/.]([0-9]{1,2})$").expect("valid regex")
});

static DATE_NUMERIC_DAY_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^([0-9]{1,2})[-/.]([0-9]{1,2})[-/.]([0-9]{4})$").expect("valid regex")
});

static DATE_MONTH_NAME_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^([a-z]+)\.?\s+([0-9]{1,2})(?:st|nd|rd|th)?,?\s+([0-9]{4})$")
        .expect("valid regex")
});

static DATE_DAY_FIRST_MONTH_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)^([0-9]{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?([a-z]+)\.?,?\s+([0-9]{4})$")
        .expect("valid regex")
});

static LIST_SEPARATOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[,;]").expect("valid regex"));

static AND_SEPARATOR: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\s+(?:and|&|y|e|et|und|dan)\s+").expect("valid regex"));

static LEADING_AND: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)^(?:and|&|y|e|et|und|dan)\s+").expect("valid regex"));

/// The fields of one workspace: the built-ins plus its custom fields, checked
/// and with validation patterns compiled once.
#[derive(Debug, Clone)]
pub struct FieldSet {
    defs: Vec<FieldDef>,
    patterns: HashMap<String, Regex>,
}

impl FieldSet {
    /// Builds the set from a workspace's custom fields and the names it
    /// requires (built-in or custom).
    pub fn new(custom: Vec<FieldDef>, required: &[String]) -> Result<FieldSet, FieldConfigError> {
        if custom.len() > MAX_CUSTOM_FIELDS {
            return Err(FieldConfigError::TooManyFields {
                count: custom.len(),
                max: MAX_CUSTOM_FIELDS,
            });
        }
        let mut defs = builtin_definitions();
        let mut patterns = HashMap::new();
        for def in custom {
            if !FIELD_NAME.is_match(&def.name) {
                return Err(FieldConfigError::InvalidName(def.name));
            }
            if BUILTIN_FIELDS.contains(&def.name.as_str()) {
                return Err(FieldConfigError::BuiltinClash(def.name));
            }
            if defs.iter().any(|d| d.name == def.name) {
                return Err(FieldConfigError::Duplicate(def.name));
            }
            if def.format.has_options() {
                if def.options.is_empty() {
                    return Err(FieldConfigError::MissingOptions(def.name));
                }
                if def.options.iter().any(|o| o.trim().is_empty()) {
                    return Err(FieldConfigError::BlankOption(def.name));
                }
            }
            if let Some(pattern) = &def.validation {
                let compiled = RegexBuilder::new(&format!("^(?:{pattern})$"))
                    .size_limit(VALIDATION_SIZE_LIMIT)
                    .build()
                    .map_err(|e| FieldConfigError::InvalidValidation {
                        field: def.name.clone(),
                        message: e.to_string(),
                    })?;
                patterns.insert(def.name.clone(), compiled);
            }
            defs.push(def);
        }
        for name in required {
            match defs.iter_mut().find(|d| &d.name == name) {
                Some(def) => def.required = true,
                None => return Err(FieldConfigError::UnknownRequired(name.clone())),
            }
        }
        Ok(FieldSet { defs, patterns })
    }

    /// The field called `name`, if the workspace has it.
    pub fn get(&self, name: &str) -> Option<&FieldDef> {
        self.defs.iter().find(|d| d.name == name)
    }

    /// Every field: the built-ins first, then custom fields in configured order.
    pub fn iter(&self) -> impl Iterator<Item = &FieldDef> {
        self.defs.iter()
    }

    /// Required fields for which `known` returns false, in the order they
    /// should be asked for: by `ask_priority`, then by name.
    pub fn required_missing(&self, known: &impl Fn(&str) -> bool) -> Vec<&FieldDef> {
        let mut missing: Vec<&FieldDef> = self
            .defs
            .iter()
            .filter(|d| d.required && !known(&d.name))
            .collect();
        missing.sort_by(|a, b| {
            a.ask_priority
                .cmp(&b.ask_priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        missing
    }

    /// Checks `raw` against the field's rules and returns the form it is
    /// stored in. `default_region` (ISO 3166 alpha-2) is used to read phone
    /// numbers written without a country code.
    pub fn normalize(
        &self,
        field: &str,
        raw: &str,
        default_region: Option<&str>,
    ) -> Result<String, Rejection> {
        let def = self.get(field).ok_or(Rejection::UnknownField)?;
        let value = raw.trim();
        if value.is_empty() {
            return Err(Rejection::Empty);
        }
        let max = def.effective_max_length();
        match def.format {
            FieldFormat::Text | FieldFormat::Textarea => {
                let value = collapse_whitespace(value);
                if value.chars().count() > max {
                    return Err(Rejection::TooLong);
                }
                if def.name == "name" && value.chars().any(|c| c.is_numeric() || c == '@') {
                    return Err(Rejection::PatternMismatch);
                }
                if let Some(pattern) = self.patterns.get(&def.name)
                    && !pattern.is_match(&value)
                {
                    return Err(Rejection::PatternMismatch);
                }
                Ok(value)
            }
            FieldFormat::Email => normalize_email(value, max),
            FieldFormat::Phone => normalize_phone(value, default_region, max),
            FieldFormat::Select | FieldFormat::Radio => {
                if value.chars().count() > max {
                    return Err(Rejection::TooLong);
                }
                let chosen = self.chosen_options(field, value)?;
                chosen
                    .first()
                    .map(|&i| def.options[i].trim().to_owned())
                    .ok_or(Rejection::NotAnOption)
            }
            FieldFormat::Checkbox => {
                if value.chars().count() > max {
                    return Err(Rejection::TooLong);
                }
                normalize_checkbox(&def.options, value)
            }
            FieldFormat::Number => {
                if value.chars().count() > max {
                    return Err(Rejection::TooLong);
                }
                normalize_number(value)
            }
            FieldFormat::Date => {
                if value.chars().count() > max {
                    return Err(Rejection::TooLong);
                }
                normalize_date(value)
            }
        }
    }
}

impl FieldSet {
    /// Indexes into the field's `options` of the options `raw` chooses: one
    /// for select and radio fields, any number for checkboxes.
    pub(crate) fn chosen_options(&self, field: &str, raw: &str) -> Result<Vec<usize>, Rejection> {
        let def = self.get(field).ok_or(Rejection::UnknownField)?;
        let value = raw.trim();
        if value.is_empty() {
            return Err(Rejection::Empty);
        }
        match def.format {
            FieldFormat::Select | FieldFormat::Radio => {
                let value = collapse_whitespace(value);
                option_index(&def.options, &value)
                    .or_else(|| option_index(&def.options, value.trim_end_matches(['.', '!', '?'])))
                    .map(|i| vec![i])
                    .ok_or(Rejection::NotAnOption)
            }
            FieldFormat::Checkbox => checkbox_selection(&def.options, value),
            _ => Err(Rejection::NotAnOption),
        }
    }
}

/// Joins the words of `s` with single spaces.
pub(crate) fn collapse_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Removes punctuation that usually ends the sentence around an email address
/// or phone number rather than belonging to it.
fn strip_trailing_punctuation(s: &str) -> &str {
    s.trim_end_matches([
        '.', ',', ';', ':', '!', '?', ')', ']', '}', '>', '"', '\'', '’', '”',
    ])
    .trim_end()
}

/// The region a phone number without country code is read in: an ISO 3166
/// alpha-2 code in any case; "UK" is taken as "GB".
pub(crate) fn region_id(region: Option<&str>) -> Option<RegionId> {
    let code = region?.trim().to_ascii_uppercase();
    let code = if code == "UK" { "GB".to_owned() } else { code };
    if code.len() != 2 {
        return None;
    }
    code.parse().ok()
}

fn normalize_email(value: &str, max: usize) -> Result<String, Rejection> {
    let mut value =
        strip_trailing_punctuation(value).trim_start_matches(['<', '(', '[', '"', '\'']);
    if value
        .get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("mailto:"))
    {
        value = &value[7..];
    }
    let email = value.to_lowercase();
    if email.chars().count() > max {
        return Err(Rejection::TooLong);
    }
    if !EMAIL.is_match(&email) {
        return Err(Rejection::InvalidEmail);
    }
    match email.split_once('@') {
        Some((local, _)) if local.len() <= 64 => Ok(email),
        _ => Err(Rejection::InvalidEmail),
    }
}

fn normalize_phone(
    value: &str,
    default_region: Option<&str>,
    max: usize,
) -> Result<String, Rejection> {
    if value.chars().count() > max {
        return Err(Rejection::TooLong);
    }
    let mut value = strip_trailing_punctuation(value);
    if value
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("tel:"))
    {
        value = value[4..].trim_start();
    }
    let value = match PHONE_EXTENSION.find(value) {
        Some(ext) if ext.start() > 0 => &value[..ext.start()],
        _ => value,
    };
    if !PHONE_CHARS.is_match(value) {
        return Err(Rejection::InvalidPhone);
    }
    let plus = value.starts_with('+');
    // "+44 (0)20 ..." writes the national trunk prefix next to the country code.
    let value = if plus {
        value.replace("(0)", "")
    } else {
        value.to_owned()
    };
    let mut digits: String = value.chars().filter(char::is_ascii_digit).collect();
    let international = if plus {
        true
    } else if let Some(rest) = digits.strip_prefix("00") {
        digits = rest.to_owned();
        true
    } else {
        false
    };
    if !(7..=15).contains(&digits.len()) {
        return Err(Rejection::InvalidPhone);
    }
    let parsed = if international {
        phonenumber::parse(None, format!("+{digits}"))
    } else {
        let region = region_id(default_region).ok_or(Rejection::InvalidPhone)?;
        phonenumber::parse(Some(region), &digits)
    };
    match parsed {
        Ok(number) if phonenumber::is_valid(&number) => {
            Ok(number.format().mode(Mode::E164).to_string())
        }
        _ => Err(Rejection::InvalidPhone),
    }
}

/// Index of the option equal to `value`, ignoring case and whitespace runs.
fn option_index(options: &[String], value: &str) -> Option<usize> {
    let wanted = collapse_whitespace(value).to_lowercase();
    if wanted.is_empty() {
        return None;
    }
    options
        .iter()
        .position(|o| collapse_whitespace(o).to_lowercase() == wanted)
}

fn normalize_checkbox(options: &[String], value: &str) -> Result<String, Rejection> {
    let chosen = checkbox_selection(options, value)?;
    let selected: Vec<&str> = chosen.iter().map(|&i| options[i].trim()).collect();
    Ok(selected.join(", "))
}

/// Indexes, in configured order, of the options a checkbox value lists.
fn checkbox_selection(options: &[String], value: &str) -> Result<Vec<usize>, Rejection> {
    let mut chosen = vec![false; options.len()];
    if let Some(i) = option_index(options, value) {
        chosen[i] = true;
    } else {
        for part in LIST_SEPARATOR.split(value) {
            let part = part.trim().trim_end_matches(['.', '!', '?']);
            let part = LEADING_AND.replace(part, "");
            if part.trim().is_empty() {
                continue;
            }
            if let Some(i) = option_index(options, &part) {
                chosen[i] = true;
                continue;
            }
            for item in AND_SEPARATOR.split(&part) {
                match option_index(options, item) {
                    Some(i) => chosen[i] = true,
                    None => return Err(Rejection::NotAnOption),
                }
            }
        }
    }
    let selected: Vec<usize> = (0..options.len()).filter(|&i| chosen[i]).collect();
    if selected.is_empty() {
        return Err(Rejection::Empty);
    }
    Ok(selected)
}

fn normalize_number(value: &str) -> Result<String, Rejection> {
    if !NUMBER.is_match(value) {
        return Err(Rejection::InvalidNumber);
    }
    let number: f64 = value
        .replace(',', "")
        .parse()
        .map_err(|_| Rejection::InvalidNumber)?;
    if !number.is_finite() {
        return Err(Rejection::InvalidNumber);
    }
    if number == 0.0 {
        return Ok("0".to_owned());
    }
    Ok(format!("{number}"))
}

fn month_number(name: &str) -> Option<u32> {
    let name = name.to_ascii_lowercase();
    let month = match name.as_str() {
        "january" | "jan" => 1,
        "february" | "feb" => 2,
        "march" | "mar" => 3,
        "april" | "apr" => 4,
        "may" => 5,
        "june" | "jun" => 6,
        "july" | "jul" => 7,
        "august" | "aug" => 8,
        "september" | "sep" | "sept" => 9,
        "october" | "oct" => 10,
        "november" | "nov" => 11,
        "december" | "dec" => 12,
        _ => return None,
    };
    Some(month)
}

fn capture_number(caps: &regex::Captures<'_>, i: usize) -> Option<u32> {
    caps.get(i)?.as_str().parse().ok()
}

fn ymd(year: Option<u32>, month: Option<u32>, day: Option<u32>) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(i32::try_from(year?).ok()?, month?, day?)
}

/// Reads the supported date spellings. Numeric dates are read day first; a
/// numeric date that is only valid month first (`12/25/2024`) is read that way.
fn parse_date(value: &str) -> Option<NaiveDate> {
    let value = collapse_whitespace(value);
    if let Some(c) = DATE_ISO.captures(&value) {
        return ymd(
            capture_number(&c, 1),
            capture_number(&c, 2),
            capture_number(&c, 3),
        );
    }
    if let Some(c) = DATE_NUMERIC_DAY_FIRST.captures(&value) {
        let (first, second, year) = (
            capture_number(&c, 1),
            capture_number(&c, 2),
            capture_number(&c, 3),
        );
        return ymd(year, second, first).or_else(|| ymd(year, first, second));
    }
    if let Some(c) = DATE_MONTH_NAME_FIRST.captures(&value) {
        let month = c.get(1).and_then(|m| month_number(m.as_str()));
        return ymd(capture_number(&c, 3), month, capture_number(&c, 2));
    }
    if let Some(c) = DATE_DAY_FIRST_MONTH_NAME.captures(&value) {
        let month = c.get(2).and_then(|m| month_number(m.as_str()));
        return ymd(capture_number(&c, 3), month, capture_number(&c, 1));
    }
    None
}

fn normalize_date(value: &str) -> Result<String, Rejection> {
    parse_date(value)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .ok_or(Rejection::InvalidDate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom_fields() -> Vec<FieldDef> {
        vec![
            FieldDef {
                options: vec!["Basic".into(), "Premium Plus".into(), "Enterprise".into()],
                ..FieldDef::new("plan", FieldFormat::Select)
            },
            FieldDef {
                options: vec!["Small".into(), "Large".into()],
                ..FieldDef::new("size", FieldFormat::Radio)
            },
            FieldDef {
                options: vec![
                    "Email".into(),
                    "SMS".into(),
                    "WhatsApp".into(),
                    "Rock and Roll".into(),
                ],
                ..FieldDef::new("channels", FieldFormat::Checkbox)
            },
            FieldDef::new("seats", FieldFormat::Number),
            FieldDef::new("birthday", FieldFormat::Date),
            FieldDef {
                validation: Some(r"[A-Z]{2}-\d{4}".into()),
                ..FieldDef::new("member_code", FieldFormat::Text)
            },
            FieldDef::new("notes", FieldFormat::Textarea),
            FieldDef {
                max_length: Some(5),
                ..FieldDef::new("short", FieldFormat::Text)
            },
            FieldDef::new("work_email", FieldFormat::Email),
        ]
    }

    fn set() -> FieldSet {
        FieldSet::new(custom_fields(), &[]).expect("valid field set")
    }

    #[test]
    fn builtins_are_listed_in_order_with_expected_formats() {
        let defs = builtin_definitions();
        let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, BUILTIN_FIELDS);
        let formats: Vec<FieldFormat> = defs.iter().map(|d| d.format).collect();
        assert_eq!(
            formats,
            vec![
                FieldFormat::Text,
                FieldFormat::Email,
                FieldFormat::Phone,
                FieldFormat::Text,
                FieldFormat::Text,
                FieldFormat::Text
            ]
        );
        assert!(defs.iter().all(|d| !d.required && d.ai_writable));
    }

    #[test]
    fn field_def_deserializes_with_defaults() {
        let def: FieldDef =
            serde_json::from_str(r#"{"name":"plan","format":"select","options":["A","B"]}"#)
                .expect("valid json");
        assert_eq!(def.ask_priority, 100);
        assert!(def.ai_writable);
        assert!(!def.required);
        assert_eq!(def.max_length, None);
        assert_eq!(def.effective_max_length(), 200);
        assert_eq!(def.label, "");
        let json = serde_json::to_value(FieldFormat::Textarea).expect("serializable");
        assert_eq!(json, serde_json::json!("textarea"));
    }

    #[test]
    fn default_max_lengths_per_format() {
        assert_eq!(
            FieldDef::new("a", FieldFormat::Text).effective_max_length(),
            200
        );
        assert_eq!(
            FieldDef::new("a", FieldFormat::Textarea).effective_max_length(),
            2000
        );
        assert_eq!(
            FieldDef::new("a", FieldFormat::Email).effective_max_length(),
            254
        );
        let capped = FieldDef {
            max_length: Some(7),
            ..FieldDef::new("a", FieldFormat::Text)
        };
        assert_eq!(capped.effective_max_length(), 7);
    }

    #[test]
    fn config_errors() {
        let cases: Vec<(Vec<FieldDef>, Vec<String>, FieldConfigError)> = vec![
            (
                vec![FieldDef::new("Plan", FieldFormat::Text)],
                vec![],
                FieldConfigError::InvalidName("Plan".into()),
            ),
            (
                vec![FieldDef::new("1plan", FieldFormat::Text)],
                vec![],
                FieldConfigError::InvalidName("1plan".into()),
            ),
            (
                vec![FieldDef::new("my-plan", FieldFormat::Text)],
                vec![],
                FieldConfigError::InvalidName("my-plan".into()),
            ),
            (
                vec![FieldDef::new("a".repeat(64), FieldFormat::Text)],
                vec![],
                FieldConfigError::InvalidName("a".repeat(64)),
            ),
            (
                vec![FieldDef::new("email", FieldFormat::Email)],
                vec![],
                FieldConfigError::BuiltinClash("email".into()),
            ),
            (
                vec![
                    FieldDef::new("plan", FieldFormat::Text),
                    FieldDef::new("plan", FieldFormat::Text),
                ],
                vec![],
                FieldConfigError::Duplicate("plan".into()),
            ),
            (
                vec![FieldDef::new("plan", FieldFormat::Select)],
                vec![],
                FieldConfigError::MissingOptions("plan".into()),
            ),
            (
                vec![FieldDef::new("plan", FieldFormat::Checkbox)],
                vec![],
                FieldConfigError::MissingOptions("plan".into()),
            ),
            (
                vec![FieldDef {
                    options: vec!["A".into(), "  ".into()],
                    ..FieldDef::new("plan", FieldFormat::Radio)
                }],
                vec![],
                FieldConfigError::BlankOption("plan".into()),
            ),
            (
                vec![FieldDef::new("plan", FieldFormat::Text)],
                vec!["budget".into()],
                FieldConfigError::UnknownRequired("budget".into()),
            ),
        ];
        for (custom, required, expected) in cases {
            assert_eq!(FieldSet::new(custom, &required).err(), Some(expected));
        }
    }

    #[test]
    fn invalid_validation_pattern_is_rejected() {
        let custom = vec![FieldDef {
            validation: Some("([a-z".into()),
            ..FieldDef::new("code", FieldFormat::Text)
        }];
        match FieldSet::new(custom, &[]) {
            Err(FieldConfigError::InvalidValidation { field, .. }) => assert_eq!(field, "code"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn custom_field_limit() {
        let make = |n: usize| -> Vec<FieldDef> {
            (0..n)
                .map(|i| FieldDef::new(format!("field_{i}"), FieldFormat::Text))
                .collect()
        };
        assert!(FieldSet::new(make(50), &[]).is_ok());
        assert_eq!(
            FieldSet::new(make(51), &[]).err(),
            Some(FieldConfigError::TooManyFields { count: 51, max: 50 })
        );
    }

    #[test]
    fn get_iter_and_required_flags() {
        let set = FieldSet::new(custom_fields(), &["email".into(), "plan".into()]).expect("valid");
        assert_eq!(set.iter().count(), 6 + custom_fields().len());
        assert_eq!(set.iter().nth(6).map(|d| d.name.as_str()), Some("plan"));
        assert!(set.get("email").is_some_and(|d| d.required));
        assert!(set.get("plan").is_some_and(|d| d.required));
        assert!(set.get("phone").is_some_and(|d| !d.required));
        assert!(set.get("nope").is_none());
    }

    #[test]
    fn required_missing_sorted_by_priority_then_name() {
        let custom = vec![
            FieldDef {
                ask_priority: 5,
                ..FieldDef::new("zeta", FieldFormat::Text)
            },
            FieldDef {
                ask_priority: 5,
                ..FieldDef::new("alpha", FieldFormat::Text)
            },
            FieldDef {
                required: true,
                ..FieldDef::new("budget", FieldFormat::Number)
            },
        ];
        let required = ["email", "name", "zeta", "alpha", "phone"].map(String::from);
        let set = FieldSet::new(custom, &required).expect("valid");
        let known = |name: &str| name == "phone";
        let missing: Vec<&str> = set
            .required_missing(&known)
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        assert_eq!(missing, vec!["alpha", "zeta", "name", "email", "budget"]);
        let all_known = |_: &str| true;
        assert!(set.required_missing(&all_known).is_empty());
    }

    #[test]
    fn rejection_codes_are_stable() {
        let all = [
            (Rejection::UnknownField, "unknown_field"),
            (Rejection::Empty, "empty"),
            (Rejection::TooLong, "too_long"),
            (Rejection::InvalidEmail, "invalid_email"),
            (Rejection::InvalidPhone, "invalid_phone"),
            (Rejection::NotAnOption, "not_an_option"),
            (Rejection::PatternMismatch, "pattern_mismatch"),
            (Rejection::InvalidNumber, "invalid_number"),
            (Rejection::InvalidDate, "invalid_date"),
        ];
        for (rejection, code) in all {
            assert_eq!(rejection.as_str(), code);
        }
    }

    /// Field, raw value, default region, expected result.
    type Case<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Result<&'a str, Rejection>,
    );

    fn check(cases: &[Case<'_>]) {
        let set = set();
        for (field, raw, region, expected) in cases {
            let got = set.normalize(field, raw, *region);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                *expected,
                "{field}: {raw:?} ({region:?})"
            );
        }
    }

    #[test]
    fn normalize_generic() {
        check(&[
            ("unknown", "x", None, Err(Rejection::UnknownField)),
            ("name", "   ", None, Err(Rejection::Empty)),
            ("email", "", None, Err(Rejection::Empty)),
            ("plan", "\t", None, Err(Rejection::Empty)),
        ]);
    }

    #[test]
    fn normalize_email() {
        check(&[
            (
                "email",
                "John.Doe@Example.COM",
                None,
                Ok("john.doe@example.com"),
            ),
            (
                "email",
                "  jane+shop@mail.example.co.uk. ",
                None,
                Ok("jane+shop@mail.example.co.uk"),
            ),
            (
                "email",
                "ana@sub.domain.com.br!",
                None,
                Ok("ana@sub.domain.com.br"),
            ),
            ("email", "(bob@example.org)", None, Ok("bob@example.org")),
            ("email", "<bob@example.org>,", None, Ok("bob@example.org")),
            (
                "email",
                "mailto:Bob@Example.org",
                None,
                Ok("bob@example.org"),
            ),
            (
                "work_email",
                "o'neil@example.ie",
                None,
                Ok("o'neil@example.ie"),
            ),
            (
                "email",
                "john doe@example.com",
                None,
                Err(Rejection::InvalidEmail),
            ),
            ("email", "john@example", None, Err(Rejection::InvalidEmail)),
            (
                "email",
                "john@@example.com",
                None,
                Err(Rejection::InvalidEmail),
            ),
            ("email", "@example.com", None, Err(Rejection::InvalidEmail)),
            (
                "email",
                "john.@example.com",
                None,
                Err(Rejection::InvalidEmail),
            ),
            (
                "email",
                "john@-example.com",
                None,
                Err(Rejection::InvalidEmail),
            ),
            (
                "email",
                "john@example.c",
                None,
                Err(Rejection::InvalidEmail),
            ),
            ("email", "not an email", None, Err(Rejection::InvalidEmail)),
        ]);
        let long_local = format!("{}@example.com", "a".repeat(65));
        let too_long = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
        let set = set();
        assert_eq!(
            set.normalize("email", &long_local, None),
            Err(Rejection::InvalidEmail)
        );
        assert_eq!(
            set.normalize("email", &too_long, None),
            Err(Rejection::TooLong)
        );
    }

    #[test]
    fn normalize_phone_international_formats() {
        check(&[
            ("phone", "+1 415 555 0100", None, Ok("+14155550100")),
            ("phone", "+1 (415) 555-0100.", None, Ok("+14155550100")),
            ("phone", "+44 20 7946 0958", None, Ok("+442079460958")),
            ("phone", "+44 (0)20 7946 0958", None, Ok("+442079460958")),
            ("phone", "+55 11 91234-5678", None, Ok("+5511912345678")),
            ("phone", "+34 612 34 56 78", None, Ok("+34612345678")),
            ("phone", "+52 55 1234 5678", None, Ok("+525512345678")),
            ("phone", "+66 81 234 5678", None, Ok("+66812345678")),
            ("phone", "+81 90-1234-5678", None, Ok("+819012345678")),
            ("phone", "+62 812-3456-7890", None, Ok("+6281234567890")),
            ("phone", "+49 30 123456", None, Ok("+4930123456")),
            ("phone", "+91 98765 43210", None, Ok("+919876543210")),
            ("phone", "+61 412 345 678", None, Ok("+61412345678")),
            (
                "phone",
                "0044 20 7946 0958",
                Some("US"),
                Ok("+442079460958"),
            ),
            ("phone", "0044 20 7946 0958", None, Ok("+442079460958")),
            ("phone", "tel:+14155550100", None, Ok("+14155550100")),
            ("phone", "+1 415 555 0100 ext. 12", None, Ok("+14155550100")),
        ]);
    }

    #[test]
    fn normalize_phone_national_formats_use_region() {
        check(&[
            ("phone", "(415) 555-0100", Some("US"), Ok("+14155550100")),
            ("phone", "415.555.0100", Some("us"), Ok("+14155550100")),
            ("phone", "020 7946 0958", Some("GB"), Ok("+442079460958")),
            ("phone", "020 7946 0958", Some("UK"), Ok("+442079460958")),
            ("phone", "(11) 91234-5678", Some("BR"), Ok("+5511912345678")),
            ("phone", "612 34 56 78", Some("ES"), Ok("+34612345678")),
            ("phone", "55 1234 5678", Some("MX"), Ok("+525512345678")),
            ("phone", "081-234-5678", Some("TH"), Ok("+66812345678")),
            ("phone", "090-1234-5678", Some("JP"), Ok("+819012345678")),
            ("phone", "0812-3456-7890", Some("ID"), Ok("+6281234567890")),
            ("phone", "030 123456", Some("DE"), Ok("+4930123456")),
            ("phone", "030/123456", Some("DE"), Ok("+4930123456")),
            ("phone", "98765 43210", Some("IN"), Ok("+919876543210")),
            ("phone", "0412 345 678", Some("AU"), Ok("+61412345678")),
        ]);
    }

    #[test]
    fn normalize_phone_rejections() {
        check(&[
            (
                "phone",
                "(415) 555-0100",
                None,
                Err(Rejection::InvalidPhone),
            ),
            (
                "phone",
                "(415) 555-0100",
                Some("ZZ"),
                Err(Rejection::InvalidPhone),
            ),
            (
                "phone",
                "(415) 555-0100",
                Some("USA"),
                Err(Rejection::InvalidPhone),
            ),
            (
                "phone",
                "+1 555 555 5555",
                None,
                Err(Rejection::InvalidPhone),
            ),
            ("phone", "12345", Some("US"), Err(Rejection::InvalidPhone)),
            (
                "phone",
                "1234567890",
                Some("US"),
                Err(Rejection::InvalidPhone),
            ),
            (
                "phone",
                "+1 800 FLOWERS",
                None,
                Err(Rejection::InvalidPhone),
            ),
            ("phone", "call me", Some("US"), Err(Rejection::InvalidPhone)),
            (
                "phone",
                "+1234567890123456",
                None,
                Err(Rejection::InvalidPhone),
            ),
            (
                "phone",
                "4242 4242 4242 4242",
                Some("US"),
                Err(Rejection::InvalidPhone),
            ),
            (
                "phone",
                "2024-05-01",
                Some("US"),
                Err(Rejection::InvalidPhone),
            ),
            (
                "phone",
                "+44 7700 900123",
                None,
                Err(Rejection::InvalidPhone),
            ),
        ]);
        let long = "1".repeat(65);
        assert_eq!(
            set().normalize("phone", &long, Some("US")),
            Err(Rejection::TooLong)
        );
    }

    #[test]
    fn normalize_select_and_radio() {
        check(&[
            ("plan", "premium plus", None, Ok("Premium Plus")),
            ("plan", "  PREMIUM   plus ", None, Ok("Premium Plus")),
            ("plan", "Basic.", None, Ok("Basic")),
            ("plan", "Gold", None, Err(Rejection::NotAnOption)),
            ("plan", "Premium", None, Err(Rejection::NotAnOption)),
            ("size", "large", None, Ok("Large")),
            ("size", "medium", None, Err(Rejection::NotAnOption)),
        ]);
    }

    #[test]
    fn normalize_checkbox() {
        check(&[
            ("channels", "sms", None, Ok("SMS")),
            ("channels", "whatsapp, email", None, Ok("Email, WhatsApp")),
            (
                "channels",
                "WhatsApp; SMS; email",
                None,
                Ok("Email, SMS, WhatsApp"),
            ),
            ("channels", "SMS and Email", None, Ok("Email, SMS")),
            (
                "channels",
                "sms, whatsapp, and email",
                None,
                Ok("Email, SMS, WhatsApp"),
            ),
            ("channels", "sms, sms", None, Ok("SMS")),
            ("channels", "rock and roll", None, Ok("Rock and Roll")),
            (
                "channels",
                "Rock and Roll, SMS",
                None,
                Ok("SMS, Rock and Roll"),
            ),
            ("channels", "sms and fax", None, Err(Rejection::NotAnOption)),
            ("channels", "pigeon", None, Err(Rejection::NotAnOption)),
            ("channels", ", ;", None, Err(Rejection::Empty)),
        ]);
    }

    #[test]
    fn normalize_number() {
        check(&[
            ("seats", "12", None, Ok("12")),
            ("seats", "1,200", None, Ok("1200")),
            ("seats", "1,234,567.5", None, Ok("1234567.5")),
            ("seats", "3.0", None, Ok("3")),
            ("seats", "-2.50", None, Ok("-2.5")),
            ("seats", "+7", None, Ok("7")),
            ("seats", "-0", None, Ok("0")),
            ("seats", ".5", None, Ok("0.5")),
            ("seats", "12,5", None, Err(Rejection::InvalidNumber)),
            ("seats", "1,20", None, Err(Rejection::InvalidNumber)),
            ("seats", "twelve", None, Err(Rejection::InvalidNumber)),
            ("seats", "12 seats", None, Err(Rejection::InvalidNumber)),
            ("seats", "NaN", None, Err(Rejection::InvalidNumber)),
            ("seats", "inf", None, Err(Rejection::InvalidNumber)),
        ]);
    }

    #[test]
    fn normalize_date() {
        check(&[
            ("birthday", "2024-03-05", None, Ok("2024-03-05")),
            ("birthday", "2024-3-5", None, Ok("2024-03-05")),
            ("birthday", "05/03/2024", None, Ok("2024-03-05")),
            ("birthday", "5.3.2024", None, Ok("2024-03-05")),
            ("birthday", "12/25/2024", None, Ok("2024-12-25")),
            ("birthday", "March 5, 2024", None, Ok("2024-03-05")),
            ("birthday", "mar 5th 2024", None, Ok("2024-03-05")),
            ("birthday", "Sept 30, 1999", None, Ok("1999-09-30")),
            ("birthday", "5 March 2024", None, Ok("2024-03-05")),
            ("birthday", "5th of March, 2024", None, Ok("2024-03-05")),
            ("birthday", "29 February 2024", None, Ok("2024-02-29")),
            (
                "birthday",
                "29 February 2023",
                None,
                Err(Rejection::InvalidDate),
            ),
            ("birthday", "2024-13-01", None, Err(Rejection::InvalidDate)),
            ("birthday", "32/01/2024", None, Err(Rejection::InvalidDate)),
            (
                "birthday",
                "Smarch 5, 2024",
                None,
                Err(Rejection::InvalidDate),
            ),
            ("birthday", "tomorrow", None, Err(Rejection::InvalidDate)),
            ("birthday", "05/03/24", None, Err(Rejection::InvalidDate)),
        ]);
    }

    #[test]
    fn normalize_text_and_textarea() {
        check(&[
            (
                "location",
                "  São   Paulo\n Brazil ",
                None,
                Ok("São Paulo Brazil"),
            ),
            ("member_code", "AB-1234", None, Ok("AB-1234")),
            (
                "member_code",
                "xAB-1234",
                None,
                Err(Rejection::PatternMismatch),
            ),
            (
                "member_code",
                "AB-1234x",
                None,
                Err(Rejection::PatternMismatch),
            ),
            (
                "member_code",
                "ab-1234",
                None,
                Err(Rejection::PatternMismatch),
            ),
            ("short", "abcde", None, Ok("abcde")),
            ("short", "abcdef", None, Err(Rejection::TooLong)),
            (
                "notes",
                "line one\n\nline two",
                None,
                Ok("line one line two"),
            ),
        ]);
        let set = set();
        assert_eq!(
            set.normalize("location", &"x".repeat(201), None),
            Err(Rejection::TooLong)
        );
        assert_eq!(
            set.normalize("location", &"x".repeat(200), None)
                .map(|v| v.len()),
            Ok(200)
        );
        assert_eq!(
            set.normalize("notes", &"x".repeat(2000), None)
                .map(|v| v.len()),
            Ok(2000)
        );
        assert_eq!(
            set.normalize("notes", &"x".repeat(2001), None),
            Err(Rejection::TooLong)
        );
    }

    #[test]
    fn normalize_name() {
        check(&[
            (
                "name",
                "Maria José da Silva",
                None,
                Ok("Maria José da Silva"),
            ),
            ("name", " mike ", None, Ok("mike")),
            ("name", "O'Brien", None, Ok("O'Brien")),
            ("name", "R2D2", None, Err(Rejection::PatternMismatch)),
            (
                "name",
                "mike@example.com",
                None,
                Err(Rejection::PatternMismatch),
            ),
        ]);
    }

    #[test]
    fn multibyte_values_do_not_panic() {
        let set = set();
        for raw in [
            "ñññ@example.com",
            "téléphone",
            "日本語のテキスト",
            "ñ",
            "📞+1 415 555 0100",
        ] {
            for field in [
                "email", "phone", "name", "plan", "channels", "seats", "birthday",
            ] {
                let _ = set.normalize(field, raw, Some("US"));
            }
        }
        assert_eq!(
            set.normalize("email", "ñññ@example.com", None),
            Err(Rejection::InvalidEmail)
        );
    }

    #[test]
    fn phone_parsing_never_panics_on_digit_strings() {
        let set = set();
        for region in ["US", "GB", "BR", "TH", "DE", "JP", "IN", "ID", "CH"] {
            for len in 7..=15 {
                for seed in ["0", "1", "00", "9", "003", "0800", "123"] {
                    let digits: String = seed
                        .chars()
                        .chain("3141592653589793".chars())
                        .take(len)
                        .collect();
                    let _ = set.normalize("phone", &digits, Some(region));
                    let _ = set.normalize("phone", &format!("+{digits}"), Some(region));
                }
            }
        }
    }
}
