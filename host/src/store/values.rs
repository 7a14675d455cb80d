//! The two values that carry more than their record. Each is the record's MessagePack value
//! followed by a second one, so a reader that wants only the record decodes the first and
//! stops, and a value written before the second existed reads as having none.
//!
//! - A contact is followed by its records of the journeys it entered: a step reads and writes
//!   both under one key instead of a contact plus a record per journey.
//! - An event is followed by the inbox sequence of the item that queued it, which tells the
//!   store at open whether an inbox item found beside a recorded event is that event's own
//!   (still to run) or one left by a duplicate whose ingest stopped half-way.

use std::io::Cursor;

use super::StoreError;
use super::records::ContactJourney;
use super::sled_store::{decode, encode};
use crate::model::{Contact, Event};

/// A contact's value: the contact, then its journeys.
pub(super) fn contact_value(contact: &Contact, journeys: &[ContactJourney]) -> Vec<u8> {
    let mut bytes = encode(contact);
    bytes.extend_from_slice(&encode(&journeys));
    bytes
}

/// The contact and its journeys from a contact's value.
pub(super) fn contact_and_journeys(
    bytes: &[u8],
) -> Result<(Contact, Vec<ContactJourney>), StoreError> {
    let (contact, rest) = first::<Contact>(bytes)?;
    let journeys = if rest.is_empty() {
        Vec::new()
    } else {
        decode(rest)?
    };
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

/// An event's value: the event, then the sequence of its inbox item.
pub(super) fn event_value(event: &Event, sequence: u64) -> Vec<u8> {
    let mut bytes = encode(event);
    bytes.extend_from_slice(&encode(&sequence));
    bytes
}

/// The inbox sequence an event's value names; `None` for one written before it did.
pub(super) fn event_sequence(bytes: &[u8]) -> Result<Option<u64>, StoreError> {
    let (_, rest) = first::<serde::de::IgnoredAny>(bytes)?;
    if rest.is_empty() {
        return Ok(None);
    }
    decode(rest).map(Some)
}

/// The first value of `bytes`, and what follows it. A value written as JSON by an early
/// version has nothing after it.
fn first<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), StoreError> {
    if bytes.first() == Some(&b'{') {
        return Ok((decode(bytes)?, &[]));
    }
    let mut reader = rmp_serde::Deserializer::new(Cursor::new(bytes));
    let value = T::deserialize(&mut reader)
        .map_err(|e| StoreError::Backend(format!("corrupt record: {e}")))?;
    let end = reader.position() as usize;
    Ok((value, &bytes[end..]))
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

    #[test]
    fn a_contact_reads_alone_or_with_its_journeys() {
        let contact = Contact::new("c1".into(), 5);
        let bytes = contact_value(&contact, &[journey("welcome", 2)]);
        assert_eq!(decode::<Contact>(&bytes).unwrap(), contact);
        let (read, journeys) = contact_and_journeys(&bytes).unwrap();
        assert_eq!(read, contact);
        assert_eq!(journeys, [journey("welcome", 2)]);
    }

    #[test]
    fn a_contact_written_before_journeys_moved_in_has_none() {
        let contact = Contact::new("c1".into(), 5);
        for bytes in [encode(&contact), serde_json::to_vec(&contact).unwrap()] {
            let (read, journeys) = contact_and_journeys(&bytes).unwrap();
            assert_eq!(read, contact);
            assert!(journeys.is_empty());
        }
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

    #[test]
    fn an_event_names_its_inbox_sequence_and_still_reads_as_the_event() {
        let event = Event {
            id: "e1".into(),
            contact_id: "c1".into(),
            name: "registered".into(),
            properties: Default::default(),
            timestamp: 7,
        };
        let bytes = event_value(&event, 42);
        assert_eq!(decode::<Event>(&bytes).unwrap(), event);
        assert_eq!(event_sequence(&bytes).unwrap(), Some(42));
        assert_eq!(event_sequence(&encode(&event)).unwrap(), None);
    }
}
