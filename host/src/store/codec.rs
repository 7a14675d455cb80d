//! How a record becomes bytes and back. Every record starts with a byte that names its format,
//! and one decode path reads that byte and nothing else: a format it does not know (a record
//! from a newer version, or damaged bytes) is refused with an error that names the byte. No
//! reader ever guesses a format from what the bytes look like.
//!
//! Format [`MESSAGEPACK`]: a MessagePack map with named fields, self-describing like JSON (so
//! fields can be added with defaults) but smaller and cheaper, which is most of what a journey
//! step costs. Two values carry a second MessagePack value after their record, so that a reader
//! that wants only the record decodes the first and stops:
//!
//! - a contact is followed by its records of the journeys it entered: a step reads and writes
//!   both under one key instead of a contact plus a record per journey;
//! - an event is followed by the inbox sequence of the item that queued it (or nil), which
//!   tells the store at open whether an inbox item found beside a recorded event is that
//!   event's own (still to run) or one left by a duplicate whose ingest stopped half-way.
//!
//! An inbox value is one work item (a map), or a *bundle* of several for one partition (an
//! array of them): a sweep queues a page's contacts of a partition as one record, so the page
//! costs one key per partition rather than one per contact.

use std::io::Cursor;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;
use super::records::{ContactJourney, WorkItem};
use crate::model::{Contact, Event};

/// The format byte of a MessagePack record.
pub(super) const MESSAGEPACK: u8 = 1;

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// A record as stored.
pub(super) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(256);
    bytes.push(MESSAGEPACK);
    append(&mut bytes, value);
    bytes
}

/// `value` as MessagePack after what `bytes` holds already.
fn append<T: Serialize>(bytes: &mut Vec<u8>, value: &T) {
    rmp_serde::encode::write_named(bytes, value).expect("model types serialize");
}

/// What follows the format byte, if the record is in a format this version reads.
fn body(bytes: &[u8]) -> Result<&[u8], StoreError> {
    match bytes.split_first() {
        Some((&MESSAGEPACK, body)) => Ok(body),
        Some((other, _)) => Err(corrupt(format_args!(
            "record format {other} is not one this version reads"
        ))),
        None => Err(corrupt("an empty record")),
    }
}

/// A stored record.
pub(super) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    first::<T>(body(bytes)?).map(|(value, _)| value)
}

/// A stored record, and the bytes that follow it in its value.
pub(super) fn record_and_rest<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), StoreError> {
    first::<T>(body(bytes)?)
}

/// The first MessagePack value of `body`, and what follows it.
fn first<T: DeserializeOwned>(body: &[u8]) -> Result<(T, &[u8]), StoreError> {
    let mut reader = rmp_serde::Deserializer::new(Cursor::new(body));
    let value = T::deserialize(&mut reader).map_err(corrupt)?;
    let end = reader.position() as usize;
    Ok((value, &body[end..]))
}

/// The second value of a record that carries one.
fn second<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    let (_, rest) = first::<serde::de::IgnoredAny>(body(bytes)?)?;
    if rest.is_empty() {
        return Err(corrupt("a record lacks the value that follows it"));
    }
    first::<T>(rest).map(|(value, _)| value)
}

/// A contact's value: the contact, then its journeys.
pub(super) fn contact_value(contact: &Contact, journeys: &[ContactJourney]) -> Vec<u8> {
    let mut bytes = encode(contact);
    append(&mut bytes, &journeys);
    bytes
}

/// The contact and its journeys from a contact's value.
pub(super) fn contact_and_journeys(
    bytes: &[u8],
) -> Result<(Contact, Vec<ContactJourney>), StoreError> {
    let (contact, rest) = first::<Contact>(body(bytes)?)?;
    let (journeys, _) = first::<Vec<ContactJourney>>(rest)?;
    Ok((contact, journeys))
}

/// Replace the contact's record of each journey in `changed`, adding the new ones.
pub(super) fn merge_journeys<'c>(
    journeys: &mut Vec<ContactJourney>,
    changed: impl IntoIterator<Item = &'c ContactJourney>,
) {
    for record in changed {
        match journeys
            .iter_mut()
            .find(|j| j.journey_id == record.journey_id)
        {
            Some(kept) => *kept = record.clone(),
            None => journeys.push(record.clone()),
        }
    }
}

/// An event's value: the event, then the sequence of its inbox item (`None`: an event moved
/// from a store that did not record it).
pub(super) fn event_value(event: &Event, sequence: Option<u64>) -> Vec<u8> {
    let mut bytes = encode(event);
    append(&mut bytes, &sequence);
    bytes
}

/// An inbox value holding `items`: the item alone when there is one, else a bundle.
pub(super) fn work_value(items: &[WorkItem]) -> Vec<u8> {
    match items {
        [item] => encode(item),
        items => encode(&items),
    }
}

/// The work items an inbox value holds, in queue order. An empty bundle is refused: a record
/// with no work would never be consumed.
pub(super) fn work_items(bytes: &[u8]) -> Result<Vec<WorkItem>, StoreError> {
    // MessagePack arrays start with 0x90..=0x9f (up to 15 items), 0xdc or 0xdd.
    match body(bytes)?.first() {
        Some(0x90..=0x9f | 0xdc | 0xdd) => {
            let items = decode::<Vec<WorkItem>>(bytes)?;
            if items.is_empty() {
                return Err(corrupt("an inbox bundle holds no work"));
            }
            Ok(items)
        }
        _ => Ok(vec![decode::<WorkItem>(bytes)?]),
    }
}

/// The inbox sequence an event's value names.
pub(super) fn event_sequence(bytes: &[u8]) -> Result<Option<u64>, StoreError> {
    second(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journey(id: &str, entries: u32) -> ContactJourney {
        ContactJourney {
            contact_id: "c1".into(),
            journey_id: id.into(),
            entries,
            ..ContactJourney::default()
        }
    }

    fn event() -> Event {
        serde_json::from_value(serde_json::json!({"id": "e1", "contact_id": "c1",
            "name": "registered", "timestamp": 7}))
        .unwrap()
    }

    #[test]
    fn a_contact_reads_alone_or_with_its_journeys() {
        let contact = Contact::new("c1".into(), 5);
        let bytes = contact_value(&contact, &[journey("welcome", 2)]);
        assert_eq!(bytes[0], MESSAGEPACK);
        assert_eq!(decode::<Contact>(&bytes).unwrap(), contact);
        let (read, journeys) = contact_and_journeys(&bytes).unwrap();
        assert_eq!(read, contact);
        assert_eq!(journeys, [journey("welcome", 2)]);
    }

    #[test]
    fn an_inbox_value_holds_one_item_or_a_bundle() {
        let item = |n: usize| WorkItem::Refresh {
            contact_id: format!("c{n}"),
        };
        assert_eq!(work_items(&work_value(&[item(1)])).unwrap(), [item(1)]);
        // Bundles of every MessagePack array length form: fixarray, array 16, array 32.
        for size in [2, 15, 16, 70_000] {
            let items: Vec<WorkItem> = (0..size).map(item).collect();
            assert_eq!(work_items(&work_value(&items)).unwrap(), items, "{size}");
        }
        let error = work_items(&encode(&Vec::<WorkItem>::new())).unwrap_err();
        assert!(error.to_string().contains("holds no work"), "{error}");
    }

    #[test]
    fn every_inbox_sequence_reads_back_whatever_byte_it_starts_with() {
        // Sequence 123 is the MessagePack byte `{`: an earlier version read it as JSON and
        // refused to start.
        for sequence in [0, 1, 123, 127, 128, 255, 65_535, u64::MAX] {
            let bytes = event_value(&event(), Some(sequence));
            assert_eq!(decode::<Event>(&bytes).unwrap(), event());
            assert_eq!(
                event_sequence(&bytes).unwrap(),
                Some(sequence),
                "{sequence}"
            );
        }
        assert_eq!(event_sequence(&event_value(&event(), None)).unwrap(), None);
    }

    #[test]
    fn a_record_in_an_unknown_format_is_refused_by_name_not_guessed() {
        let mut bytes = encode(&event());
        for byte in [0u8, b'{', 2, 0x80, 0xff] {
            bytes[0] = byte;
            let error = decode::<Event>(&bytes).unwrap_err().to_string();
            assert!(error.contains(&format!("record format {byte} ")), "{error}");
        }
        assert!(decode::<Event>(&[]).is_err());
        assert!(decode::<Event>(&[MESSAGEPACK, 0x81]).is_err(), "truncated");
    }

    #[test]
    fn merging_replaces_a_journey_by_id_and_adds_new_ones() {
        let mut journeys = vec![journey("welcome", 1), journey("winback", 1)];
        merge_journeys(
            &mut journeys,
            &[journey("welcome", 2), journey("nurture", 1)],
        );
        assert_eq!(
            journeys,
            [
                journey("welcome", 2),
                journey("winback", 1),
                journey("nurture", 1)
            ]
        );
    }
}
