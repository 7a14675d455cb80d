//! Exporting contacts: every contact in id order, a page at a time from the store, each page
//! rendered and handed on before the next is read, so an export of any size holds one page.
//! Each contact is written as it stands at the export (see [`Standing`]): scores decayed to
//! then, the segments it is in.

use crate::model::{Contact, Value};
use crate::standing::Standing;
use crate::store::{ContactQuery, Store, StoreError};

/// How an export is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Ndjson,
}

/// Contacts read from the store per chunk handed on.
const PAGE: usize = 1_000;

const CSV_COLUMNS: [&str; 13] = [
    "id",
    "email",
    "phone",
    "tags",
    "lifecycle_stage",
    "timezone",
    "score",
    "scores",
    "segments",
    "created_at",
    "updated_at",
    "consents",
    "attributes",
];

/// Write every contact as `format`, as `standing` makes it, a chunk of bytes at a time to
/// `out`, which returns false to stop (the reader went away). The number of contacts written.
pub fn export(
    store: &dyn Store,
    format: ExportFormat,
    standing: impl Fn(Contact) -> Standing,
    mut out: impl FnMut(Vec<u8>) -> bool,
) -> Result<u64, StoreError> {
    let mut written = 0;
    if format == ExportFormat::Csv && !out(csv_lines([CSV_COLUMNS.map(str::to_owned)])) {
        return Ok(0);
    }
    let mut after = None;
    loop {
        let page = store.search_contacts(&ContactQuery {
            after: after.take(),
            limit: PAGE,
            ..ContactQuery::default()
        })?;
        let count = page.contacts.len() as u64;
        let standings = page.contacts.into_iter().map(&standing);
        let chunk = match format {
            ExportFormat::Ndjson => {
                let mut chunk = Vec::with_capacity(count as usize * 256);
                for contact in standings {
                    serde_json::to_writer(&mut chunk, &contact).expect("contacts serialize");
                    chunk.push(b'\n');
                }
                chunk
            }
            ExportFormat::Csv => csv_lines(standings.map(|s| csv_fields(&s))),
        };
        written += count;
        if !chunk.is_empty() && !out(chunk) {
            return Ok(written);
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(written),
        }
    }
}

fn csv_fields(standing: &Standing) -> [String; 13] {
    let contact = &standing.contact;
    let text = |name: &str| match contact.attributes.get(name) {
        Some(Value::Text(text)) => text.clone(),
        _ => String::new(),
    };
    let rest: crate::model::Attributes = contact
        .attributes
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "email" | "phone"))
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    [
        guarded(&contact.id, false),
        guarded(&text("email"), false),
        guarded(&text("phone"), true),
        guarded(&contact.tags.join(";"), false),
        guarded(&contact.lifecycle_stage, false),
        guarded(&contact.timezone, false),
        contact.score.to_string(),
        serde_json::to_string(&standing.points()).expect("scores serialize"),
        guarded(&standing.segments.join(";"), false),
        crate::model::format_timestamp(contact.created_at),
        crate::model::format_timestamp(contact.updated_at),
        serde_json::to_string(&contact.consents).expect("consents serialize"),
        serde_json::to_string(&rest).expect("attributes serialize"),
    ]
}

/// A text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, a tab or a carriage
/// return first) behind a `'`, which import takes off again. A phone's leading `+` is a
/// phone's, and stays.
fn guarded(cell: &str, phone: bool) -> String {
    let risky = match cell.as_bytes().first() {
        Some(b'=' | b'@' | b'\t' | b'\r') => true,
        Some(b'+' | b'-') => !phone,
        _ => false,
    };
    if risky {
        format!("'{cell}")
    } else {
        cell.to_owned()
    }
}

fn csv_lines(rows: impl IntoIterator<Item = [String; 13]>) -> Vec<u8> {
    let mut writer = csv::Writer::from_writer(Vec::with_capacity(64 << 10));
    for row in rows {
        writer.write_record(&row).expect("writing to memory");
    }
    writer.into_inner().expect("writing to memory")
}
