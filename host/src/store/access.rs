//! Who may call the API: the tokens an admin created, kept only as hashes.

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::records::AuditEntry;
use crate::model::Millis;

/// An API token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// `tok_` and 16 hex digits; how the token is listed, revoked and named in the audit log.
    pub id: String,
    /// What the person or integration it was made for calls it.
    pub name: String,
    /// `admin`, `manager`, `operator`, `analyst` or `ingest`.
    pub role: String,
    /// Permissions beyond the role's, granted explicitly (`delete_journeys`, `edit_contacts`).
    #[serde(default)]
    pub grants: Vec<String>,
    /// SHA-256 of the token, hex.
    pub hash: String,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    /// The token that created it, or `start-up` for the first admin token.
    pub created_by: String,
    /// After this the token is refused.
    #[serde(default, with = "crate::model::timestamp_json::option")]
    pub expires_at: Option<Millis>,
    /// When it was revoked; from then on it is refused.
    #[serde(default, with = "crate::model::timestamp_json::option")]
    pub revoked_at: Option<Millis>,
}

/// How the workspace governs its content, set by an admin.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workspace {
    /// A template version must be approved by a manager (not its author) before a journey
    /// that sends it can be published.
    #[serde(default)]
    pub content_approval: bool,
    /// The share of contacts (0 to 50 %) no marketing message reaches in any journey: the
    /// global control group (see `messaging::control`).
    #[serde(default)]
    pub control_group_percent: f64,
}

/// The tokens' and the workspace settings' durable part of the store.
pub trait AccessStore {
    /// Every token ever created, revoked ones included, by id.
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Create or replace a token record (revocation replaces it), and record the change.
    fn put_token(&self, record: &TokenRecord, audit: AuditEntry) -> Result<(), StoreError>;
    /// The workspace settings; the defaults until an admin sets them.
    fn workspace(&self) -> Result<Workspace, StoreError>;
    /// Replace the workspace settings, and record the change.
    fn put_workspace(&self, workspace: &Workspace, audit: AuditEntry) -> Result<(), StoreError>;
    /// The lifecycle stage rules as an operator set them (see `crate::lifecycle`), if ever.
    fn lifecycle_rules(&self) -> Result<Option<serde_json::Value>, StoreError>;
    /// Replace the lifecycle stage rules, start `sweep` (everyone looked at again by them) and
    /// record the change, in one write. From then on, while a rule reads what a contact update
    /// changes (a `condition`), every contact update queues a look at the contact.
    fn put_lifecycle_rules(
        &self,
        rules: &serde_json::Value,
        sweep: Option<&super::SweepRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
    /// Record a change made of many writes of its own (an import's rows): after them.
    fn record_audit(&self, audit: AuditEntry) -> Result<(), StoreError>;
}
