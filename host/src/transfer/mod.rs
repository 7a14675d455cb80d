//! Contacts in and out in bulk: import of a CSV or NDJSON file (checked whole before anything
//! is written, de-duplicated by id, email and phone, bad rows reported by line) and export as
//! either, streamed.
//!
//! The formats, one contact per row or line:
//! - NDJSON: each line the body of `POST /v1/contacts`; export writes each contact as the API
//!   shows it, which imports again.
//! - CSV, with a header: `id`, `email`, `phone`, `tags` (separated by `;`), `lifecycle_stage`,
//!   `timezone`, `consent.CHANNEL` (`granted`, `revoked`, `unknown`), `consents` and
//!   `attributes` (JSON objects); any other column is an attribute, read as a boolean, an
//!   integer or a number when it is written as one (`500`, `4.5`, `true`; `0123` stays text).
//!   `score`, `created_at` and `updated_at`, which export writes, are not imported (nor, in
//!   NDJSON, the model `scores`, lifecycle `activity` and segments' `audience` the store
//!   derives). An empty cell is no value.

mod export;
mod import;

pub use export::{ExportFormat, export};
pub use import::{BadRow, ImportError, ImportReport, import};

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
}
