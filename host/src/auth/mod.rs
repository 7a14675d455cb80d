//! Who may do what. Every API route names the [`Permission`] it needs; a token carries one
//! [`Role`] and perhaps explicit [`Grant`]s; [`Principal::may`] decides. Roles follow the
//! product's people (DOMAIN §6): the admin runs the server, managers own journeys and content,
//! operators edit and run them, analysts read results with contact data masked, and
//! integrations only send data in.

mod mask;
mod tokens;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use mask::{mask_json, mask_text};

/// Who the audit log names for what the server makes from its own files at start-up
/// (example journeys, channels, templates).
pub const STARTUP_ACTOR: &str = "start-up";
pub use tokens::{NewToken, TokenError, Tokens};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything: plugins, channels, secrets, tokens.
    Admin,
    /// Journeys, templates, approving content, and all data unmasked.
    Manager,
    /// Edit content, run and pause journeys, simulate.
    Operator,
    /// Stats and reports; contact data masked.
    Analyst,
    /// Only sending contacts and events in (`/v1/contacts`, `/v1/events`, Segment).
    Ingest,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Manager,
        Role::Operator,
        Role::Analyst,
        Role::Ingest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::Operator => "operator",
            Role::Analyst => "analyst",
            Role::Ingest => "ingest",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A permission no role but admin has, given to one token explicitly (least privilege).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// Archive journeys.
    DeleteJourneys,
    /// Create and change contacts' data.
    EditContacts,
    /// Erase contacts (the right to erasure).
    DeleteContacts,
}

impl Grant {
    pub const ALL: [Grant; 3] = [
        Grant::DeleteJourneys,
        Grant::EditContacts,
        Grant::DeleteContacts,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Grant::DeleteJourneys => "delete_journeys",
            Grant::EditContacts => "edit_contacts",
            Grant::DeleteContacts => "delete_contacts",
        }
    }

    pub fn parse(name: &str) -> Option<Grant> {
        Grant::ALL.into_iter().find(|grant| grant.as_str() == name)
    }
}

/// What a route needs of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Any valid token (`GET /v1/whoami`).
    Authenticated,
    /// Journeys, their versions and stats, channels, templates, plugins: no contact data.
    ReadReports,
    /// A contact, its messages and enrollments (masked for analysts).
    ReadContacts,
    /// Every contact in full, in bulk (an export): not masked, so not an analyst's.
    ExportContacts,
    /// Journey drafts, templates, previews, test sends, simulations.
    EditContent,
    /// Publish, pause, resume, enroll, retry.
    RunJourneys,
    /// Approve a template version for sending: admin and manager.
    ApproveContent,
    /// Archive a journey: admin, or the `delete_journeys` grant.
    DeleteJourneys,
    /// Create and update contacts: admin, ingest, or the `edit_contacts` grant.
    WriteContacts,
    /// Erase a contact: admin, or the `delete_contacts` grant.
    DeleteContacts,
    /// Send events in: admin and ingest.
    Ingest,
    /// Dead letters, the audit log, scoring models: admin and manager.
    Operate,
    /// Channels, secrets, tokens, plugins: admin only.
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 13] = [
        Permission::Authenticated,
        Permission::ReadReports,
        Permission::ReadContacts,
        Permission::ExportContacts,
        Permission::EditContent,
        Permission::RunJourneys,
        Permission::ApproveContent,
        Permission::DeleteJourneys,
        Permission::WriteContacts,
        Permission::DeleteContacts,
        Permission::Ingest,
        Permission::Operate,
        Permission::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Authenticated => "authenticated",
            Permission::ReadReports => "read_reports",
            Permission::ReadContacts => "read_contacts",
            Permission::ExportContacts => "export_contacts",
            Permission::EditContent => "edit_content",
            Permission::RunJourneys => "run_journeys",
            Permission::ApproveContent => "approve_content",
            Permission::DeleteJourneys => "delete_journeys",
            Permission::WriteContacts => "write_contacts",
            Permission::DeleteContacts => "delete_contacts",
            Permission::Ingest => "ingest",
            Permission::Operate => "operate",
            Permission::Admin => "admin",
        }
    }

    /// The roles that have it without a grant.
    pub fn roles(self) -> &'static [Role] {
        use Role::*;
        match self {
            Permission::Authenticated => &Role::ALL,
            Permission::ReadReports | Permission::ReadContacts => {
                &[Admin, Manager, Operator, Analyst]
            }
            Permission::EditContent | Permission::RunJourneys | Permission::ExportContacts => {
                &[Admin, Manager, Operator]
            }
            Permission::DeleteJourneys | Permission::DeleteContacts => &[Admin],
            Permission::WriteContacts | Permission::Ingest => &[Admin, Ingest],
            Permission::Operate | Permission::ApproveContent => &[Admin, Manager],
            Permission::Admin => &[Admin],
        }
    }

    /// The grant that gives it to a token whose role lacks it.
    pub fn grant(self) -> Option<Grant> {
        match self {
            Permission::DeleteJourneys => Some(Grant::DeleteJourneys),
            Permission::WriteContacts => Some(Grant::EditContacts),
            Permission::DeleteContacts => Some(Grant::DeleteContacts),
            _ => None,
        }
    }
}

/// Who a request is from: the token it carried, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's id (`tok_…`), or `start-up` for what the server does itself.
    pub id: String,
    pub name: String,
    pub role: Role,
    pub grants: Vec<Grant>,
}

impl Principal {
    /// The server itself, loading what it was started with.
    pub fn start_up() -> Principal {
        Principal {
            id: "start-up".into(),
            name: "start-up".into(),
            role: Role::Admin,
            grants: Vec::new(),
        }
    }

    pub fn may(&self, permission: Permission) -> bool {
        permission.roles().contains(&self.role)
            || permission
                .grant()
                .is_some_and(|grant| self.grants.contains(&grant))
    }

    /// Whether what it reads of contacts is masked.
    pub fn masked(&self) -> bool {
        self.role == Role::Analyst
    }

    /// How the audit log names it: the token's id.
    pub fn actor(&self) -> &str {
        &self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: Role, grants: Vec<Grant>) -> Principal {
        Principal {
            id: "tok_1".into(),
            name: "t".into(),
            role,
            grants,
        }
    }

    #[test]
    fn grants_give_only_what_they_name() {
        let operator = principal(Role::Operator, vec![Grant::DeleteJourneys]);
        assert!(operator.may(Permission::DeleteJourneys));
        assert!(!operator.may(Permission::WriteContacts));
        assert!(!principal(Role::Manager, vec![]).may(Permission::DeleteJourneys));
        // A grant never lifts a role to admin.
        assert!(!operator.may(Permission::Admin));
    }

    #[test]
    fn names_round_trip() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        for grant in Grant::ALL {
            assert_eq!(Grant::parse(grant.as_str()), Some(grant));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
