//! Creating and updating contacts, one or many in one write. A contact is found by its id, else
//! by its normalised email or phone (the identity index), else made with a new id; an email or
//! phone that already belongs to another contact is refused. Many at once (an import) share
//! one write set and one pass through the locks, and a later one sees what an earlier one did.

use std::collections::HashMap;

use super::codec::{contact_and_journeys, contact_value, encode};
use super::layout::{TreeId, identity_key};
use super::records::{ContactJourney, WorkItem, partition_of};
use super::sled_store::{SledStore, backend, check_record, identities_in, lock, new_contact_id};
use super::write_set::WriteSet;
use super::{ContactUpsert, StoreError, Upserted};
use crate::model::{Contact, Millis};

/// What the upserts planned so far did to the identity index: an identity key given to a
/// contact (`Some`) or released by one that changed its email or phone (`None`), and each
/// planned contact's email and phone as they will be.
#[derive(Default)]
struct Claims {
    keys: HashMap<Vec<u8>, Option<String>>,
    identities: HashMap<String, (Option<String>, Option<String>)>,
}

/// An upsert with the contact it goes to.
struct Planned {
    id: String,
    upsert: ContactUpsert,
    email: Option<String>,
    phone: Option<String>,
    /// The id was made for it (its time and 80 random bits): no stored contact has it, and
    /// none was erased under it, so neither needs a read (an import of new contacts does
    /// without).
    fresh: bool,
}

impl SledStore {
    pub(super) fn upsert_many(
        &self,
        upserts: Vec<ContactUpsert>,
        now: Millis,
    ) -> Result<Vec<Result<Upserted, StoreError>>, StoreError> {
        // Only an email or phone reaches the identity index.
        let identified = upserts.iter().any(|upsert| {
            upsert.attributes.contains_key("email") || upsert.attributes.contains_key("phone")
        });
        let _identities = identified.then(|| lock(&self.locks.identities));
        // Which contact each goes to, as if the earlier ones were written already.
        let mut claimed = Claims::default();
        let plans: Vec<Result<Planned, StoreError>> = upserts
            .into_iter()
            .map(|upsert| self.plan(upsert, &mut claimed))
            .collect::<Result<_, _>>()?;
        let mut partitions: Vec<u8> = plans
            .iter()
            .filter_map(|plan| plan.as_ref().ok())
            .map(|plan| partition_of(&plan.id))
            .collect();
        partitions.sort_unstable();
        partitions.dedup();
        let _contacts = self.locks.partitions(&partitions);

        let mut writes = WriteSet::new(self);
        let mut values: HashMap<String, (Contact, Vec<ContactJourney>)> = HashMap::new();
        let mut answers = Vec::with_capacity(plans.len());
        for plan in plans {
            answers.push(match plan {
                Ok(plan) => self.apply(plan, &mut values, &mut writes, now)?,
                Err(refused) => Err(refused),
            });
        }
        // With segments or tag rules defined, or stage rules that read contacts, each contact
        // updated is looked at again by the journey worker, queued in the same write so a
        // crash cannot lose the look.
        let refresh = !self.audiences.is_empty()
            || (self.stages_read_contacts).load(std::sync::atomic::Ordering::SeqCst);
        for (id, (contact, journeys)) in &values {
            writes.put(
                TreeId::Contacts,
                id.as_bytes(),
                contact_value(contact, journeys),
            );
            if refresh {
                let item = WorkItem::Refresh {
                    contact_id: id.clone(),
                };
                writes.queue(partition_of(id), encode(&item))?;
            }
        }
        writes.apply()?;
        Ok(answers)
    }

    /// The contact `upsert` goes to, or why it is refused; `Err` outside only when the store
    /// cannot be read.
    fn plan(
        &self,
        upsert: ContactUpsert,
        claimed: &mut Claims,
    ) -> Result<Result<Planned, StoreError>, StoreError> {
        let checked = upsert
            .check()
            .and_then(|()| identities_in(&upsert.attributes));
        let (email, phone) = match checked {
            Ok(found) => found,
            Err(refused) => return Ok(Err(refused)),
        };
        let owner = |field: &str, value: &Option<String>| -> Result<Option<String>, StoreError> {
            let Some(value) = value else { return Ok(None) };
            let key = identity_key(field, value);
            if let Some(planned) = claimed.keys.get(&key) {
                return Ok(planned.clone());
            }
            Ok(self
                .identities
                .get(&key)
                .map_err(backend)?
                .map(|id| String::from_utf8_lossy(&id).into_owned()))
        };
        let (email_owner, phone_owner) = (owner("email", &email)?, owner("phone", &phone)?);
        let fresh = upsert.id.is_none() && email_owner.is_none() && phone_owner.is_none();
        let id = match (&upsert.id, &email_owner, &phone_owner) {
            (Some(id), _, _) => id.clone(),
            (None, Some(by_email), Some(by_phone)) if by_email != by_phone => {
                return Ok(Err(StoreError::IdentityConflict {
                    field: "phone",
                    value: phone.clone().unwrap_or_default(),
                    owner: by_phone.clone(),
                }));
            }
            (None, Some(found), _) | (None, None, Some(found)) => found.clone(),
            (None, None, None) => new_contact_id(),
        };
        for (field, value, found) in [
            ("email", &email, &email_owner),
            ("phone", &phone, &phone_owner),
        ] {
            if let (Some(value), Some(found)) = (value, found)
                && *found != id
            {
                return Ok(Err(StoreError::IdentityConflict {
                    field,
                    value: value.clone(),
                    owner: found.clone(),
                }));
            }
        }
        // The identities it will hold; one it changes is free for the ones after it. (Read
        // here for its email and phone only, which the identities lock holds still.)
        if email.is_none() && phone.is_none() {
            return Ok(Ok(Planned {
                id,
                upsert,
                email,
                phone,
                fresh,
            }));
        }
        let (old_email, old_phone) = match claimed.identities.get(&id) {
            Some(planned) => planned.clone(),
            None if fresh => (None, None),
            None => match self.contacts.get(&id).map_err(backend)? {
                Some(bytes) => {
                    let (contact, _) = contact_and_journeys(&bytes)?;
                    identities_in(&contact.attributes).unwrap_or_default()
                }
                None => (None, None),
            },
        };
        for (field, old, new) in [("email", &old_email, &email), ("phone", &old_phone, &phone)] {
            if let (Some(old), Some(new)) = (old, new)
                && old != new
            {
                claimed.keys.insert(identity_key(field, old), None);
            }
            if let Some(new) = new {
                claimed
                    .keys
                    .insert(identity_key(field, new), Some(id.clone()));
            }
        }
        claimed.identities.insert(
            id.clone(),
            (email.clone().or(old_email), phone.clone().or(old_phone)),
        );
        Ok(Ok(Planned {
            id,
            upsert,
            email,
            phone,
            fresh,
        }))
    }

    /// Apply one planned upsert to its contact as it stands in this write (or in the store).
    fn apply(
        &self,
        plan: Planned,
        values: &mut HashMap<String, (Contact, Vec<ContactJourney>)>,
        writes: &mut WriteSet<'_>,
        now: Millis,
    ) -> Result<Result<Upserted, StoreError>, StoreError> {
        let Planned {
            id,
            upsert,
            email,
            phone,
            fresh,
        } = plan;
        let current = match values.get(&id) {
            Some(value) => Some(value.clone()),
            None if fresh => None,
            None => match self.contacts.get(&id).map_err(backend)? {
                Some(bytes) => Some(contact_and_journeys(&bytes)?),
                None => None,
            },
        };
        let created = current.is_none();
        // An id erased once and now made again is a contact again: merges into it go ahead.
        if created && !fresh && !self.erased.is_empty() && self.was_erased(&id)? {
            writes.remove(TreeId::Erased, self.erased_key(&id));
        }
        let (mut contact, journeys) = current.unwrap_or_else(|| {
            let mut contact = Contact::new(id.clone(), now);
            contact.anonymous = upsert.anonymous;
            (contact, Vec::new())
        });
        let (old_email, old_phone) = identities_in(&contact.attributes).unwrap_or_default();
        upsert.apply(&mut contact, now);
        let value = contact_value(&contact, &journeys);
        if let Err(refused) = check_record(|| format!("contact `{id}`"), &value) {
            return Ok(Err(refused));
        }
        // Identity keys follow the contact: a changed email releases the old one.
        for (field, old, new) in [("email", &old_email, &email), ("phone", &old_phone, &phone)] {
            if let Some(old) = old
                && new.is_some()
                && Some(old) != new.as_ref()
            {
                writes.remove(TreeId::Identities, identity_key(field, old));
            }
            if let Some(new) = new {
                writes.put(
                    TreeId::Identities,
                    identity_key(field, new),
                    id.clone().into_bytes(),
                );
            }
        }
        values.insert(id, (contact.clone(), journeys));
        Ok(Ok(Upserted { contact, created }))
    }
}
