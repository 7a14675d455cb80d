//! API tokens: random, shown once, stored only as their SHA-256, named, listed by id, with an
//! expiry and immediate revocation. Every token is held in memory by hash, so checking one
//! costs a hash and a map lookup, and a revocation is in effect for the very next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{Grant, Principal, Role};
use crate::model::Millis;
use crate::store::{AuditEntry, Store, StoreError, TokenRecord};

/// Most tokens one server keeps (revoked ones included), so the map stays small.
const MAX_TOKENS: usize = 10_000;
/// Longest a token's name may be.
const MAX_NAME: usize = 100;
/// The shortest token a server accepts from its operator (`--token`).
pub const MIN_GIVEN_TOKEN: usize = 16;

/// What an admin asks for in `POST /v1/admin/tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub grants: Vec<String>,
    /// The token is refused from this time on.
    #[serde(default, with = "crate::model::timestamp_json::option")]
    pub expires_at: Option<Millis>,
    /// Or: refused this many days after creation.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// Why a token was refused or could not be made.
#[derive(Debug, Error)]
pub enum TokenError {
    #[error("no such token")]
    Unknown,
    #[error("this token expired at {0}")]
    Expired(String),
    #[error("this token was revoked at {0}")]
    Revoked(String),
    #[error("{0}")]
    Invalid(String),
    #[error("no token `{0}`")]
    NotFound(String),
    #[error(
        "`{0}` is the last admin token that works and does not expire; create another such admin token before revoking it"
    )]
    LastAdmin(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A token as listed: its record without the hash, and whether it works now.
#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub grants: Vec<String>,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    pub created_by: String,
    #[serde(with = "crate::model::timestamp_json::option")]
    pub expires_at: Option<Millis>,
    #[serde(with = "crate::model::timestamp_json::option")]
    pub revoked_at: Option<Millis>,
    /// `active`, `expired` or `revoked`.
    pub status: &'static str,
}

impl TokenView {
    fn of(record: &TokenRecord, now: Millis) -> TokenView {
        TokenView {
            id: record.id.clone(),
            name: record.name.clone(),
            role: record.role.clone(),
            grants: record.grants.clone(),
            created_at: record.created_at,
            created_by: record.created_by.clone(),
            expires_at: record.expires_at,
            revoked_at: record.revoked_at,
            status: status(record, now),
        }
    }
}

fn status(record: &TokenRecord, now: Millis) -> &'static str {
    if record.revoked_at.is_some() {
        "revoked"
    } else if record.expires_at.is_some_and(|at| at <= now) {
        "expired"
    } else {
        "active"
    }
}

/// SHA-256 of a token. Tokens the server makes carry 256 random bits, so a fast hash is
/// enough: there is nothing to guess from it.
fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).expect("the OS provides randomness");
    hex::encode(buffer)
}

/// The tokens, durable in the store and held in memory by hash.
pub struct Tokens {
    store: Arc<dyn Store>,
    by_hash: RwLock<HashMap<[u8; 32], TokenRecord>>,
    /// One change at a time, so the store and the map agree.
    changes: Mutex<()>,
}

impl Tokens {
    /// Every token the store holds.
    pub fn load(store: Arc<dyn Store>) -> Result<Tokens, StoreError> {
        let mut by_hash = HashMap::new();
        for record in store.tokens()? {
            let mut key = [0u8; 32];
            match hex::decode(&record.hash) {
                Ok(bytes) if bytes.len() == 32 => key.copy_from_slice(&bytes),
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "token `{}` has no valid hash",
                        record.id
                    )));
                }
            }
            by_hash.insert(key, record);
        }
        Ok(Tokens {
            store,
            by_hash: RwLock::new(by_hash),
            changes: Mutex::new(()),
        })
    }

    /// Who `presented` is, if it is a token that works at `now`.
    pub fn authenticate(&self, presented: &str, now: Millis) -> Result<Principal, TokenError> {
        let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
        let record = map.get(&hash(presented)).ok_or(TokenError::Unknown)?;
        if let Some(at) = record.revoked_at {
            return Err(TokenError::Revoked(crate::model::format_timestamp(at)));
        }
        if let Some(at) = record.expires_at.filter(|at| *at <= now) {
            return Err(TokenError::Expired(crate::model::format_timestamp(at)));
        }
        principal(record).ok_or(TokenError::Unknown)
    }

    /// Every token, newest first.
    pub fn list(&self, now: Millis) -> Vec<TokenView> {
        let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
        let mut tokens: Vec<TokenView> = map.values().map(|r| TokenView::of(r, now)).collect();
        tokens.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        tokens
    }

    /// Make a token as `by` asks; the token itself is returned here and never again.
    pub fn create(
        &self,
        request: NewToken,
        by: &Principal,
        now: Millis,
    ) -> Result<(String, TokenView), TokenError> {
        let invalid = |message: String| Err(TokenError::Invalid(message));
        let name = request.name.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control)
        {
            return invalid(format!(
                "`name` must be 1 to {MAX_NAME} characters, none of them control characters"
            ));
        }
        let Some(role) = Role::parse(&request.role) else {
            return invalid(format!(
                "`role` `{}` is not one of {}",
                request.role.escape_debug(),
                names(Role::ALL.map(Role::as_str))
            ));
        };
        let mut grants = Vec::new();
        for name in &request.grants {
            let Some(grant) = Grant::parse(name) else {
                return invalid(format!(
                    "grant `{}` is not one of {}",
                    name.escape_debug(),
                    names(Grant::ALL.map(Grant::as_str))
                ));
            };
            if !grants.contains(&grant.as_str().to_owned()) {
                grants.push(grant.as_str().to_owned());
            }
        }
        let expires_at = match (request.expires_at, request.expires_in_days) {
            (Some(_), Some(_)) => {
                return invalid("give `expires_at` or `expires_in_days`, not both".into());
            }
            (Some(at), None) if at <= now => {
                return invalid("`expires_at` is in the past".into());
            }
            (Some(at), None) => Some(at),
            (None, Some(0)) => return invalid("`expires_in_days` must be at least 1".into()),
            (None, Some(days)) => Some(now.saturating_add(i64::from(days) * 86_400_000)),
            (None, None) => None,
        };
        let token = format!("wl_{}", random_hex(32));
        let record = TokenRecord {
            id: format!("tok_{}", random_hex(8)),
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            grants,
            hash: hex::encode(hash(&token)),
            created_at: now,
            created_by: by.actor().to_owned(),
            expires_at,
            revoked_at: None,
        };
        self.put(&record, "token.create", by, None, now)?;
        Ok((token, TokenView::of(&record, now)))
    }

    /// Refuse the token `id` from the next request on. Revoking a revoked token changes
    /// nothing; the last admin token that works cannot be revoked.
    pub fn revoke(&self, id: &str, by: &Principal, now: Millis) -> Result<TokenView, TokenError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        let (before, last_admin) = {
            let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
            let before = map
                .values()
                .find(|r| r.id == id)
                .cloned()
                .ok_or_else(|| TokenError::NotFound(id.to_owned()))?;
            // The server must keep an admin token that works and will go on working: one
            // that never expires is not revoked while every other working admin token expires.
            let others: Vec<&TokenRecord> = map
                .values()
                .filter(|r| {
                    r.id != before.id
                        && r.role == Role::Admin.as_str()
                        && status(r, now) == "active"
                })
                .collect();
            let last_admin = before.role == Role::Admin.as_str()
                && status(&before, now) == "active"
                && (others.is_empty()
                    || (before.expires_at.is_none()
                        && others.iter().all(|r| r.expires_at.is_some())));
            (before, last_admin)
        };
        if before.revoked_at.is_some() {
            return Ok(TokenView::of(&before, now));
        }
        if last_admin {
            return Err(TokenError::LastAdmin(id.to_owned()));
        }
        let mut after = before.clone();
        after.revoked_at = Some(now);
        self.write(&after, "token.revoke", by, Some(&before), now)?;
        Ok(TokenView::of(&after, now))
    }

    /// Make sure `token`, which the server was started with, works as an admin token: add it
    /// (named `bootstrap`) unless a token with its hash exists. One that was revoked stays
    /// revoked. Whether it was added.
    pub fn ensure_admin(&self, token: &str, now: Millis) -> Result<bool, TokenError> {
        if token.len() < MIN_GIVEN_TOKEN {
            return Err(TokenError::Invalid(format!(
                "the start-up token must be at least {MIN_GIVEN_TOKEN} characters"
            )));
        }
        let hashed = hash(token);
        let known = {
            let map = self.by_hash.read().unwrap_or_else(|e| e.into_inner());
            map.get(&hashed).cloned()
        };
        match known {
            Some(record) => {
                if let Some(at) = record.revoked_at {
                    tracing::warn!(token = %record.id, revoked_at = %crate::model::format_timestamp(at), "the token the server was started with was revoked; it stays revoked");
                }
                Ok(false)
            }
            None => {
                let record = TokenRecord {
                    id: format!("tok_{}", random_hex(8)),
                    name: "bootstrap".into(),
                    role: Role::Admin.as_str().into(),
                    grants: Vec::new(),
                    hash: hex::encode(hashed),
                    created_at: now,
                    created_by: Principal::start_up().id,
                    expires_at: None,
                    revoked_at: None,
                };
                self.put(&record, "token.create", &Principal::start_up(), None, now)?;
                tracing::info!(token = %record.id, "added the start-up token as an admin token");
                Ok(true)
            }
        }
    }

    fn put(
        &self,
        record: &TokenRecord,
        action: &str,
        by: &Principal,
        before: Option<&TokenRecord>,
        now: Millis,
    ) -> Result<(), TokenError> {
        let _change = self.changes.lock().unwrap_or_else(|e| e.into_inner());
        if self.by_hash.read().unwrap_or_else(|e| e.into_inner()).len() >= MAX_TOKENS {
            return Err(TokenError::Invalid(format!(
                "the server holds {MAX_TOKENS} tokens, the most it keeps"
            )));
        }
        self.write(record, action, by, before, now)
    }

    /// Store the record and its audit entry, let requests see it, then make it durable.
    fn write(
        &self,
        record: &TokenRecord,
        action: &str,
        by: &Principal,
        before: Option<&TokenRecord>,
        now: Millis,
    ) -> Result<(), TokenError> {
        let view = |r: &TokenRecord| serde_json::to_value(TokenView::of(r, now)).ok();
        let detail = serde_json::json!({"before": before.and_then(view), "after": view(record)});
        let audit = AuditEntry::new(now, by.actor(), action, &record.id, detail);
        self.store.put_token(record, audit)?;
        // What the store holds is what requests see, even if making it durable fails below:
        // a revocation then refuses the token at once, and a creation the caller never saw
        // the secret of lets nobody in.
        let mut key = [0u8; 32];
        key.copy_from_slice(&hex::decode(&record.hash).expect("hashes are written as hex"));
        self.by_hash
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, record.clone());
        self.store.flush()?;
        Ok(())
    }
}

/// The principal a record names; none for a role this version does not know (a record from a
/// newer one), which is refused rather than guessed at.
fn principal(record: &TokenRecord) -> Option<Principal> {
    Some(Principal {
        id: record.id.clone(),
        name: record.name.clone(),
        role: Role::parse(&record.role)?,
        grants: record
            .grants
            .iter()
            .filter_map(|g| Grant::parse(g))
            .collect(),
    })
}

fn names<const N: usize>(names: [&str; N]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
