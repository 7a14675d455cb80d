//! Opening the store: which database in the directory holds it, converting a store an earlier
//! version wrote, and putting things back in order after a crash. Opening is never blocked by
//! one record it cannot read: that record is set aside as a dead letter, with its key and
//! error, the open goes on, and the log and [`Recovery`] say what was set aside.
//!
//! The directory holds the database of layout 3 in `v3/`. A store of an earlier layout — layout
//! 2's database in `v2/`, or layout 1's sled files at the directory's top — is copied or
//! converted into `v3.partial/`, which becomes `v3/` with one rename once complete, and the old
//! files are removed after that. A crash at any point leaves either the old store (converted
//! again at the next open) or the new one (and perhaps old files, which the next open removes).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::codec::{event_sequence, event_value, work_items};
use super::layout::{LAYOUT, SEGMENT_BYTES, TreeId, inbox_sequence};
use super::records::WorkItem;
use super::sled_store::{SledStore, backend};
use super::write_set::Replayed;
use super::{StoreError, legacy, relayout};
use crate::clock::{Clock, SystemClock};

/// What opening the store found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// Converted from this earlier layout when opened, if it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub converted_from_layout: Option<u32>,
    /// Records the conversion moved into the new layout.
    pub records_converted: usize,
    #[serde(flatten)]
    pub replayed: Replayed,
    /// Events a crash left queued but not recorded: recorded now.
    pub events_recorded: usize,
    /// Inbox items a retried duplicate left behind: dropped, the original stays.
    pub duplicates_dropped: usize,
    /// Records that could not be read, set aside as dead letters.
    pub records_set_aside: usize,
}

impl Recovery {
    /// Whether opening changed anything.
    pub fn repaired(&self) -> bool {
        let replayed = self.replayed;
        self.converted_from_layout.is_some()
            || replayed.intents_replayed
                + replayed.intents_incomplete
                + replayed.intents_set_aside
                + self.events_recorded
                + self.duplicates_dropped
                + self.records_set_aside
                > 0
    }
}

/// The database of layout 3 in a store directory.
fn v3_config(path: &Path) -> sled::Config {
    sled::Config::new().path(path)
}

/// sled's settings for layout 3 (see [`SEGMENT_BYTES`]). sled refuses to open a database with
/// other segments than it was made with, which is why a new layout is a new database.
fn tuned(config: sled::Config) -> sled::Config {
    // sled's page cache defaults to 1 GiB; the store should not be most of the process.
    config.segment_size(SEGMENT_BYTES).cache_capacity(256 << 20)
}

/// Open sled's database as `config` says. sled lets go of its file lock only when the last of
/// its IO tasks ends, which can be just after the previous `Db` of the same directory in this
/// process was dropped (a restore, or a test reopening a store): a lock held still is waited
/// for, up to two seconds, before it is an error. Another process holding it is an error then.
pub(super) fn open_db(config: &sled::Config) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Err(sled::Error::Io(error))
                if error.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            result => return result.map_err(backend),
        }
    }
}

/// Take ids from sled's generator until it gives out `next`: a database that takes over from
/// another (a restore, a layout copy) must not give out an id the other one did.
pub(super) fn advance_ids(db: &sled::Db, next: u64) -> Result<(), StoreError> {
    while db.generate_id().map_err(backend)? < next {}
    Ok(())
}

/// sled's files at the top of a layout-1 store directory.
fn layout_1_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap.")
        })
        .collect()
}

impl SledStore {
    /// Open (or create) the store in `dir`, converting a store an earlier version wrote and
    /// finishing what a crash interrupted.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |what: &str, path: &Path, e: std::io::Error| {
            StoreError::Backend(format!("{what} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| io("creating", dir, e))?;
        let (current, partial, layout_2) = (dir.join("v3"), dir.join("v3.partial"), dir.join("v2"));
        let mut converted = None;
        if !current.exists() {
            if partial.exists() {
                tracing::warn!(path = %partial.display(), "discarding a conversion a crash interrupted; converting again");
                std::fs::remove_dir_all(&partial).map_err(|e| io("removing", &partial, e))?;
            }
            let earlier = if layout_2.exists() {
                Some(2)
            } else if dir.join("conf").exists() {
                Some(1)
            } else {
                None
            };
            if let Some(layout) = earlier {
                tracing::warn!(path = %dir.display(), "this store was written by an earlier version (layout {layout}); converting it to layout {LAYOUT}");
                let target = SledStore::over(open_db(&tuned(v3_config(&partial)))?)?;
                let report = match layout {
                    2 => relayout::copy(&layout_2, &target)?,
                    _ => legacy::convert(dir, &target)?,
                };
                target
                    .meta
                    .insert("layout", &LAYOUT.to_be_bytes())
                    .map_err(backend)?;
                target.db.flush().map_err(backend)?;
                drop(target);
                std::fs::rename(&partial, &current).map_err(|e| io("renaming", &partial, e))?;
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| io("syncing", dir, e))?;
                converted = Some((layout, report));
            }
        }
        let mut leftovers = layout_1_files(dir);
        leftovers.extend(layout_2.exists().then_some(layout_2));
        for leftover in leftovers {
            tracing::info!(path = %leftover.display(), "removing an earlier layout's files, now converted");
            let removed = if leftover.is_dir() {
                std::fs::remove_dir_all(&leftover)
            } else {
                std::fs::remove_file(&leftover)
            };
            removed.map_err(|e| io("removing", &leftover, e))?;
        }
        let db = open_db(&tuned(v3_config(&current)))?;
        let mut store = SledStore::over(db)?;
        store.dir = Some(dir.to_owned());
        store.check_layout()?;
        store.recover(converted)?;
        store.index_contact_events()?;
        Ok(store)
    }

    /// A store that lives in memory and vanishes when dropped: journey simulations.
    pub fn temporary() -> Result<Self, StoreError> {
        let store = SledStore::over(
            tuned(sled::Config::new().temporary(true))
                .open()
                .map_err(backend)?,
        )?;
        store.check_layout()?;
        Ok(store)
    }

    /// A new database gets this version's layout; one of another layout is refused.
    fn check_layout(&self) -> Result<(), StoreError> {
        match self.meta.get("layout").map_err(backend)? {
            None => {
                self.meta
                    .insert("layout", &LAYOUT.to_be_bytes())
                    .map_err(backend)?;
                Ok(())
            }
            Some(bytes) if bytes.as_ref() == LAYOUT.to_be_bytes() => Ok(()),
            Some(bytes) => Err(StoreError::Backend(format!(
                "the store is in layout {}, which this version does not read (it reads layout {LAYOUT})",
                hex::encode(&bytes)
            ))),
        }
    }

    /// Put the store back in order after a crash: finish interrupted write sets, and settle
    /// inbox items whose ingest stopped half-way (record the event of one queued but not
    /// recorded, drop one a duplicate queued before finding its id taken). Anything that does
    /// not decode is set aside.
    fn recover(&mut self, converted: Option<(u32, legacy::Converted)>) -> Result<(), StoreError> {
        let now = SystemClock.now();
        let mut recovery = Recovery {
            converted_from_layout: converted.map(|(layout, _)| layout),
            records_converted: converted.map_or(0, |(_, c)| c.records),
            records_set_aside: converted.map_or(0, |(_, c)| c.set_aside),
            replayed: self.replay_intents(now)?,
            ..Recovery::default()
        };
        for entry in self.inbox.iter() {
            let (key, value) = entry.map_err(backend)?;
            // Events are queued one per record; a sweep's bundle holds none.
            let event = match work_items(&value).map(<[WorkItem; 1]>::try_from) {
                Ok(Ok(
                    [
                        WorkItem::Event {
                            event: Some(event), ..
                        },
                    ],
                )) => event,
                Ok(_) => continue,
                Err(error) => {
                    self.set_aside_at_open(TreeId::Inbox, &key, &value, &error, now)?;
                    recovery.records_set_aside += 1;
                    continue;
                }
            };
            let sequence = inbox_sequence(&key);
            let recorded = match self.events.get(&event.id).map_err(backend)? {
                Some(stored) => match event_sequence(&stored) {
                    Ok(recorded) => Some(recorded),
                    Err(error) => {
                        // The inbox item carries the event: record it again from there.
                        self.set_aside_at_open(
                            TreeId::Events,
                            event.id.as_bytes(),
                            &stored,
                            &error,
                            now,
                        )?;
                        recovery.records_set_aside += 1;
                        None
                    }
                },
                None => None,
            };
            match recorded {
                None => {
                    self.events
                        .insert(event.id.as_bytes(), event_value(&event, Some(sequence)))
                        .map_err(backend)?;
                    recovery.events_recorded += 1;
                }
                Some(Some(other)) if other != sequence => {
                    self.inbox.remove(key).map_err(backend)?;
                    recovery.duplicates_dropped += 1;
                }
                Some(_) => {}
            }
        }
        if recovery.repaired() {
            let replayed = recovery.replayed;
            tracing::warn!(
                converted_from_layout = ?recovery.converted_from_layout,
                records_converted = recovery.records_converted,
                intents_replayed = replayed.intents_replayed,
                intents_incomplete = replayed.intents_incomplete,
                intents_set_aside = replayed.intents_set_aside,
                events_recorded = recovery.events_recorded,
                duplicates_dropped = recovery.duplicates_dropped,
                records_set_aside = recovery.records_set_aside,
                "store recovered: finished what a crash interrupted"
            );
            self.db.flush().map_err(backend)?;
        }
        self.recovery = recovery;
        Ok(())
    }

    /// Move a record found unreadable at open out of its tree, logging what was set aside.
    fn set_aside_at_open(
        &self,
        tree: TreeId,
        key: &[u8],
        bytes: &[u8],
        error: &StoreError,
        now: crate::model::Millis,
    ) -> Result<(), StoreError> {
        tracing::error!(tree = tree.name(), key = %hex::encode(key), %error, "a stored record cannot be read; set aside as a dead letter");
        self.move_aside(tree, key, bytes, &error.to_string(), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeadLetter, JourneyStore, Store};

    #[test]
    fn a_record_that_cannot_be_read_is_set_aside_and_the_store_opens() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .inbox
                .insert([3u8; 9], &b"\x01\xc1garbage"[..])
                .unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery().records_set_aside, 1);
        assert!(store.inbox.is_empty());
        let letters: Vec<DeadLetter> = store.dead_letters(10).unwrap();
        assert_eq!((letters[0].tree.as_str(), letters[0].size), ("inbox", 9));
        assert_eq!(letters[0].key, hex::encode([3u8; 9]));
        // Once the reason is gone it can be put back; here it would only be set aside again.
        store
            .requeue_dead_letter(
                &letters[0].id,
                crate::store::AuditEntry::new(
                    1,
                    "test",
                    "dead_letter.requeue",
                    &letters[0].id,
                    serde_json::Value::Null,
                ),
            )
            .unwrap();
        assert_eq!(
            store.inbox.get([3u8; 9]).unwrap().as_deref(),
            Some(&b"\x01\xc1garbage"[..])
        );
        assert!(store.dead_letters(10).unwrap().is_empty());
    }

    #[test]
    fn the_largest_records_never_make_sled_write_an_unsynced_blob_file() {
        // sled writes any leaf it logs that is larger than a quarter of a segment to a file of
        // its own, without syncing it; a power cut could take an acknowledged record with it.
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let big = vec![7u8; crate::store::MAX_STORED_BYTES];
        for round in 0..3 {
            for n in 0..64u32 {
                let mut writes = super::super::write_set::WriteSet::new(&store);
                writes.put(TreeId::Journeys, n.to_be_bytes().to_vec(), big.clone());
                writes.put(TreeId::Outbox, n.to_be_bytes().to_vec(), big.clone());
                writes.apply().unwrap();
            }
            store.flush().unwrap();
            let blobs: Vec<_> = std::fs::read_dir(dir.path().join("v3/blobs"))
                .unwrap()
                .collect();
            assert!(
                blobs.is_empty(),
                "round {round}: sled wrote {} blob files",
                blobs.len()
            );
        }
        assert_eq!(store.journeys.len(), 64);
    }

    #[test]
    fn a_new_store_records_its_layout_and_refuses_one_it_does_not_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            assert_eq!(
                store.meta.get("layout").unwrap().unwrap().as_ref(),
                LAYOUT.to_be_bytes()
            );
            assert_eq!(store.recovery(), Recovery::default());
            store.meta.insert("layout", &9u32.to_be_bytes()).unwrap();
            store.flush().unwrap();
        }
        let error = SledStore::open(dir.path()).err().unwrap().to_string();
        assert!(error.contains("layout"), "{error}");
        assert!(error.contains("not read"), "{error}");
        let _ = SledStore::temporary().unwrap().next_timer_due();
    }
}
