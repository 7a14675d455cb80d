//! Importing contacts: the whole file is read and checked first, so a file that cannot be
//! read (broken CSV quoting, rows of the wrong width, bytes that are not UTF-8) imports
//! nothing; then every good row is written as `POST /v1/contacts` would. A row that names a
//! contact an earlier row named (the same id, email or phone) updates it and is counted as a
//! duplicate. Bad rows are skipped and reported with their line numbers.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use super::Format;
use crate::model::{Attributes, ConsentState, Millis, Value};
use crate::store::{ContactUpsert, Store, StoreError};

/// Bad rows listed in a report; the rest are counted.
const LISTED: usize = 100;

/// A row that was not imported, and why.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BadRow {
    pub line: u64,
    pub message: String,
}

/// What an import did (or, on a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ImportReport {
    /// Rows read (lines with a contact; CSV's header is not one).
    pub rows: u64,
    pub created: u64,
    /// Rows that updated a contact, duplicates included.
    pub updated: u64,
    /// Rows naming a contact an earlier row of the file named.
    pub duplicates: u64,
    pub bad_rows: u64,
    /// The first bad rows, by line.
    pub errors: Vec<BadRow>,
    pub dry_run: bool,
}

impl ImportReport {
    fn bad(&mut self, row: BadRow) {
        self.bad_rows += 1;
        if self.errors.len() < LISTED {
            self.errors.push(row);
        }
    }
}

/// Why nothing was imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read as the format it claims: nothing was written.
    #[error("line {line}: {message}; nothing was imported")]
    Malformed { line: u64, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Import `bytes` as `format` into `store`; with `dry_run`, only check and count.
pub fn import(
    store: &dyn Store,
    format: Format,
    bytes: &[u8],
    dry_run: bool,
    now: Millis,
) -> Result<ImportReport, ImportError> {
    // First pass: read and check everything, write nothing.
    let mut checked = ImportReport {
        dry_run,
        ..ImportReport::default()
    };
    let mut seen: HashSet<String> = HashSet::new();
    let mut bad: HashSet<u64> = HashSet::new();
    let mut repeats: HashSet<u64> = HashSet::new();
    each_row(format, bytes, |line, row| {
        checked.rows += 1;
        match row.and_then(|upsert| upsert.identities().map_err(|e| e.to_string())) {
            Err(message) => {
                bad.insert(line);
                checked.bad(BadRow { line, message });
            }
            Ok(names) if names.is_empty() => {
                bad.insert(line);
                checked.bad(BadRow {
                    line,
                    message: "a row needs an `id`, `email` or `phone`".into(),
                });
            }
            Ok(names) => {
                let repeated = names.iter().any(|name| seen.contains(name));
                if repeated {
                    checked.duplicates += 1;
                    repeats.insert(line);
                }
                seen.extend(names);
            }
        }
    })?;
    if dry_run {
        return Ok(checked);
    }
    // Second pass: write each good row.
    let mut report = ImportReport {
        rows: checked.rows,
        duplicates: checked.duplicates,
        bad_rows: checked.bad_rows,
        errors: checked.errors,
        ..ImportReport::default()
    };
    let mut failure = None;
    let mut chunk = Vec::with_capacity(CHUNK);
    each_row(format, bytes, |line, row| {
        // A row found bad above is skipped here: counted once.
        let Ok(upsert) = row else { return };
        if failure.is_some() || bad.contains(&line) {
            return;
        }
        chunk.push((line, upsert));
        if chunk.len() == CHUNK {
            let rows = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            if let Err(error) = write(store, rows, &repeats, now, &mut report) {
                failure = Some(error);
            }
        }
    })?;
    if let Some(error) = failure {
        return Err(error.into());
    }
    write(store, chunk, &repeats, now, &mut report)?;
    report.errors.sort_by_key(|row| row.line);
    report.errors.dedup();
    report.errors.truncate(LISTED);
    store.flush()?;
    Ok(report)
}

/// Rows written in one write set.
const CHUNK: usize = 100;

/// Write `rows` (with their lines) in one write, counting each in `report`; a repeat (in
/// `repeats`) the store refuses is a bad row, no longer a duplicate.
fn write(
    store: &dyn Store,
    rows: Vec<(u64, ContactUpsert)>,
    repeats: &HashSet<u64>,
    now: Millis,
    report: &mut ImportReport,
) -> Result<(), StoreError> {
    let (lines, upserts): (Vec<u64>, Vec<ContactUpsert>) = rows.into_iter().unzip();
    for (line, answer) in lines.into_iter().zip(store.upsert_contacts(upserts, now)?) {
        match answer {
            Ok(done) if done.created => report.created += 1,
            Ok(_) => report.updated += 1,
            Err(refused) => {
                if repeats.contains(&line) {
                    report.duplicates -= 1;
                }
                report.bad(BadRow {
                    line,
                    message: refused.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Call `each` with every row's line and contact (or why the row is bad); `Err` when the file
/// itself cannot be read.
fn each_row(
    format: Format,
    bytes: &[u8],
    mut each: impl FnMut(u64, Result<ContactUpsert, String>),
) -> Result<(), ImportError> {
    match format {
        Format::Ndjson => {
            for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
                let line_number = n as u64 + 1;
                let text = std::str::from_utf8(line).map_err(|e| ImportError::Malformed {
                    line: line_number,
                    message: format!("not UTF-8 ({e})"),
                })?;
                let text = text.trim();
                if text.is_empty() {
                    continue;
                }
                each(line_number, ndjson_contact(text));
            }
            Ok(())
        }
        Format::Csv => csv_rows(bytes, each),
    }
}

/// Fields export writes that import does not take: the store keeps them itself.
const READ_ONLY: [&str; 9] = [
    "score",
    "scores",
    "rule_tags",
    "activity",
    "audience",
    "segments",
    "created_at",
    "updated_at",
    "anonymous",
];

/// One NDJSON line: the body of `POST /v1/contacts`, or a contact as export wrote it.
fn ndjson_contact(text: &str) -> Result<ContactUpsert, String> {
    let mut value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if let Some(object) = value.as_object_mut() {
        for field in READ_ONLY {
            object.remove(field);
        }
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// How each CSV column is read.
enum Column {
    Id,
    Tags,
    Stage,
    Timezone,
    Consent(String),
    Consents,
    Attributes,
    /// Written by export, not imported.
    ReadOnly,
    Attribute(String),
}

fn csv_rows(
    bytes: &[u8],
    mut each: impl FnMut(u64, Result<ContactUpsert, String>),
) -> Result<(), ImportError> {
    let malformed = |error: csv::Error| {
        let line = error.position().map_or(0, |p| p.line());
        let message = match error.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!("a row of {len} fields where the header has {expected_len}"),
            csv::ErrorKind::Utf8 { .. } => "not UTF-8".to_owned(),
            _ => error.to_string(),
        };
        ImportError::Malformed { line, message }
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(bytes);
    let headers = reader.headers().map_err(malformed)?.clone();
    let mut columns = Vec::with_capacity(headers.len());
    let mut names = HashSet::new();
    for name in &headers {
        let name = name.trim();
        if name.is_empty() || !names.insert(name.to_owned()) {
            return Err(ImportError::Malformed {
                line: 1,
                message: format!("the header has an empty or repeated column `{name}`"),
            });
        }
        columns.push(match name {
            "id" => Column::Id,
            "tags" => Column::Tags,
            "lifecycle_stage" => Column::Stage,
            "timezone" => Column::Timezone,
            "consents" => Column::Consents,
            "attributes" => Column::Attributes,
            read_only if READ_ONLY.contains(&read_only) => Column::ReadOnly,
            other => match other.strip_prefix("consent.") {
                Some(channel) => Column::Consent(channel.to_owned()),
                None => Column::Attribute(other.to_owned()),
            },
        });
    }
    // The reader takes a quote never closed as running to the end of the file: the last field
    // of the last record then holds a line break, and the file does not end with a quote.
    let mut last_spans_lines = None;
    for record in reader.records() {
        let record = record.map_err(malformed)?;
        let line = record.position().map_or(0, |p| p.line());
        last_spans_lines = record
            .get(record.len().saturating_sub(1))
            .is_some_and(|f| f.contains('\n'))
            .then_some(line);
        each(line, csv_contact(&columns, &record));
    }
    if let Some(line) = last_spans_lines
        && !bytes.trim_ascii_end().ends_with(b"\"")
    {
        return Err(ImportError::Malformed {
            line,
            message: "a quote opened on this line is never closed".into(),
        });
    }
    Ok(())
}

fn csv_contact(columns: &[Column], record: &csv::StringRecord) -> Result<ContactUpsert, String> {
    let mut upsert = ContactUpsert::default();
    for (column, cell) in columns.iter().zip(record) {
        let cell = unguarded(cell.trim());
        if cell.is_empty() {
            continue;
        }
        match column {
            Column::Id => upsert.id = Some(cell.to_owned()),
            Column::Tags => {
                upsert.tags = cell
                    .split(';')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
                    .collect();
            }
            Column::Stage => upsert.lifecycle_stage = Some(cell.to_owned()),
            Column::Timezone => upsert.timezone = Some(cell.to_owned()),
            Column::Consent(channel) => {
                let state = consent(cell).ok_or_else(|| {
                    format!(
                        "`consent.{channel}` is `granted`, `revoked` or `unknown`, not `{cell}`"
                    )
                })?;
                upsert.consents.insert(channel.clone(), state);
            }
            Column::Consents => {
                let consents: BTreeMap<String, ConsentState> = serde_json::from_str(cell)
                    .map_err(|e| format!("`consents` is a JSON object of consent states: {e}"))?;
                upsert.consents.extend(consents);
            }
            Column::Attributes => {
                let attributes: Attributes = serde_json::from_str(cell)
                    .map_err(|e| format!("`attributes` is a JSON object: {e}"))?;
                upsert.attributes.extend(attributes);
            }
            Column::ReadOnly => {}
            Column::Attribute(name) if name == "email" || name == "phone" => {
                upsert
                    .attributes
                    .insert(name.clone(), Value::Text(cell.to_owned()));
            }
            Column::Attribute(name) => {
                upsert.attributes.insert(name.clone(), inferred(cell));
            }
        }
    }
    Ok(upsert)
}

/// A cell export guarded against running as a spreadsheet formula, as it was.
fn unguarded(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(['=', '+', '-', '@', '\t', '\r']) => rest,
        _ => cell,
    }
}

fn consent(cell: &str) -> Option<ConsentState> {
    match cell.to_ascii_lowercase().as_str() {
        "granted" => Some(ConsentState::Granted),
        "revoked" => Some(ConsentState::Revoked),
        "unknown" => Some(ConsentState::Unknown),
        _ => None,
    }
}

/// A CSV cell as a value: a boolean, integer or number when written as one, else text. A
/// leading zero (`0123`, a zip code or an id) keeps it text.
fn inferred(cell: &str) -> Value {
    match cell {
        "true" => return Value::Boolean(true),
        "false" => return Value::Boolean(false),
        _ => {}
    }
    let digits = cell.strip_prefix('-').unwrap_or(cell);
    let (whole, fraction) = match digits.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (digits, None),
    };
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let numeric =
        plain(whole) && (whole == "0" || !whole.starts_with('0')) && fraction.is_none_or(plain);
    if numeric {
        if fraction.is_none()
            && let Ok(n) = cell.parse::<i64>()
        {
            return Value::Integer(n);
        }
        if let Ok(n) = cell.parse::<f64>() {
            return Value::Number(n);
        }
    }
    Value::Text(cell.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_read_as_numbers_only_when_written_as_numbers() {
        assert_eq!(inferred("500"), Value::Integer(500));
        assert_eq!(inferred("-4.5"), Value::Number(-4.5));
        assert_eq!(inferred("0"), Value::Integer(0));
        assert_eq!(inferred("true"), Value::Boolean(true));
        for text in ["0123", "1e5", "12a", "4.", ".5", "+86", "1.2.3", ""] {
            assert_eq!(inferred(text), Value::Text(text.into()), "{text}");
        }
    }
}
