//! Layout 2 → 3: the same trees and records, copied into a sled database of other segments.
//!
//! sled fixes a database's segment size when it is made and refuses to open it with another, so
//! moving a store off layout 2's 16 MiB segments (see `layout::SEGMENT_BYTES` for why) is a copy
//! of every tree, key by key, into a new database. Nothing is decoded: a write set a crash left
//! unfinished is copied as its intent and finished by the new store's recovery, as it would
//! have been in the old one.

use std::path::Path;

use super::StoreError;
use super::layout::{LAYOUT_2_SEGMENT_BYTES, trees};
use super::legacy::Converted;
use super::open::{advance_ids, open_db};
use super::sled_store::{SledStore, backend};

/// Copy the layout-2 database in `from` into `into`, every tree and sled's next id.
pub(super) fn copy(from: &Path, into: &SledStore) -> Result<Converted, StoreError> {
    let config = sled::Config::new()
        .path(from)
        .segment_size(LAYOUT_2_SEGMENT_BYTES)
        .cache_capacity(64 << 20);
    let old = open_db(&config)?;
    let layout = old.open_tree(trees::META).map_err(backend)?.get("layout");
    match layout.map_err(backend)? {
        // A database with no layout yet is one a crash cut off as it was made: empty, or
        // holding only what came before its layout was durable, which is layout 2's.
        None => {}
        Some(bytes) if bytes.as_ref() == 2u32.to_be_bytes() => {}
        Some(other) => {
            return Err(StoreError::Backend(format!(
                "{} is not a layout-2 database (its layout: {})",
                from.display(),
                hex::encode(other)
            )));
        }
    }
    let mut done = Converted::default();
    for name in old.tree_names() {
        let (source, target) = (
            old.open_tree(&name).map_err(backend)?,
            into.db.open_tree(&name).map_err(backend)?,
        );
        for entry in source.iter() {
            let (key, value) = entry.map_err(backend)?;
            target.insert(key, value).map_err(backend)?;
            done.records += 1;
        }
    }
    // Inbox keys and other ids come from sled's id generator: the new database must not give
    // out one the old one did, or new work would sort before old.
    advance_ids(&into.db, old.generate_id().map_err(backend)?)?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use crate::model::{Contact, Event};
    use crate::store::codec::{contact_value, event_value};
    use crate::store::layout::{TreeId, timer_key};
    use crate::store::write_set::{Op, encode_chunks, intent_key};
    use crate::store::{JourneyStore, SledStore, Store};

    use super::*;

    fn event(n: u64) -> Event {
        serde_json::from_value(serde_json::json!({"id": format!("evt-{n}"),
            "contact_id": "a", "name": "registered", "timestamp": 5}))
        .unwrap()
    }

    /// A store as layout 2 left it in `dir/v2`, with a write set a crash left unfinished;
    /// returns the next id its sled would have given out.
    fn layout_2_store(dir: &Path) -> u64 {
        let db = sled::Config::new()
            .path(dir.join("v2"))
            .segment_size(LAYOUT_2_SEGMENT_BYTES)
            .open()
            .unwrap();
        let tree = |name: &str| db.open_tree(name).unwrap();
        tree(trees::META)
            .insert("layout", &2u32.to_be_bytes())
            .unwrap();
        let contact = Contact::new("a".into(), 1);
        tree(trees::CONTACTS)
            .insert("a", contact_value(&contact, &[]))
            .unwrap();
        tree(trees::IDENTITIES)
            .insert("email:a@example.com", "a")
            .unwrap();
        for n in 0..300u64 {
            tree(trees::EVENTS)
                .insert(format!("evt-{n}"), event_value(&event(n), None))
                .unwrap();
        }
        for _ in 0..5_000 {
            db.generate_id().unwrap();
        }
        let next_id = db.generate_id().unwrap() + 1;
        // An unfinished write set: it sets a timer.
        let op = Op {
            tree: TreeId::Timers,
            key: timer_key(5_000, "en_1").to_vec(),
            value: Some(b"a".to_vec()),
        };
        let [chunk] = &encode_chunks(&[op])[..] else {
            panic!("one chunk")
        };
        tree(trees::INTENTS)
            .insert(intent_key(42, 0, 1), chunk.clone())
            .unwrap();
        db.flush().unwrap();
        next_id
    }

    #[test]
    fn a_layout_2_store_is_copied_into_layout_3_with_everything_in_it() {
        let dir = tempfile::tempdir().unwrap();
        let next_id = layout_2_store(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        let recovery = store.recovery();
        assert_eq!(recovery.converted_from_layout, Some(2), "{recovery:?}");
        assert_eq!(recovery.replayed.intents_replayed, 1, "{recovery:?}");
        assert!(store.contact("a").unwrap().is_some());
        let identity = store
            .db
            .open_tree(trees::IDENTITIES)
            .unwrap()
            .get("email:a@example.com");
        assert_eq!(identity.unwrap().as_deref(), Some(&b"a"[..]));
        for n in [0, 150, 299] {
            assert_eq!(store.event(&format!("evt-{n}")).unwrap(), Some(event(n)));
        }
        assert_eq!(
            store.next_timer_due().unwrap(),
            Some(5_000),
            "intent finished"
        );
        assert!(store.db.generate_id().unwrap() >= next_id, "ids go on");
        assert!(!dir.path().join("v2").exists(), "the old database is gone");
        drop(store);

        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.recovery().converted_from_layout,
            None,
            "copied once"
        );
        assert!(reopened.contact("a").unwrap().is_some());
    }

    #[test]
    fn a_copy_a_crash_interrupted_is_made_again_and_one_finished_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        layout_2_store(dir.path());
        std::fs::create_dir_all(dir.path().join("v3.partial")).unwrap();
        std::fs::write(dir.path().join("v3.partial/conf"), "half written").unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery().converted_from_layout, Some(2));
        assert!(store.event("evt-7").unwrap().is_some());
        drop(store);

        // A crash after the new database took its place, before the old one was removed.
        layout_2_store(dir.path());
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery().converted_from_layout, None);
        assert!(!dir.path().join("v2").exists(), "the leftover is removed");
        assert!(store.event("evt-7").unwrap().is_some());
    }

    #[test]
    fn a_layout_2_database_a_crash_cut_off_before_its_layout_was_written_is_copied_too() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new()
            .path(dir.path().join("v2"))
            .segment_size(LAYOUT_2_SEGMENT_BYTES)
            .open()
            .unwrap();
        db.flush().unwrap();
        drop(db);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.recovery().converted_from_layout, Some(2));
        assert!(store.contact("a").unwrap().is_none());
    }
}
