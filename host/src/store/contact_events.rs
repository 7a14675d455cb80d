//! Each contact's events, newest first (`contact_events`): the key is written with the step
//! that processes the event, moved with a merge, and built once from the events a store held
//! before this index existed.

use serde::Serialize;

use super::codec::decode;
use super::layout::{contact_event_key, prefix};
use super::sled_store::{SledStore, backend};
use super::{Store, StoreError};
use crate::model::Event;

/// One page of a contact's events.
#[derive(Debug, Clone, Serialize)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Pass as `before` for the next (older) page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// The meta key set once every event recorded before the index existed is in it.
const INDEXED: &str = "contact_events";

impl SledStore {
    pub(super) fn events_of(
        &self,
        contact_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let own = prefix(contact_id);
        let keys: Box<dyn DoubleEndedIterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
            match before {
                None => Box::new(self.contact_events.scan_prefix(&own)),
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
                    Box::new(self.contact_events.range(own.clone()..end))
                }
            };
        let mut events = Vec::new();
        let mut last = None;
        let mut more = false;
        for entry in keys.rev() {
            let (key, _) = entry.map_err(backend)?;
            if events.len() == limit {
                more = true;
                break;
            }
            let suffix = key[own.len()..].to_vec();
            let id = String::from_utf8_lossy(suffix.get(8..).unwrap_or_default()).into_owned();
            // An event whose record is gone (erased) is not listed.
            if let Some(event) = self.event(&id)? {
                events.push(event);
            }
            last = Some(suffix);
        }
        // The next page starts below the last key this one read.
        let next = last.filter(|_| more).map(hex::encode);
        Ok(EventPage { events, next })
    }

    /// Put every recorded event in its contact's list, once: a store written before the list
    /// existed. Events still waiting in the inbox are listed again when processed, which
    /// writes the same key.
    pub(super) fn index_contact_events(&self) -> Result<(), StoreError> {
        if self.meta.get(INDEXED).map_err(backend)?.is_some() {
            return Ok(());
        }
        // Plain inserts, not a sled batch: the first batch would turn on sled's process-wide
        // lock for every write after it.
        let mut listed = 0usize;
        for entry in self.events.iter() {
            let (_, value) = entry.map_err(backend)?;
            let Ok(event) = decode::<Event>(&value) else {
                continue;
            };
            let owner = self
                .alias(&event.contact_id)?
                .unwrap_or_else(|| event.contact_id.clone());
            self.contact_events
                .insert(contact_event_key(&owner, event.timestamp, &event.id), &[])
                .map_err(backend)?;
            listed += 1;
        }
        self.db.flush().map_err(backend)?;
        self.meta.insert(INDEXED, &[1]).map_err(backend)?;
        self.db.flush().map_err(backend)?;
        if listed > 0 {
            tracing::info!(
                events = listed,
                "listed the events recorded before each contact's event list existed"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, contact_id: &str, at: crate::model::Millis) -> Event {
        Event {
            id: id.into(),
            contact_id: contact_id.into(),
            name: "page_viewed".into(),
            properties: Default::default(),
            timestamp: at,
            depth: 0,
        }
    }

    /// A store written before the lists existed (its events recorded, no list, no mark) gets
    /// every event in its contact's list when it is opened, once.
    #[test]
    fn a_store_from_before_the_lists_gets_them_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let events = [
                event("a1", "a", 10),
                event("b1", "b", 20),
                event("a2", "a", 30),
            ];
            store.record_events(&events).unwrap();
            // As a store from before: no list and no mark.
            store.contact_events.clear().unwrap();
            store.meta.remove(INDEXED).unwrap();
            store.db.flush().unwrap();
            assert!(store.events_of("a", None, 10).unwrap().events.is_empty());
        }
        let store = SledStore::open(dir.path()).unwrap();
        let listed: Vec<String> = (store.events_of("a", None, 10).unwrap().events)
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(listed, ["a2", "a1"]);
        assert_eq!(store.events_of("b", None, 10).unwrap().events.len(), 1);
        assert!(store.meta.get(INDEXED).unwrap().is_some());
    }
}
