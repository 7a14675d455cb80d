//! [`ScoringStore`] for the sled store: models by name, and each contact's score history in
//! time order (read newest first, in pages).

use super::StoreError;
use super::codec::{decode, encode};
use super::layout::{TreeId, prefix};
use super::records::AuditEntry;
use super::scoring::{ScorePage, ScoringModelRecord, ScoringStore};
use super::sled_store::{SledStore, backend, lock};
use super::write_set::WriteSet;

impl ScoringStore for SledStore {
    fn scoring_models(&self) -> Result<Vec<ScoringModelRecord>, StoreError> {
        self.scoring_models
            .iter()
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn put_scoring_model(
        &self,
        record: &ScoringModelRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.put(
            TreeId::ScoringModels,
            record.name.as_bytes(),
            encode(record),
        );
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn delete_scoring_model(&self, name: &str, audit: AuditEntry) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.remove(TreeId::ScoringModels, name.as_bytes());
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn score_history(
        &self,
        contact_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<ScorePage, StoreError> {
        let own = prefix(contact_id);
        let end = match before {
            None => None,
            Some(cursor) => {
                let suffix = hex::decode(cursor)
                    .ok()
                    .filter(|suffix| suffix.len() > 8)
                    .ok_or_else(|| {
                        StoreError::Invalid(format!(
                            "`before` is the `next` of a page before, not `{cursor}`"
                        ))
                    })?;
                let mut end = own.clone();
                end.extend_from_slice(&suffix);
                Some(end)
            }
        };
        let entries = match end {
            None => self.score_history.scan_prefix(&own),
            Some(end) => self.score_history.range(own.clone()..end),
        };
        let mut changes = Vec::new();
        let mut last = None;
        let mut more = false;
        for entry in entries.rev() {
            let (key, value) = entry.map_err(backend)?;
            let together: Vec<super::ScoreEntry> = decode(&value)?;
            // A source's changes stay on one page: a page may hold a few more than `limit`
            // rather than split them.
            if !changes.is_empty() && changes.len() + together.len() > limit {
                more = true;
                break;
            }
            for mut change in together.into_iter().rev() {
                change.contact_id = contact_id.to_owned();
                changes.push(change);
            }
            last = Some(key[own.len()..].to_vec());
        }
        let next = last.filter(|_| more).map(hex::encode);
        Ok(ScorePage { changes, next })
    }
}
