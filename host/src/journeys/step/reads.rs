//! What a batch has read, and its changes to those records: contacts, their journey records,
//! enrollments and events, each read from the store at most once per batch. Later steps of the
//! batch see the changes earlier ones made.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::model::{Contact, Event};
use crate::store::{ContactJourney, Enrollment, Store, StoreError};

pub(super) struct Reads<'a> {
    store: &'a dyn Store,
    contacts: HashMap<String, Option<Arc<Contact>>>,
    journeys: HashMap<String, HashMap<String, ContactJourney>>,
    changed_journeys: BTreeSet<(String, String)>,
    enrollments: HashMap<String, Enrollment>,
    changed_enrollments: BTreeSet<String>,
    events: HashMap<String, Option<Arc<Event>>>,
}

impl<'a> Reads<'a> {
    pub(super) fn new(store: &'a dyn Store) -> Self {
        Reads {
            store,
            contacts: HashMap::new(),
            journeys: HashMap::new(),
            changed_journeys: BTreeSet::new(),
            enrollments: HashMap::new(),
            changed_enrollments: BTreeSet::new(),
            events: HashMap::new(),
        }
    }

    pub(super) fn contact(&mut self, id: &str) -> Result<Option<Arc<Contact>>, StoreError> {
        if !self.contacts.contains_key(id) {
            self.load_contact(id)?;
        }
        Ok(self.contacts[id].clone())
    }

    /// The contact as the batch has changed it so far, to change it further.
    pub(super) fn contact_mut(&mut self, id: &str) -> Option<&mut Contact> {
        self.contacts
            .get_mut(id)
            .and_then(Option::as_mut)
            .map(Arc::make_mut)
    }

    /// Read a contact and its journeys, which the store keeps together. Whichever of the two
    /// the batch already holds is kept: the batch may have changed it.
    fn load_contact(&mut self, id: &str) -> Result<(), StoreError> {
        let (contact, journeys) = match self.store.contact_with_journeys(id)? {
            Some((contact, journeys)) => (Some(Arc::new(contact)), journeys),
            None => (None, Vec::new()),
        };
        self.contacts.entry(id.to_owned()).or_insert(contact);
        self.journeys.entry(id.to_owned()).or_insert_with(|| {
            journeys
                .into_iter()
                .map(|record| (record.journey_id.clone(), record))
                .collect()
        });
        Ok(())
    }

    /// The contact's records of the journeys they entered.
    pub(super) fn journeys_of(
        &mut self,
        contact_id: &str,
    ) -> Result<&HashMap<String, ContactJourney>, StoreError> {
        if !self.journeys.contains_key(contact_id) {
            self.load_contact(contact_id)?;
        }
        Ok(&self.journeys[contact_id])
    }

    /// The contact's record of one journey, to change (created when new).
    pub(super) fn journey_record(
        &mut self,
        contact_id: &str,
        journey_id: &str,
    ) -> Result<&mut ContactJourney, StoreError> {
        if !self.journeys.contains_key(contact_id) {
            self.load_contact(contact_id)?;
        }
        self.changed_journeys
            .insert((contact_id.to_owned(), journey_id.to_owned()));
        Ok(self
            .journeys
            .get_mut(contact_id)
            .expect("loaded")
            .entry(journey_id.to_owned())
            .or_insert_with(|| ContactJourney {
                contact_id: contact_id.to_owned(),
                journey_id: journey_id.to_owned(),
                ..ContactJourney::default()
            }))
    }

    pub(super) fn enrollment(&mut self, id: &str) -> Result<Option<Enrollment>, StoreError> {
        if let Some(found) = self.enrollments.get(id) {
            return Ok(Some(found.clone()));
        }
        let found = self.store.enrollment(id)?;
        if let Some(found) = &found {
            self.enrollments.insert(id.to_owned(), found.clone());
        }
        Ok(found)
    }

    /// Keep the enrollment's new state for the commit; one that left the journey no longer
    /// counts as active for its contact (re-entry rules read that list).
    pub(super) fn save(&mut self, enrollment: Enrollment) -> Result<(), StoreError> {
        debug_assert!(
            enrollment.state != crate::store::State::Running,
            "a step leaves no enrollment running"
        );
        if !enrollment.state.is_active() {
            let record = self.journey_record(&enrollment.contact_id, &enrollment.journey_id)?;
            record.active.retain(|id| *id != enrollment.id);
        }
        self.changed_enrollments.insert(enrollment.id.clone());
        self.enrollments.insert(enrollment.id.clone(), enrollment);
        Ok(())
    }

    pub(super) fn event(&mut self, id: &str) -> Result<Option<Arc<Event>>, StoreError> {
        if !self.events.contains_key(id) {
            let found = self.store.event(id)?.map(Arc::new);
            self.events.insert(id.to_owned(), found);
        }
        Ok(self.events[id].clone())
    }

    /// An event the batch already holds (carried by its inbox item), so it is not read back.
    pub(super) fn remember(&mut self, event: Arc<Event>) {
        self.events.insert(event.id.clone(), Some(event));
    }

    /// The records the batch changed.
    pub(super) fn into_changed(mut self) -> (Vec<Enrollment>, Vec<ContactJourney>) {
        let enrollments = self
            .changed_enrollments
            .iter()
            .filter_map(|id| self.enrollments.remove(id))
            .collect();
        let journeys = self
            .changed_journeys
            .iter()
            .filter_map(|(contact, journey)| {
                self.journeys
                    .get_mut(contact)
                    .and_then(|all| all.remove(journey))
            })
            .collect();
        (enrollments, journeys)
    }
}
