//! Segments and tag rules as stored, each segment's members, and sweeps: work queued for many
//! contacts a page at a time (a definition's first look at everyone, a journey's backfill).

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::records::{AuditEntry, WorkItem};
use crate::model::{Audience, Millis};

/// What a definition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AudienceKind {
    /// A named set of contacts.
    Segment,
    /// A tag the rule adds while its condition holds and removes when it stops.
    Tag,
}

impl AudienceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AudienceKind::Segment => "segment",
            AudienceKind::Tag => "tag",
        }
    }
}

/// A segment or tag rule as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudienceRecord {
    pub kind: AudienceKind,
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The condition as written (checked by `audiences::condition` before it is stored).
    pub condition: serde_json::Value,
    #[serde(with = "crate::model::timestamp_json")]
    pub created_at: Millis,
    /// Random, given when the definition is made (kept when it changes): see
    /// [`Audience::segments`].
    pub generation: u64,
    #[serde(with = "crate::model::timestamp_json")]
    pub updated_at: Millis,
    pub revision: u32,
}

/// A contact's audience state as a batch left it (none: nothing is defined any more):
/// written as is, with its segments' member lists and its timer brought in line.
#[derive(Debug, Clone, PartialEq)]
pub struct AudienceWrite {
    pub contact_id: String,
    pub audience: Option<Audience>,
}

/// The work a sweep queues for each contact it passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum SweepWork {
    /// Look at the contact's segments and tags again (a definition changed).
    Refresh,
    /// Enroll the contact in a journey (a journey that starts from a segment, backfilled).
    Enroll { journey_id: String, version: u32 },
}

/// A sweep and where it stands. It goes through every contact (`segment` absent) or a
/// segment's members in id order; each page's work and the sweep's new position are written
/// together, so a sweep picks up after a crash where it stood, queuing nothing twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepRecord {
    pub id: String,
    pub work: SweepWork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// The last contact id passed; absent before the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Contacts passed so far.
    pub queued: u64,
    /// Most contacts queued per second.
    pub per_second: u32,
    #[serde(with = "crate::model::timestamp_json")]
    pub started_at: Millis,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::model::timestamp_json::option"
    )]
    pub finished_at: Option<Millis>,
}

/// One page of a segment's members, in id order.
#[derive(Debug, Clone, Serialize)]
pub struct MemberPage {
    pub members: Vec<String>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Segments, tag rules, members and sweeps in the store.
pub trait AudienceStore {
    /// Every segment and tag rule.
    fn audiences(&self) -> Result<Vec<AudienceRecord>, StoreError>;
    /// Create or replace a definition and start `sweep` (its first look at everyone), and
    /// record who did it. A segment made anew has no members left from one of its name before.
    fn put_audience(
        &self,
        record: &AudienceRecord,
        sweep: &SweepRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
    /// Delete a definition (and a segment's member list), start `sweep` if one is given (a
    /// look at everyone without it), and record who did it.
    fn delete_audience(
        &self,
        kind: AudienceKind,
        name: &str,
        sweep: Option<&SweepRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError>;
    /// A page of at most `limit` members of a segment after the id `after`.
    fn segment_members(
        &self,
        segment: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage, StoreError>;
    /// How many members a segment has.
    fn segment_size(&self, segment: &str) -> Result<u64, StoreError>;
    /// Every sweep, finished or not.
    fn sweeps(&self) -> Result<Vec<SweepRecord>, StoreError>;
    /// Start a sweep (a journey's backfill).
    fn start_sweep(&self, sweep: &SweepRecord) -> Result<(), StoreError>;
    /// The next at most `limit` contact ids the sweep passes.
    fn sweep_page(&self, sweep: &SweepRecord, limit: usize) -> Result<Vec<String>, StoreError>;
    /// Queue `items` (a record per partition: a bundle of the page's items there) and save the
    /// sweep as it stands after them, in one write, if the stored
    /// sweep stands where they begin; the partitions that got work, or `None` when it does not
    /// (another caller queued that page, or the sweep was started again) and nothing was written.
    fn sweep_step(
        &self,
        sweep: &SweepRecord,
        items: &[WorkItem],
    ) -> Result<Option<Vec<u8>>, StoreError>;
}
