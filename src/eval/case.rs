//! The eval case format (docs/contract.md §4) and its loader. Cases are the product's
//! expected behaviour written down as conversations, so they are parsed
//! strictly: an unknown key, an expectation on a bot turn or a field the
//! case's workspace does not configure is a mistake in the case, reported
//! with the file and line it is on rather than silently not judged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::decide::policy::Source;
use crate::event::Sender;
use crate::fields::{FieldDef, FieldSet};

/// One eval case: a conversation and what the enricher should do on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique id, used in reports.
    pub id: String,
    /// Tags the scorecard is broken down by.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The workspace's configuration; the default workspace when absent.
    #[serde(default)]
    pub workspace: Option<CaseWorkspace>,
    /// Field values known before the conversation starts.
    #[serde(default)]
    pub profile: BTreeMap<String, String>,
    /// Where the `profile` values came from; the runner's default (`api`)
    /// when absent. `customer` means stated in an earlier conversation, so
    /// the customer may correct them.
    #[serde(default)]
    pub profile_source: Option<Source>,
    /// The conversation, in order.
    pub turns: Vec<CaseTurn>,
}

/// The workspace a case runs in.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseWorkspace {
    /// Custom fields besides the built-in ones.
    #[serde(default)]
    pub fields: Vec<FieldDef>,
    /// Required fields; the default workspace's when absent.
    #[serde(default)]
    pub required: Option<Vec<String>>,
    /// Region for phone numbers without a country code.
    #[serde(default)]
    pub default_region: Option<String>,
}

/// One message of a case's conversation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseTurn {
    /// Who wrote it.
    pub sender: Sender,
    /// The message.
    pub text: String,
    /// What must happen on this (customer) turn; not judged when absent.
    #[serde(default)]
    pub expect: Option<Expect>,
}

/// The expectations of one customer turn. Every key is optional and an
/// absent key is not judged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// Values (normalised) that must be newly recorded on this turn.
    #[serde(default)]
    pub facts: Option<BTreeMap<String, String>>,
    /// Fields that must not be recorded on this turn.
    #[serde(default)]
    pub no_facts: Vec<String>,
    /// `None`: the ask is not judged. `Some(None)`: the turn must not ask.
    /// `Some(Some(..))`: the turn must ask that field (or one of those).
    #[serde(default, deserialize_with = "present")]
    pub ask: Option<Option<AskExpectation>>,
}

/// The field(s) an ask must target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum AskExpectation {
    /// Exactly this field.
    One(String),
    /// Any one of these fields.
    AnyOf(Vec<String>),
}

impl AskExpectation {
    /// Whether asking `field` meets the expectation.
    pub fn accepts(&self, field: &str) -> bool {
        match self {
            AskExpectation::One(one) => one == field,
            AskExpectation::AnyOf(any) => any.iter().any(|f| f == field),
        }
    }

    /// The fields named.
    pub fn fields(&self) -> Vec<&str> {
        match self {
            AskExpectation::One(one) => vec![one.as_str()],
            AskExpectation::AnyOf(any) => any.iter().map(String::as_str).collect(),
        }
    }
}

impl fmt::Display for AskExpectation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AskExpectation::One(one) => write!(f, "ask {one}"),
            AskExpectation::AnyOf(any) => write!(f, "ask one of {}", any.join("|")),
        }
    }
}

/// Distinguishes a key given as `null` (`Some(None)`) from an absent key
/// (`None`, through `#[serde(default)]`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Required fields of the default workspace (docs/contract.md §1.1).
pub const DEFAULT_REQUIRED: [&str; 2] = ["name", "email"];

impl Case {
    /// The case's field set: its custom fields, and its required fields or
    /// `default_required`.
    pub fn field_set(
        &self,
        default_required: &[String],
    ) -> Result<FieldSet, crate::fields::FieldConfigError> {
        let workspace = self.workspace.clone().unwrap_or_default();
        let required = workspace
            .required
            .unwrap_or_else(|| default_required.to_vec());
        FieldSet::new(workspace.fields, &required)
    }

    /// The case's phone region, if it sets one.
    pub fn default_region(&self) -> Option<&str> {
        self.workspace
            .as_ref()
            .and_then(|w| w.default_region.as_deref())
    }

    /// Checks what serde cannot: expectations only on customer turns, and
    /// only naming fields the case's workspace configures.
    fn check(&self) -> Result<(), String> {
        if self.id.trim().is_empty() {
            return Err("case id is empty".into());
        }
        if self.turns.is_empty() {
            return Err(format!("case {} has no turns", self.id));
        }
        let required: Vec<String> = DEFAULT_REQUIRED.iter().map(|s| s.to_string()).collect();
        let fields = self
            .field_set(&required)
            .map_err(|e| format!("case {}: workspace fields: {e}", self.id))?;
        for field in self.profile.keys() {
            if fields.get(field).is_none() {
                return Err(format!(
                    "case {}: profile field {field:?} is not configured",
                    self.id
                ));
            }
        }
        for (index, turn) in self.turns.iter().enumerate() {
            let Some(expect) = &turn.expect else {
                continue;
            };
            if turn.sender != Sender::Customer {
                return Err(format!(
                    "case {} turn {index}: expectations belong on customer turns only",
                    self.id
                ));
            }
            let mut named: BTreeSet<&str> = BTreeSet::new();
            named.extend(
                expect
                    .facts
                    .iter()
                    .flat_map(|f| f.keys().map(String::as_str)),
            );
            named.extend(expect.no_facts.iter().map(String::as_str));
            if let Some(Some(ask)) = &expect.ask {
                named.extend(ask.fields());
                if ask.fields().is_empty() {
                    return Err(format!(
                        "case {} turn {index}: an ask list needs at least one field",
                        self.id
                    ));
                }
            }
            if let Some(field) = named.into_iter().find(|f| fields.get(f).is_none()) {
                return Err(format!(
                    "case {} turn {index}: field {field:?} is not configured in the case's workspace",
                    self.id
                ));
            }
        }
        Ok(())
    }
}

/// Why cases could not be loaded; always names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum CaseError {
    /// A path could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a valid case.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// No case files were found.
    #[error("no *.jsonl case files under {0}")]
    Empty(String),
}

/// A case and where it was read from.
#[derive(Debug, Clone)]
pub struct LoadedCase {
    /// The case.
    pub case: Case,
    /// Its file.
    pub path: PathBuf,
    /// Its 1-based line.
    pub line: usize,
}

/// Loads every case from `paths`: files, or directories searched
/// recursively for `*.jsonl`, in path order. Blank lines are skipped; ids
/// must be unique over everything loaded.
pub fn load_cases(paths: &[PathBuf]) -> Result<Vec<LoadedCase>, CaseError> {
    let mut files = Vec::new();
    for path in paths {
        collect_files(path, &mut files)?;
    }
    if files.is_empty() {
        let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        return Err(CaseError::Empty(shown.join(", ")));
    }
    let mut cases = Vec::new();
    let mut seen: BTreeMap<String, (PathBuf, usize)> = BTreeMap::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| CaseError::Io {
            path: file.clone(),
            source,
        })?;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let invalid = |message: String| CaseError::Invalid {
                path: file.clone(),
                line,
                message,
            };
            let case: Case = serde_json::from_str(raw).map_err(|e| invalid(e.to_string()))?;
            case.check().map_err(invalid)?;
            if let Some((first_path, first_line)) = seen.get(&case.id) {
                return Err(invalid(format!(
                    "duplicate case id {:?} (first at {}:{first_line})",
                    case.id,
                    first_path.display()
                )));
            }
            seen.insert(case.id.clone(), (file.clone(), line));
            cases.push(LoadedCase {
                case,
                path: file.clone(),
                line,
            });
        }
    }
    Ok(cases)
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>) -> Result<(), CaseError> {
    let io = |source| CaseError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = std::fs::metadata(path).map_err(io)?;
    if metadata.is_file() {
        files.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(io)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, files)?;
        } else if entry.extension().is_some_and(|ext| ext == "jsonl") {
            files.push(entry);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Case {
        serde_json::from_str(line).expect("case parses")
    }

    #[test]
    fn absent_null_field_and_list_asks_differ() {
        let case = parse(
            r#"{"id":"a","tags":["t"],"turns":[
                {"sender":"customer","text":"hi","expect":{"no_facts":["name"]}},
                {"sender":"customer","text":"hi","expect":{"ask":null}},
                {"sender":"customer","text":"hi","expect":{"ask":"email"}},
                {"sender":"customer","text":"hi","expect":{"ask":["name","phone"]}},
                {"sender":"bot","text":"hello"}]}"#,
        );
        let asks: Vec<Option<Option<AskExpectation>>> = case
            .turns
            .iter()
            .map(|t| t.expect.as_ref().and_then(|e| e.ask.clone()))
            .collect();
        assert_eq!(asks[0], None);
        assert_eq!(asks[1], Some(None));
        assert_eq!(asks[2], Some(Some(AskExpectation::One("email".into()))));
        assert_eq!(
            asks[3],
            Some(Some(AskExpectation::AnyOf(vec![
                "name".into(),
                "phone".into()
            ])))
        );
        assert!(case.turns[4].expect.is_none());
        assert!(case.check().is_ok());
    }

    #[test]
    fn workspace_profile_and_facts_parse() {
        let case = parse(
            r#"{"id":"volunteered-name-01","tags":["volunteered","name"],
                "workspace":{"fields":[{"name":"company_size","format":"select",
                    "options":["1-10","11-50","51-200","200+"]}],"required":["name","email"],
                    "default_region":"GB"},
                "profile":{"phone":"+14155550100"},
                "turns":[{"sender":"customer","text":"Hi, Mike here.",
                          "expect":{"facts":{"name":"Mike"},"ask":"email"}}]}"#,
        );
        assert_eq!(case.default_region(), Some("GB"));
        assert_eq!(case.profile["phone"], "+14155550100");
        let fields = case.field_set(&[]).expect("fields");
        assert!(fields.get("company_size").is_some());
        assert!(fields.get("email").is_some_and(|f| f.required));
        let expect = case.turns[0].expect.as_ref().expect("expect");
        assert_eq!(
            expect.facts.as_ref().map(|f| f["name"].as_str()),
            Some("Mike")
        );
    }

    #[test]
    fn mistakes_in_cases_are_errors_naming_file_and_line() {
        let dir = std::env::temp_dir().join(format!("enricher-cases-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("nested")).expect("dir");
        let good = r#"{"id":"ok","tags":[],"turns":[{"sender":"customer","text":"hi"}]}"#;
        std::fs::write(dir.join("a.jsonl"), format!("{good}\n\n")).expect("write");
        std::fs::write(dir.join("notes.txt"), "not a case").expect("write");
        let loaded = load_cases(std::slice::from_ref(&dir)).expect("loads");
        assert_eq!(loaded.len(), 1);

        let bad = [
            r#"{"id":"x","turns":[{"sender":"customer","text":"hi","expect":{"asks":null}}]}"#,
            r#"{"id":"x","turns":[{"sender":"bot","text":"hi","expect":{"ask":null}}]}"#,
            r#"{"id":"x","turns":[{"sender":"customer","text":"hi","expect":{"ask":"vip"}}]}"#,
            r#"{"id":"ok","turns":[{"sender":"customer","text":"hi"}]}"#,
            r#"{"id":"x","turns":[{"sender":"robot","text":"hi"}]}"#,
        ];
        for line in bad {
            let first = good.replace("\"ok\"", "\"ok2\"");
            std::fs::write(dir.join("nested/b.jsonl"), format!("{first}\n{line}\n"))
                .expect("write");
            let error = load_cases(std::slice::from_ref(&dir)).expect_err(line);
            let message = error.to_string();
            assert!(message.contains("b.jsonl:2:"), "{message}");
        }
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
