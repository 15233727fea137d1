//! The workspace registry: every tenant's settings, profile fields, ask
//! policy and keyword triggers, resolved once at start-up. The event
//! handlers, the model stage and the summary sweeper all look workspaces up
//! here, so a workspace means the same thing everywhere.

use std::collections::HashMap;

use crate::config::{AsksSettings, WorkspaceSettings, WorkspacesSettings};
use crate::decide::policy::AskPolicy;
use crate::decide::triggers::Triggers;
use crate::fields::FieldSet;
use crate::store::chat::{ModelHandoff, WorkspaceDefaults};

/// Per-workspace settings resolved once at start-up.
pub struct Workspaces {
    settings: WorkspacesSettings,
    field_sets: HashMap<String, FieldSet>,
    default_fields: FieldSet,
    policy: AskPolicy,
    triggers: Triggers,
    model: ModelHandoff,
}

/// A configured workspace: its settings and fields.
pub struct Workspace<'a> {
    /// Switches and defaults.
    pub settings: &'a WorkspaceSettings,
    /// Profile fields.
    pub fields: &'a FieldSet,
    /// Ask limits.
    pub policy: &'a AskPolicy,
    /// Natural moments to ask.
    pub triggers: &'a Triggers,
}

impl<'a> Workspace<'a> {
    /// What a row for this workspace starts with when an event creates it.
    pub fn defaults(&self) -> WorkspaceDefaults<'a> {
        WorkspaceDefaults {
            enrichment: self.settings.enrichment,
            default_region: self.settings.default_region.as_deref(),
        }
    }
}

impl Workspaces {
    /// Resolves the field sets of every configured workspace.
    pub fn new(
        settings: WorkspacesSettings,
        asks: &AsksSettings,
        model: ModelHandoff,
    ) -> Result<Workspaces, crate::config::ConfigError> {
        let default_fields = settings.default.field_set()?;
        let field_sets = settings
            .list
            .iter()
            .map(|(id, workspace)| Ok((id.clone(), workspace.field_set()?)))
            .collect::<Result<_, crate::config::ConfigError>>()?;
        let triggers = Triggers::new(&asks.triggers, &asks.lexicon)
            .map_err(|e| crate::config::ConfigError::Invalid(format!("asks.triggers: {e}")))?;
        Ok(Workspaces {
            settings,
            field_sets,
            default_fields,
            policy: asks.policy.clone(),
            triggers,
            model,
        })
    }

    /// The workspace, or `None` when workspaces are restricted and it is not listed.
    pub fn get(&self, workspace_id: &str) -> Option<Workspace<'_>> {
        let settings = self.settings.for_workspace(workspace_id)?;
        let fields = self
            .field_sets
            .get(workspace_id)
            .unwrap_or(&self.default_fields);
        Some(Workspace {
            settings,
            fields,
            policy: &self.policy,
            triggers: &self.triggers,
        })
    }

    /// Runs the decision core once on sample messages with every configured
    /// field set, so its one-time costs are paid before the first event.
    /// Whether stored customer messages are handed to the model stage.
    pub fn model_handoff(&self) -> ModelHandoff {
        self.model
    }

    pub fn prime_decision_core(&self) {
        for fields in std::iter::once(&self.default_fields).chain(self.field_sets.values()) {
            crate::decide::priming::prime(fields, &self.policy, &self.triggers);
        }
    }
}
