//! `enricher schema` and `enricher prompts check`: let operators see the tool
//! schema the model receives and check prompt templates before a deploy.

use std::path::Path;

use crate::config::Settings;
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
