//! Finding contacts: by email or phone through the identity index (one read), by tag or
//! attribute value by walking the contacts in id order, a bounded stretch per page.

use serde::Serialize;

use super::codec::decode;
use super::layout::identity_key;
use super::sled_store::{SledStore, backend};
use super::{StoreError, identity};
use crate::model::{Contact, Value};

/// What to find; every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct ContactQuery {
    pub email: Option<String>,
    pub phone: Option<String>,
    pub tag: Option<String>,
    /// An attribute and the value it must have (as text: `pro`, `500`, `true`; a list of text
    /// matches when it holds the value).
    pub attribute: Option<(String, String)>,
    /// The `next` of the page before: contacts after this id.
    pub after: Option<String>,
    pub limit: usize,
}

/// One page of found contacts (as stored, or as the API shows them).
#[derive(Debug, Clone, Serialize)]
pub struct ContactPage<C = Contact> {
    pub contacts: Vec<C>,
    /// Pass as `after` to go on; absent when every contact has been looked at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Contacts looked at for this page.
    pub scanned: usize,
}

/// Most contacts one page looks at: a page of a search by tag or attribute over a large store
/// ends here, with `next`, so no request walks the whole store.
pub const MAX_SCANNED: usize = 50_000;

impl SledStore {
    pub(super) fn find_contacts(&self, query: &ContactQuery) -> Result<ContactPage, StoreError> {
        let identity = match (&query.email, &query.phone) {
            (Some(email), _) => Some((
                "email",
                identity::normalize_email(email).unwrap_or_else(|| email.clone()),
            )),
            (None, Some(phone)) => Some((
                "phone",
                identity::normalize_phone(phone).unwrap_or_else(|| phone.clone()),
            )),
            (None, None) => None,
        };
        if let Some((field, value)) = identity {
            let owner = self
                .identities
                .get(identity_key(field, &value))
                .map_err(backend)?;
            let found = match owner {
                Some(id) => self.contact_by_id(&String::from_utf8_lossy(&id))?,
                None => None,
            };
            let contacts = found
                .filter(|c| matches(c, query) && query.after.as_deref() < Some(c.id.as_str()))
                .into_iter()
                .collect();
            return Ok(ContactPage {
                contacts,
                next: None,
                scanned: 1,
            });
        }
        let mut page = ContactPage {
            contacts: Vec::new(),
            next: None,
            scanned: 0,
        };
        let start = match &query.after {
            Some(after) => {
                let mut key = after.as_bytes().to_vec();
                key.push(0);
                key
            }
            None => Vec::new(),
        };
        let mut last = None;
        for entry in self.contacts.range(start..) {
            let (key, value) = entry.map_err(backend)?;
            if page.contacts.len() == query.limit || page.scanned == MAX_SCANNED {
                // More may follow: from the last one looked at.
                page.next = last;
                break;
            }
            page.scanned += 1;
            let contact: Contact = decode(&value)?;
            last = Some(String::from_utf8_lossy(&key).into_owned());
            if matches(&contact, query) {
                page.contacts.push(contact);
            }
        }
        Ok(page)
    }

    fn contact_by_id(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        match self.contacts.get(id).map_err(backend)? {
            Some(bytes) => Ok(Some(decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

fn matches(contact: &Contact, query: &ContactQuery) -> bool {
    let tagged = query
        .tag
        .as_ref()
        .is_none_or(|tag| contact.tags.contains(tag));
    let valued =
        query
            .attribute
            .as_ref()
            .is_none_or(|(name, wanted)| match contact.attributes.get(name) {
                Some(Value::Text(text)) => text == wanted,
                Some(Value::TextList(list)) => list.contains(wanted),
                Some(Value::Boolean(flag)) => flag.to_string() == *wanted,
                Some(Value::Integer(n)) => n.to_string() == *wanted,
                Some(Value::Number(n)) => wanted.parse::<f64>().is_ok_and(|w| w == *n),
                Some(Value::Timestamp(ms)) => crate::model::format_timestamp(*ms) == *wanted,
                None => false,
            });
    tagged && valued
}
