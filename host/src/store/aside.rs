//! Dead letters: records set aside so that everything else goes on (journey work that kept
//! failing or does not decode, records found unreadable when the store opened), what operators
//! do with them, and the audit log that records it.

use super::StoreError;
use super::codec::{decode, encode, record_and_rest, work_items};
use super::layout::{MAX_RECORD_BYTES, TreeId, ordered_time};
use super::records::{AuditEntry, AuditPage, AuditQuery, DeadLetter};
use super::sled_store::{SledStore, backend, lock};
use super::write_set::WriteSet;
use crate::model::Millis;

/// Bytes of an unreadable record shown as text in its dead letter.
const RAW_SHOWN: usize = 1 << 10;
/// Longest error kept with a dead letter.
const ERROR_KEPT: usize = 4 << 10;

/// An audit entry as stored. A change too large to keep whole (a journey's draft of tens of
/// KiB, before and after) keeps its size and SHA-256 instead of its particulars: recording the
/// change must never be what makes it fail.
fn audit_value(mut entry: AuditEntry) -> Vec<u8> {
    let value = encode(&entry);
    if value.len() <= MAX_RECORD_BYTES {
        return value;
    }
    use sha2::Digest;
    let detail = serde_json::to_vec(&entry.detail).unwrap_or_default();
    entry.detail = serde_json::json!({
        "omitted": format!("{} bytes, more than an audit entry keeps", detail.len()),
        "sha256": hex::encode(sha2::Sha256::digest(&detail)),
    });
    encode(&entry)
}

/// A dead letter's value: the letter, then the record's bytes as they were stored.
fn letter_value(letter: &DeadLetter, bytes: &[u8]) -> Vec<u8> {
    let mut value = encode(letter);
    value.extend_from_slice(bytes);
    value
}

/// The letter and the record's bytes from a dead letter's value.
fn letter_and_bytes(value: &[u8]) -> Result<(DeadLetter, Vec<u8>), StoreError> {
    let (letter, bytes) = record_and_rest::<DeadLetter>(value)?;
    Ok((letter, bytes.to_vec()))
}

fn letter_key(id: &str) -> Result<[u8; 8], StoreError> {
    hex::decode(id)
        .ok()
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .ok_or_else(|| StoreError::NotFound(format!("no dead letter `{id}`")))
}

/// `text` cut to at most `limit` bytes, on a character boundary.
pub(crate) fn truncated(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &text[..cut], text.len())
}

impl SledStore {
    /// Keep `bytes`, found at `key` in `tree`, as a dead letter; the caller removes the original.
    pub(super) fn keep_aside(
        &self,
        tree: &str,
        key: &[u8],
        bytes: &[u8],
        error: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut writes = WriteSet::new(self);
        self.letter(&mut writes, tree, key, bytes, error, now)?;
        writes.apply()
    }

    /// Move the record at `key` of `tree` to the dead letters, in one write.
    pub(super) fn move_aside(
        &self,
        tree: TreeId,
        key: &[u8],
        bytes: &[u8],
        error: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut writes = WriteSet::new(self);
        self.letter(&mut writes, tree.name(), key, bytes, error, now)?;
        writes.remove(tree, key.to_vec());
        writes.apply()
    }

    fn letter(
        &self,
        writes: &mut WriteSet<'_>,
        tree: &str,
        key: &[u8],
        bytes: &[u8],
        error: &str,
        now: Millis,
    ) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(backend)?.to_be_bytes();
        // A sweep's bundle is split before any of it is set aside (see the scheduler), so
        // journey work set aside is one item.
        let item = (tree == TreeId::Inbox.name())
            .then(|| work_items(bytes).ok())
            .flatten()
            .filter(|items| items.len() == 1)
            .and_then(|mut items| items.pop());
        let letter = DeadLetter {
            id: hex::encode(id),
            tree: tree.to_owned(),
            key: hex::encode(key),
            raw: item.is_none().then(|| {
                String::from_utf8_lossy(&bytes[..bytes.len().min(RAW_SHOWN)]).into_owned()
            }),
            item,
            size: bytes.len(),
            error: truncated(error, ERROR_KEPT),
            set_aside_at: now,
        };
        // A record may be up to twice the size a caller may store; a dead letter keeps what
        // fits, and says (by `size`) when it could not keep it all.
        let kept = &bytes[..bytes.len().min(MAX_RECORD_BYTES)];
        writes.put(
            TreeId::DeadLetters,
            id.to_vec(),
            letter_value(&letter, kept),
        );
        Ok(())
    }

    pub(super) fn audit_write(
        &self,
        writes: &mut WriteSet<'_>,
        mut entry: AuditEntry,
    ) -> Result<(), StoreError> {
        let id = self.db.generate_id().map_err(backend)?;
        entry.id = format!("{id:016x}");
        let mut key = ordered_time(entry.at).to_vec();
        key.extend_from_slice(&id.to_be_bytes());
        writes.put(TreeId::Audit, key, audit_value(entry));
        Ok(())
    }

    fn read_letter(&self, id: &str) -> Result<([u8; 8], DeadLetter, Vec<u8>), StoreError> {
        let key = letter_key(id)?;
        let value = self
            .dead_letters
            .get(key)
            .map_err(backend)?
            .ok_or_else(|| StoreError::NotFound(format!("no dead letter `{id}`")))?;
        let (letter, bytes) = letter_and_bytes(&value)?;
        Ok((key, letter, bytes))
    }
}

/// The dead-letter and audit part of [`Store`], for the sled store.
pub(super) fn dead_letters(store: &SledStore, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
    let mut letters = Vec::new();
    for entry in store.dead_letters.iter().take(limit) {
        let (key, value) = entry.map_err(backend)?;
        match letter_and_bytes(&value) {
            Ok((letter, _)) => letters.push(letter),
            Err(error) => letters.push(DeadLetter {
                id: hex::encode(&key),
                tree: "dead_letters".into(),
                key: hex::encode(&key),
                item: None,
                raw: None,
                size: value.len(),
                error: format!("this dead letter itself does not decode: {error}"),
                set_aside_at: 0,
            }),
        }
    }
    Ok(letters)
}

pub(super) fn requeue(
    store: &SledStore,
    id: &str,
    audit: AuditEntry,
) -> Result<DeadLetter, StoreError> {
    let _operations = lock(&store.locks.operations);
    let (letter_key, letter, bytes) = store.read_letter(id)?;
    let tree = TreeId::ALL
        .into_iter()
        .find(|tree| tree.name() == letter.tree)
        .ok_or_else(|| {
            StoreError::Conflict(format!(
                "dead letter `{id}` is a `{}` record, which is kept for inspection and not put back; delete it once looked at",
                letter.tree
            ))
        })?;
    if bytes.len() < letter.size {
        return Err(StoreError::Conflict(format!(
            "dead letter `{id}` kept only {} of the record's {} bytes; it cannot be put back",
            bytes.len(),
            letter.size
        )));
    }
    let key = hex::decode(&letter.key).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let _partition = (tree == TreeId::Inbox)
        .then(|| key.first().map(|p| store.locks.partition(*p)))
        .flatten();
    if store.tree(tree).contains_key(&key).map_err(backend)? {
        return Err(StoreError::Conflict(format!(
            "dead letter `{id}`: a `{}` record is there now; delete the dead letter instead",
            letter.tree
        )));
    }
    let mut writes = WriteSet::new(store);
    writes.put(tree, key, bytes);
    writes.remove(TreeId::DeadLetters, letter_key.to_vec());
    store.audit_write(&mut writes, audit)?;
    writes.apply()?;
    Ok(letter)
}

pub(super) fn delete(
    store: &SledStore,
    id: &str,
    audit: AuditEntry,
) -> Result<DeadLetter, StoreError> {
    let _operations = lock(&store.locks.operations);
    let (letter_key, letter, _) = store.read_letter(id)?;
    let mut writes = WriteSet::new(store);
    writes.remove(TreeId::DeadLetters, letter_key.to_vec());
    store.audit_write(&mut writes, audit)?;
    writes.apply()?;
    Ok(letter)
}

/// Entries are keyed by time and then id, so a time range is a key range and the key of the
/// last entry on a page is where the next page starts. Actor, action and object are matched
/// as the range is read.
pub(super) fn audit(store: &SledStore, query: &AuditQuery) -> Result<AuditPage, StoreError> {
    use std::ops::Bound;
    let lower = match query.since {
        Some(since) => Bound::Included(ordered_time(since).to_vec()),
        None => Bound::Unbounded,
    };
    let upper = match (&query.before, query.until) {
        (Some(cursor), _) => Bound::Excluded(
            hex::decode(cursor)
                .ok()
                .filter(|key| key.len() == 16)
                .ok_or_else(|| {
                    StoreError::Invalid("`before` is not a cursor this server gave".into())
                })?,
        ),
        (None, Some(until)) => {
            let mut key = ordered_time(until).to_vec();
            key.extend_from_slice(&[0xff; 8]);
            Bound::Included(key)
        }
        (None, None) => Bound::Unbounded,
    };
    let wanted = |field: &Option<String>, value: &str| field.as_deref().is_none_or(|f| f == value);
    let mut page = AuditPage {
        audit: Vec::new(),
        next: None,
    };
    let mut last_key = Vec::new();
    for item in store.audit.range::<Vec<u8>, _>((lower, upper)).rev() {
        let (key, value) = item.map_err(backend)?;
        let entry: AuditEntry = decode(&value)?;
        if !(wanted(&query.actor, &entry.actor)
            && wanted(&query.action, &entry.action)
            && wanted(&query.object, &entry.object))
        {
            continue;
        }
        if page.audit.len() == query.limit {
            page.next = Some(hex::encode(&last_key));
            break;
        }
        last_key = key.to_vec();
        page.audit.push(entry);
    }
    Ok(page)
}
