//! The store's layout on disk: the trees, the shape of their keys, and how large a value may
//! be. Values that are records are written by `codec`; the others are raw bytes described here.
//!
//! This is layout 3: the trees and records of layout 2 in a sled database of 8 MiB segments
//! (see [`SEGMENT_BYTES`]). A store in layout 2 (16 MiB segments) is copied into layout 3 when
//! it is opened (see `relayout`); one in layout 1 (earlier versions, records without a format
//! byte) is converted (see `legacy`).

use super::StoreError;
use super::records::{CounterKey, PARTITIONS};
use crate::model::Millis;

/// Tree names, fixed on disk.
pub(super) mod trees {
    /// contact id → contact, then its records of the journeys it entered (`codec`).
    pub const CONTACTS: &str = "contacts";
    /// `email:<normalised>` or `phone:<normalised>` → contact id.
    pub const IDENTITIES: &str = "identities";
    /// event id → event, then the sequence of the inbox item that queued it (`codec`); an id
    /// present here has been recorded.
    pub const EVENTS: &str = "events";
    /// `<plugin name>\0<key>` → value: the plugins' private key-value spaces.
    pub const PLUGIN_KV: &str = "plugin_kv";
    /// plugin name → keys it holds, then bytes it holds (two u64 big-endian), kept with every
    /// write.
    pub const PLUGIN_KV_USAGE: &str = "plugin_kv_usage";
    /// journey id → journey record.
    pub const JOURNEYS: &str = "journeys";
    /// `<journey id>\0<version u32 BE>` → published version, never rewritten.
    pub const JOURNEY_VERSIONS: &str = "journey_versions";
    /// `<partition u8><sequence u64 BE>` → work item: the journeys' durable inbox.
    pub const INBOX: &str = "inbox";
    /// `<id u64 BE>` → a record that could not be used, set aside with why.
    pub const DEAD_LETTERS: &str = "dead_letters";
    /// `<journey id>\0<request id>` → contact id: API enrollments already queued.
    pub const ENROLL_REQUESTS: &str = "enroll_requests";
    /// `<due_at as ordered u64 BE><enrollment id>` → contact id, scanned in due order.
    pub const TIMERS: &str = "timers";
    /// enrollment id → enrollment.
    pub const ENROLLMENTS: &str = "enrollments";
    /// `<contact id>\0<sequence u64 BE>` → message waiting for its channel.
    pub const OUTBOX: &str = "outbox";
    /// `<journey id>\0<version u32 BE><node>\0<metric>\xff<shard u8>` → count (i64 BE): one
    /// count per shard, each written by one writer at a time.
    pub const COUNTERS: &str = "counters";
    /// `<id u64 BE><chunk u32 BE><chunks u32 BE>` → a write set being applied (`write_set`).
    pub const INTENTS: &str = "intents";
    /// `<at ms, ordered u64 BE><id u64 BE>` → a change an operator made, in the order made.
    pub const AUDIT: &str = "audit";
    /// `layout` → the layout version (u32 BE).
    pub const META: &str = "meta";
    /// contact id → the id of the contact it was merged into.
    pub const ALIASES: &str = "aliases";
    /// channel name → its binding: plugin, config, approved hosts, sealed secrets, rate.
    pub const CHANNELS: &str = "channels";
    /// `<template name>\0<version u32 BE>` → a template version, never rewritten.
    pub const TEMPLATES: &str = "templates";
    /// message id → its key in the outbox.
    pub const MESSAGE_IDS: &str = "message_ids";
    /// `<due_at as ordered u64 BE><message id>` → nothing: messages waiting for a delivery
    /// attempt, scanned in due order.
    pub const DELIVERIES: &str = "deliveries";
    /// `<channel>\0<address>` → why nothing more is sent there (a bounce, a complaint).
    pub const SUPPRESSIONS: &str = "suppressions";
    /// channel name → the sends its rate window remembers (see `messaging::rate`), so a
    /// restart or a new binding does not forget them.
    pub const SEND_WINDOWS: &str = "send_windows";
    /// token id → the token's record: its name, role, grants and hash (never the token).
    pub const TOKENS: &str = "tokens";
    /// `name@version` → an uploaded plugin's record (who uploaded it, when, its sha256).
    pub const PLUGINS: &str = "plugins";
    /// `name@version\0<chunk index, u32 BE>` → a piece of that plugin's binary.
    pub const PLUGIN_BINARIES: &str = "plugin_binaries";
    /// `workspace` → the workspace settings (content approval, control group); `lifecycle` →
    /// the lifecycle stage rules.
    pub const SETTINGS: &str = "settings";
    /// `<contact id>\0<timestamp, ordered u64 BE><event id>` → nothing: each contact's events
    /// in time order, written when the event is processed.
    pub const CONTACT_EVENTS: &str = "contact_events";
    /// SHA-256 of the store's erasure salt and an erased contact's id → nothing: so that a
    /// merge queued before the erasure does not bring the contact back; removed when a
    /// contact is made again under that id. Never the id itself.
    pub const ERASED: &str = "erased";
    /// model name → a scoring model: its scorer plugin, config, events, decay, thresholds.
    pub const SCORING_MODELS: &str = "scoring_models";
    /// `<contact id>\0<at, ordered u64 BE><source>` → the changes of the contact's scores that
    /// one event or journey step made, with their reasons.
    pub const SCORE_HISTORY: &str = "score_history";
    /// `segment:<name>` or `tag:<name>` → a segment or tag rule: its condition.
    pub const AUDIENCES: &str = "audiences";
    /// `<segment>\0<contact id>` → nothing: each segment's members, in id order.
    pub const SEGMENT_MEMBERS: &str = "segment_members";
    /// sweep id → a sweep over contacts or a segment's members that queues work for each,
    /// a page at a time, with where it stands (`audiences::sweeps`).
    pub const SWEEPS: &str = "sweeps";
    /// In `meta`: 16 random bytes the `erased` keys are made with, so that they match no
    /// hash of a guessed id made elsewhere.
    pub const ERASURE_SALT: &str = "erasure_salt";
}

/// The layout this version writes.
pub(super) const LAYOUT: u32 = 3;

/// Layouts whose trees and records are this one's: a backup of one restores as it is.
pub(super) const SAME_RECORDS: [u32; 2] = [2, LAYOUT];

/// The trees a write set may touch, by a code fixed on disk (intents store it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub(super) enum TreeId {
    Contacts = 0,
    Identities = 1,
    Events = 2,
    PluginKv = 3,
    PluginKvUsage = 4,
    Journeys = 5,
    JourneyVersions = 6,
    Inbox = 7,
    DeadLetters = 8,
    EnrollRequests = 9,
    Timers = 10,
    Enrollments = 11,
    Outbox = 12,
    Counters = 13,
    Audit = 14,
    Aliases = 15,
    Channels = 16,
    Templates = 17,
    MessageIds = 18,
    Deliveries = 19,
    Suppressions = 20,
    SendWindows = 21,
    Tokens = 22,
    Plugins = 23,
    PluginBinaries = 24,
    Settings = 25,
    ContactEvents = 26,
    Erased = 27,
    ScoringModels = 28,
    ScoreHistory = 29,
    Audiences = 30,
    SegmentMembers = 31,
    Sweeps = 32,
}

impl TreeId {
    pub(super) const ALL: [TreeId; 33] = [
        TreeId::Contacts,
        TreeId::Identities,
        TreeId::Events,
        TreeId::PluginKv,
        TreeId::PluginKvUsage,
        TreeId::Journeys,
        TreeId::JourneyVersions,
        TreeId::Inbox,
        TreeId::DeadLetters,
        TreeId::EnrollRequests,
        TreeId::Timers,
        TreeId::Enrollments,
        TreeId::Outbox,
        TreeId::Counters,
        TreeId::Audit,
        TreeId::Aliases,
        TreeId::Channels,
        TreeId::Templates,
        TreeId::MessageIds,
        TreeId::Deliveries,
        TreeId::Suppressions,
        TreeId::SendWindows,
        TreeId::Tokens,
        TreeId::Plugins,
        TreeId::PluginBinaries,
        TreeId::Settings,
        TreeId::ContactEvents,
        TreeId::Erased,
        TreeId::ScoringModels,
        TreeId::ScoreHistory,
        TreeId::Audiences,
        TreeId::SegmentMembers,
        TreeId::Sweeps,
    ];

    pub(super) fn from_code(code: u8) -> Option<TreeId> {
        TreeId::ALL.get(code as usize).copied()
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            TreeId::Contacts => trees::CONTACTS,
            TreeId::Identities => trees::IDENTITIES,
            TreeId::Events => trees::EVENTS,
            TreeId::PluginKv => trees::PLUGIN_KV,
            TreeId::PluginKvUsage => trees::PLUGIN_KV_USAGE,
            TreeId::Journeys => trees::JOURNEYS,
            TreeId::JourneyVersions => trees::JOURNEY_VERSIONS,
            TreeId::Inbox => trees::INBOX,
            TreeId::DeadLetters => trees::DEAD_LETTERS,
            TreeId::EnrollRequests => trees::ENROLL_REQUESTS,
            TreeId::Timers => trees::TIMERS,
            TreeId::Enrollments => trees::ENROLLMENTS,
            TreeId::Outbox => trees::OUTBOX,
            TreeId::Counters => trees::COUNTERS,
            TreeId::Audit => trees::AUDIT,
            TreeId::Aliases => trees::ALIASES,
            TreeId::Channels => trees::CHANNELS,
            TreeId::Templates => trees::TEMPLATES,
            TreeId::MessageIds => trees::MESSAGE_IDS,
            TreeId::Deliveries => trees::DELIVERIES,
            TreeId::Suppressions => trees::SUPPRESSIONS,
            TreeId::SendWindows => trees::SEND_WINDOWS,
            TreeId::Tokens => trees::TOKENS,
            TreeId::Plugins => trees::PLUGINS,
            TreeId::PluginBinaries => trees::PLUGIN_BINARIES,
            TreeId::Settings => trees::SETTINGS,
            TreeId::ContactEvents => trees::CONTACT_EVENTS,
            TreeId::Erased => trees::ERASED,
            TreeId::ScoringModels => trees::SCORING_MODELS,
            TreeId::ScoreHistory => trees::SCORE_HISTORY,
            TreeId::Audiences => trees::AUDIENCES,
            TreeId::SegmentMembers => trees::SEGMENT_MEMBERS,
            TreeId::Sweeps => trees::SWEEPS,
        }
    }

    /// Whether writers read keys of this tree back through a write set before applying it.
    /// The others (a contact, an enrollment, an inbox item) are written once per set, so their
    /// keys need not be remembered.
    pub(super) fn read_back(self) -> bool {
        matches!(
            self,
            TreeId::Identities
                | TreeId::Events
                | TreeId::Outbox
                | TreeId::Suppressions
                | TreeId::PluginKv
                | TreeId::PluginKvUsage
                | TreeId::Counters
        )
    }
}

/// sled's segments in layout 3.
///
/// Not larger: sled 0.34.7 keeps an IO buffer's fill offset in the low 24 bits of its header,
/// above which sit the count of writers still copying into it. It accepts segments of up to
/// 16 MiB (2^24), so with 16 MiB segments (layout 2) a write that fills a segment's buffer to
/// its last byte carries into the writer count: the buffer then waits for ever for a writer who
/// does not exist, is never written, and every later flush, and every read of a page written
/// after it, waits for ever too (a 1,000,000-contact import wedged so one time in eight or so;
/// a loop of small inserts into sled alone, within 3 to 8 million). At 8 MiB a buffer's offset
/// never reaches 2^24.
///
/// Not smaller: sled writes anything it logs that is larger than a quarter of a segment (a
/// value, or a whole leaf of up to ~17 values when it rewrites one) to a file of its own, and
/// never syncs those files: a power cut could lose a value it had acknowledged. A quarter of
/// 8 MiB is 2 MiB, which 21 values of at most [`MAX_STORED_BYTES`] do not reach.
pub(super) const SEGMENT_BYTES: usize = 8 << 20;

const _: () = assert!(
    SEGMENT_BYTES < 1 << 24,
    "sled 0.34 loses a buffer that fills 2^24 bytes"
);
const _: () = assert!(21 * (MAX_STORED_BYTES + MAX_KEY_BYTES) < SEGMENT_BYTES / 4);

/// sled's segments in layout 2, which a store of layout 2 must be opened with to be copied.
pub(super) const LAYOUT_2_SEGMENT_BYTES: usize = 16 << 20;

/// The largest value any tree holds, enforced on every write. Records are kept well below it by
/// their own limits (a contact, an event, a journey definition: [`MAX_RECORD_BYTES`]), so this
/// is a backstop that fails a write with a clear error rather than let sled write a blob.
pub const MAX_STORED_BYTES: usize = 96 << 10;

/// The largest record a caller may store: a contact with its journeys, an event, a journey
/// draft or version, an enrollment, a message. Callers check it and refuse with their own
/// error; the store refuses anything past [`MAX_STORED_BYTES`].
pub const MAX_RECORD_BYTES: usize = 64 << 10;

/// Refuse a value no tree may hold.
pub(super) fn check_size(tree: TreeId, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_STORED_BYTES || key.len() > MAX_KEY_BYTES {
        return Err(StoreError::TooLarge {
            what: format!("a value in `{}`", tree.name()),
            size: value.len().max(key.len()),
            limit: MAX_STORED_BYTES,
        });
    }
    Ok(())
}

/// The longest key: ids are at most 256 bytes, plugin keys 512 plus the plugin's name.
pub(super) const MAX_KEY_BYTES: usize = 1 << 10;

/// The sequence an inbox key carries after its partition.
pub(super) fn inbox_sequence(key: &[u8]) -> u64 {
    key.get(1..9)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// An inbox key: the partition first, so a worker scans only its own.
pub(super) fn inbox_key(partition: u8, sequence: u64) -> [u8; 9] {
    debug_assert!(partition < PARTITIONS);
    let mut key = [0u8; 9];
    key[0] = partition;
    key[1..].copy_from_slice(&sequence.to_be_bytes());
    key
}

pub(super) fn identity_key(field: &str, value: &str) -> Vec<u8> {
    format!("{field}:{value}").into_bytes()
}

/// Plugin names never contain NUL (the registry checks them), so `name\0key` cannot collide
/// across plugins.
pub(super) fn kv_key(namespace: &str, key: &str) -> Vec<u8> {
    pair_key(namespace, key)
}

/// Keys and bytes a plugin's space holds, as kept in `plugin_kv_usage`.
pub(super) fn kv_usage(bytes: Option<&[u8]>) -> (u64, u64) {
    let word = |range: std::ops::Range<usize>| {
        bytes
            .and_then(|b| b.get(range))
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    };
    (word(0..8), word(8..16))
}

pub(super) fn kv_usage_value(keys: u64, bytes: u64) -> Vec<u8> {
    let mut value = keys.to_be_bytes().to_vec();
    value.extend_from_slice(&bytes.to_be_bytes());
    value
}

/// Times sort as unsigned big-endian: flip the sign bit so negative times order first.
/// A contact's key in `contact_events` for an event at `at`: the contact's [`prefix`], then
/// the cursor a page of its events continues from.
pub(super) fn contact_event_key(contact_id: &str, at: Millis, event_id: &str) -> Vec<u8> {
    let mut key = prefix(contact_id);
    key.extend_from_slice(&ordered_time(at));
    key.extend_from_slice(event_id.as_bytes());
    key
}

/// A score change's key: the contact's changes in time order.
pub(super) fn score_key(contact_id: &str, at: Millis, source: &str) -> Vec<u8> {
    contact_event_key(contact_id, at, source)
}

pub(super) fn ordered_time(at: Millis) -> [u8; 8] {
    ((at as u64) ^ (1 << 63)).to_be_bytes()
}

/// The time at the start of `bytes`; the earliest time if there are fewer than 8 (a malformed
/// key sorts first and is dealt with first).
pub(super) fn time_from_ordered(bytes: &[u8]) -> Millis {
    match bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
        Some(due) => (u64::from_be_bytes(due) ^ (1 << 63)) as Millis,
        None => Millis::MIN,
    }
}

/// Timers sort by due time, then enrollment.
pub(super) fn timer_key(due_at: Millis, enrollment_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + enrollment_id.len());
    key.extend_from_slice(&ordered_time(due_at));
    key.extend_from_slice(enrollment_id.as_bytes());
    key
}

pub(super) fn timer_due(key: &[u8]) -> Millis {
    time_from_ordered(key)
}

pub(super) fn pair_key(a: &str, b: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(a.len() + 1 + b.len());
    key.extend_from_slice(a.as_bytes());
    key.push(0);
    key.extend_from_slice(b.as_bytes());
    key
}

pub(super) fn prefix(a: &str) -> Vec<u8> {
    let mut key = a.as_bytes().to_vec();
    key.push(0);
    key
}

pub(super) fn version_key(journey_id: &str, version: u32) -> Vec<u8> {
    let mut key = prefix(journey_id);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// A counter's key in one shard. `0xff` never occurs in UTF-8, so the suffix cannot be mistaken
/// for part of the metric.
pub(super) fn counter_key(key: &CounterKey, shard: u8) -> Vec<u8> {
    let mut bytes = version_key(&key.journey_id, key.version);
    bytes.extend_from_slice(key.node.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.metric.as_bytes());
    bytes.extend_from_slice(&[0xff, shard]);
    bytes
}

pub(super) fn parse_counter_key(journey_id: &str, bytes: &[u8]) -> Option<CounterKey> {
    let bytes = match bytes {
        [rest @ .., 0xff, _shard] => rest,
        unsharded => unsharded,
    };
    let rest = bytes.get(journey_id.len() + 1..)?;
    let version = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    let (node, metric) = std::str::from_utf8(&rest[4..]).ok()?.split_once('\0')?;
    Some(CounterKey {
        journey_id: journey_id.to_owned(),
        version,
        node: node.to_owned(),
        metric: metric.to_owned(),
    })
}

pub(super) fn read_count(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes.try_into().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_order_by_due_time_including_before_1970() {
        let mut keys = [
            timer_key(5, "a"),
            timer_key(-5, "b"),
            timer_key(1_800_000_000_000, "c"),
            timer_key(0, "d"),
        ];
        keys.sort();
        let dues: Vec<_> = keys.iter().map(|k| timer_due(k)).collect();
        assert_eq!(dues, [-5, 0, 5, 1_800_000_000_000]);
    }

    #[test]
    fn counter_keys_round_trip() {
        let key = CounterKey {
            journey_id: "welcome".into(),
            version: 3,
            node: "opened?".into(),
            metric: "passed:event".into(),
        };
        assert_eq!(
            parse_counter_key("welcome", &counter_key(&key, 7)),
            Some(key.clone())
        );
        let mut unsharded = counter_key(&key, 0);
        unsharded.truncate(unsharded.len() - 2);
        assert_eq!(parse_counter_key("welcome", &unsharded), Some(key));
    }

    #[test]
    fn tree_codes_are_their_positions() {
        for (code, tree) in TreeId::ALL.iter().enumerate() {
            assert_eq!(TreeId::from_code(code as u8), Some(*tree));
        }
    }
}
