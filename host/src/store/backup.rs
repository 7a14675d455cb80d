//! A backup of the whole store while it keeps taking writes, and its restore into a new data
//! directory.
//!
//! sled 0.34 has no snapshot, so a backup is a copy plus a log. Before the copy starts, a *tap*
//! is put on every write (a write set, ingest's queue-and-record pair, a delivery entry
//! removed); the trees are then copied one key at a time while writes go on, and every write
//! made meanwhile is logged behind the copy, in the order it was made. The tap goes on and off
//! only between whole writes (writers hold the gate's read side for a whole write), so copy
//! plus log, applied in order, is the store exactly as it was when the tap came off: every key
//! the copy read before it changed is put right by the log, and no write set is in it by half.
//! While the tap is on, each write holds the log from before it applies to after it is noted,
//! so the log's order is the order the writes were made, also for two writers of one key that
//! share no other lock (ingest and an erasure of an unsettled inbox item). The log waits in a
//! temporary file beside the store until the copy is done.
//!
//! The file: `WAYLINE-BACKUP`, a format byte, the layout, the tree names; then records
//! (`1` put or `2` removal, the tree's index, the key, the value); then `0`, the next id sled
//! may give out, the number of records, and the SHA-256 of everything before it. A restore
//! checks all of it before the restored store takes the place it is meant for.

use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLockReadGuard};

use sha2::{Digest, Sha256};

use super::StoreError;
use super::layout::{LAYOUT, SAME_RECORDS, TreeId, trees};
use super::sled_store::{SledStore, backend};

const MAGIC: &[u8] = b"WAYLINE-BACKUP";
const FORMAT: u8 = 1;
const PUT: u8 = 1;
const REMOVE: u8 = 2;
const END: u8 = 0;
/// Largest key or value a record may carry: far above any the store writes, so a damaged
/// length is caught before it is allocated.
const MAX_FIELD: u32 = 64 << 20;

/// What a backup or a restore went through.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupSummary {
    /// Keys copied, then writes logged while copying.
    pub copied: u64,
    pub logged: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// The trees a backup holds, by the index its records use: the write-set trees by their code,
/// then `meta`. Write-set intents are left out: none is unfinished when the tap comes off.
fn tree_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = TreeId::ALL.iter().map(|tree| tree.name()).collect();
    names.push(trees::META);
    names
}

/// Writes made while a backup copies the trees, encoded as its records.
pub(super) struct Tap {
    log: Mutex<TapLog>,
}

struct TapLog {
    file: BufWriter<std::fs::File>,
    records: u64,
    /// The log could not be written: the backup fails rather than miss a write.
    failed: Option<String>,
}

impl Tap {
    /// Hold the log for one whole write: taken before the write is applied and dropped after
    /// it is noted, so no other write comes between.
    pub(super) fn hold(&self) -> Held<'_> {
        Held(self.log.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// The log, held by one write.
pub(super) struct Held<'a>(std::sync::MutexGuard<'a, TapLog>);

impl Held<'_> {
    /// Log a write just made.
    pub(super) fn note(&mut self, tree: TreeId, key: &[u8], value: Option<&[u8]>) {
        let log = &mut *self.0;
        if log.failed.is_some() {
            return;
        }
        match write_record(&mut log.file, tree as u8, key, value) {
            Ok(_) => log.records += 1,
            Err(error) => log.failed = Some(error.to_string()),
        }
    }
}

/// The gate writers pass: held (read side) for the whole of one write.
pub(super) type WriteGate<'a> = RwLockReadGuard<'a, Option<Arc<Tap>>>;

/// Takes the tap off when the backup ends, however it ends.
struct TapOn<'a>(&'a SledStore);

impl Drop for TapOn<'_> {
    fn drop(&mut self) {
        self.0.tap.write().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A writer that counts and hashes what passes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hash.update(&buf[..written]);
        self.bytes += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn write_record(
    out: &mut impl Write,
    tree: u8,
    key: &[u8],
    value: Option<&[u8]>,
) -> std::io::Result<()> {
    out.write_all(&[if value.is_some() { PUT } else { REMOVE }, tree])?;
    out.write_all(&(key.len() as u32).to_be_bytes())?;
    out.write_all(key)?;
    if let Some(value) = value {
        out.write_all(&(value.len() as u32).to_be_bytes())?;
        out.write_all(value)?;
    }
    Ok(())
}

fn io(error: std::io::Error) -> StoreError {
    StoreError::Backend(format!("backup: {error}"))
}

impl SledStore {
    /// Enter the write gate for one whole write; the tap, if a backup is running.
    pub(super) fn write_gate(&self) -> WriteGate<'_> {
        self.tap.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write a backup of the whole store to `out`, as it is at the moment the copy ends.
    pub(super) fn write_backup(&self, out: &mut dyn Write) -> Result<BackupSummary, StoreError> {
        // A write that failed part-way is finished only by reopening; a copy now would hold
        // it by half.
        self.check_writable()?;
        let spill = match &self.dir {
            Some(dir) => tempfile::tempfile_in(dir),
            None => tempfile::tempfile(),
        }
        .map_err(io)?;
        let tap = Arc::new(Tap {
            log: Mutex::new(TapLog {
                file: BufWriter::with_capacity(256 << 10, spill),
                records: 0,
                failed: None,
            }),
        });
        {
            let mut gate = self.tap.write().unwrap_or_else(|p| p.into_inner());
            if gate.is_some() {
                return Err(StoreError::Conflict(
                    "a backup is running already; wait for it to end".into(),
                ));
            }
            *gate = Some(tap.clone());
        }
        let on = TapOn(self);
        let mut out = Hashing {
            inner: BufWriter::with_capacity(256 << 10, out),
            hash: Sha256::new(),
            bytes: 0,
        };
        let names = tree_names();
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&[FORMAT]).map_err(io)?;
        out.write_all(&LAYOUT.to_be_bytes()).map_err(io)?;
        out.write_all(&[names.len() as u8]).map_err(io)?;
        for name in &names {
            out.write_all(&[name.len() as u8]).map_err(io)?;
            out.write_all(name.as_bytes()).map_err(io)?;
        }
        let mut copied = 0u64;
        for (index, name) in names.iter().enumerate() {
            let tree = self.db.open_tree(name).map_err(backend)?;
            for entry in tree.iter() {
                let (key, value) = entry.map_err(backend)?;
                write_record(&mut out, index as u8, &key, Some(&value)).map_err(io)?;
                copied += 1;
            }
        }
        // Off between two writes: what the log holds now completes the copy.
        drop(on);
        // A write that failed part-way while copying was neither finished nor logged.
        self.check_writable()?;
        let next_id = self.db.generate_id().map_err(backend)?;
        let log = Arc::try_unwrap(tap)
            .map_err(|_| StoreError::Backend("backup: a writer still holds the tap".into()))?
            .log
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(error) = log.failed {
            return Err(StoreError::Backend(format!(
                "backup: logging the writes made while copying failed: {error}"
            )));
        }
        let mut spill = log.file.into_inner().map_err(|e| io(e.into_error()))?;
        spill.rewind().map_err(io)?;
        std::io::copy(&mut spill, &mut out).map_err(io)?;
        out.write_all(&[END]).map_err(io)?;
        out.write_all(&next_id.to_be_bytes()).map_err(io)?;
        out.write_all(&(copied + log.records).to_be_bytes())
            .map_err(io)?;
        let Hashing {
            mut inner,
            hash,
            bytes,
        } = out;
        let sha256 = hash.finalize();
        inner.write_all(&sha256).map_err(io)?;
        inner.flush().map_err(io)?;
        Ok(BackupSummary {
            copied,
            logged: log.records,
            bytes: bytes + sha256.len() as u64,
            sha256: hex::encode(sha256),
        })
    }
}

/// A reader that hashes what passes through it.
struct Hashed<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Hashed<R> {
    fn exact<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let mut bytes = [0u8; N];
        self.inner.read_exact(&mut bytes).map_err(damaged)?;
        self.hash.update(bytes);
        Ok(bytes)
    }

    fn field(&mut self, what: &str) -> Result<Vec<u8>, StoreError> {
        let length = u32::from_be_bytes(self.exact()?);
        if length > MAX_FIELD {
            return Err(StoreError::Invalid(format!(
                "the backup is damaged: a {what} of {length} bytes"
            )));
        }
        let mut bytes = vec![0u8; length as usize];
        self.inner.read_exact(&mut bytes).map_err(damaged)?;
        self.hash.update(&bytes);
        Ok(bytes)
    }
}

fn damaged(error: std::io::Error) -> StoreError {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        StoreError::Invalid("the backup ends early: it was cut off while written or copied".into())
    } else {
        StoreError::Backend(format!("reading the backup: {error}"))
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreSummary {
    pub records: u64,
    pub sha256: String,
}

/// Restore the backup `input` into `store_dir`, which must not hold a store. It is built beside
/// it and moved into place only once the whole backup has been read and its checksum holds, so
/// a damaged or cut-off backup leaves nothing behind.
pub fn restore(input: &mut dyn Read, store_dir: &Path) -> Result<RestoreSummary, StoreError> {
    let occupied = match std::fs::read_dir(store_dir) {
        Ok(mut entries) => entries.next().is_some(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => false,
        Err(error) => {
            return Err(StoreError::Backend(format!(
                "{}: {error}",
                store_dir.display()
            )));
        }
    };
    if occupied {
        return Err(StoreError::Conflict(format!(
            "{} holds a store already; restore into a new data directory",
            store_dir.display()
        )));
    }
    let building = store_dir.with_extension("restoring");
    if building.exists() {
        std::fs::remove_dir_all(&building).map_err(io)?;
    }
    let result = restore_into(input, &building).and_then(|summary| {
        if store_dir.exists() {
            std::fs::remove_dir(store_dir).map_err(io)?;
        }
        std::fs::rename(&building, store_dir).map_err(io)?;
        if let Some(parent) = store_dir.parent() {
            std::fs::File::open(parent)
                .and_then(|dir| dir.sync_all())
                .map_err(io)?;
        }
        Ok(summary)
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&building);
    }
    result
}

fn restore_into(input: &mut dyn Read, dir: &Path) -> Result<RestoreSummary, StoreError> {
    let mut store = None;
    let mut trees = Vec::new();
    let read = read_backup(input, |record| match record {
        Record::Trees(names) => {
            let opened = SledStore::open(dir)?;
            trees = names
                .iter()
                .map(|name| opened.db.open_tree(name).map_err(backend))
                .collect::<Result<Vec<_>, _>>()?;
            store = Some(opened);
            Ok(())
        }
        Record::Put(tree, key, value) => trees[tree].insert(key, value).map(drop).map_err(backend),
        Record::Remove(tree, key) => trees[tree].remove(key).map(drop).map_err(backend),
    })?;
    let store = store.expect("the tree names come first");
    // Inbox keys and other ids come from sled's id generator; the restored store must not
    // give out one the backup holds, or new work would sort before old.
    super::open::advance_ids(&store.db, read.next_id)?;
    store.db.flush().map_err(backend)?;
    Ok(RestoreSummary {
        records: read.records,
        sha256: read.sha256,
    })
}

/// Check that `input` is a whole, undamaged backup this version can restore, without writing
/// anything: what `wayline backup` does before it keeps a file.
pub fn verify(input: &mut dyn Read) -> Result<RestoreSummary, StoreError> {
    let read = read_backup(input, |_| Ok(()))?;
    Ok(RestoreSummary {
        records: read.records,
        sha256: read.sha256,
    })
}

/// One thing a backup holds, in the order it holds them.
enum Record<'a> {
    Trees(&'a [String]),
    Put(usize, Vec<u8>, Vec<u8>),
    Remove(usize, Vec<u8>),
}

struct BackupRead {
    records: u64,
    next_id: u64,
    sha256: String,
}

/// Read a backup through, handing each record to `apply`; `Err` when it is not a backup this
/// version reads, or is damaged or cut off (found only at its end: a caller keeps nothing
/// until this returns `Ok`).
fn read_backup(
    input: &mut dyn Read,
    mut apply: impl FnMut(Record<'_>) -> Result<(), StoreError>,
) -> Result<BackupRead, StoreError> {
    let mut input = Hashed {
        inner: BufReader::with_capacity(256 << 10, input),
        hash: Sha256::new(),
    };
    let not_a_backup = || StoreError::Invalid("this file is not a Wayline backup".into());
    let magic: [u8; MAGIC.len()] = input.exact().map_err(|_| not_a_backup())?;
    if magic != MAGIC {
        return Err(not_a_backup());
    }
    let [format] = input.exact()?;
    if format != FORMAT {
        return Err(StoreError::Invalid(format!(
            "the backup is in format {format}; this version reads format {FORMAT}"
        )));
    }
    let layout = u32::from_be_bytes(input.exact()?);
    if !SAME_RECORDS.contains(&layout) {
        return Err(StoreError::Invalid(format!(
            "the backup holds a layout-{layout} store; restore it with the version that made it (this one writes layout {LAYOUT})"
        )));
    }
    let known = tree_names();
    let [count] = input.exact()?;
    let mut names = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let [length] = input.exact()?;
        let mut name = vec![0u8; length as usize];
        input.inner.read_exact(&mut name).map_err(damaged)?;
        input.hash.update(&name);
        let name = String::from_utf8(name).map_err(|_| not_a_backup())?;
        if !known.contains(&name.as_str()) {
            return Err(StoreError::Invalid(format!(
                "the backup holds a tree `{name}` this version does not know"
            )));
        }
        names.push(name);
    }
    apply(Record::Trees(&names))?;
    let mut records = 0u64;
    let next_id = loop {
        let [tag] = input.exact()?;
        if tag == END {
            break u64::from_be_bytes(input.exact()?);
        }
        let [index] = input.exact()?;
        let tree = index as usize;
        if tree >= names.len() {
            return Err(StoreError::Invalid(format!(
                "the backup is damaged: tree {index} is not listed"
            )));
        }
        let key = input.field("key")?;
        match tag {
            PUT => {
                let value = input.field("value")?;
                apply(Record::Put(tree, key, value))?;
            }
            REMOVE => apply(Record::Remove(tree, key))?,
            other => {
                return Err(StoreError::Invalid(format!(
                    "the backup is damaged: a record marked {other}"
                )));
            }
        }
        records += 1;
    };
    let claimed = u64::from_be_bytes(input.exact()?);
    let computed = input.hash.finalize();
    let mut stored = [0u8; 32];
    input.inner.read_exact(&mut stored).map_err(damaged)?;
    if stored[..] != computed[..] || claimed != records {
        return Err(StoreError::Invalid(
            "the backup is damaged: its checksum does not match what it holds".into(),
        ));
    }
    if input.inner.read(&mut [0u8; 1]).map_err(io)? != 0 {
        return Err(StoreError::Invalid(
            "the backup is damaged: there is more after its end".into(),
        ));
    }
    Ok(BackupRead {
        records,
        next_id,
        sha256: hex::encode(stored),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;
    use crate::store::write_set::WriteSet;

    /// Write sets of two keys holding the same number, one after another, until stopped;
    /// `started` hears of the first.
    fn writer(
        store: Arc<SledStore>,
        stop: Arc<AtomicBool>,
        started: std::sync::mpsc::Sender<()>,
    ) -> std::thread::JoinHandle<u64> {
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let mut writes = WriteSet::new(&store);
                let value = n.to_be_bytes().to_vec();
                writes.put(TreeId::Contacts, format!("a{n:08}"), value.clone());
                writes.put(TreeId::Enrollments, format!("b{n:08}"), value);
                writes.remove(TreeId::Contacts, format!("a{:08}", n.wrapping_sub(100)));
                writes.apply().unwrap();
                if n == 0 {
                    let _ = started.send(());
                }
                n += 1;
            }
            n
        })
    }

    fn keys(store: &SledStore, tree: TreeId) -> Vec<(Vec<u8>, Vec<u8>)> {
        store
            .tree(tree)
            .iter()
            .map(|e| e.unwrap())
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    #[test]
    fn a_backup_taken_under_writes_restores_the_store_of_one_moment() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
        // Enough to copy for a while: the writer runs all along.
        let mut writes = WriteSet::new(&store);
        for i in 0..20_000u32 {
            writes.put(TreeId::Events, format!("e{i:06}"), vec![7u8; 200]);
        }
        writes.apply().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (started, writing) = std::sync::mpsc::channel();
        let running = writer(store.clone(), stop.clone(), started);
        writing.recv().unwrap();
        let mut file = Vec::new();
        let summary = store.write_backup(&mut file).unwrap();
        stop.store(true, Ordering::SeqCst);
        let written = running.join().unwrap();
        assert!(
            summary.logged > 0,
            "no write landed while copying: {summary:?}"
        );
        assert_eq!(summary.bytes, file.len() as u64);

        let restored_dir = tempfile::tempdir().unwrap();
        let restored = restore(&mut file.as_slice(), &restored_dir.path().join("store")).unwrap();
        assert_eq!(restored.sha256, summary.sha256);
        let restored = SledStore::open(&restored_dir.path().join("store")).unwrap();
        // Every set whole, and the sets a prefix of those written: the store of one moment.
        let b = keys(&restored, TreeId::Enrollments);
        let last = b.len() as u64;
        assert!(last > 0 && last <= written, "{last} of {written}");
        for (n, (key, value)) in b.iter().enumerate() {
            assert_eq!(key, format!("b{n:08}").as_bytes());
            assert_eq!(value, &(n as u64).to_be_bytes());
        }
        let a: Vec<Vec<u8>> = keys(&restored, TreeId::Contacts)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        let expected: Vec<Vec<u8>> = (last.saturating_sub(100)..last)
            .map(|n| format!("a{n:08}").into_bytes())
            .collect();
        assert_eq!(a, expected);
        assert_eq!(keys(&restored, TreeId::Events).len(), 20_000);
        // The restored store gives out no id the backup's store had given before it ended.
        let end = file.len() - 32 - 8 - 8;
        let next_id = u64::from_be_bytes(file[end..end + 8].try_into().unwrap());
        assert!(next_id > 20_000 / 1000);
        assert!(restored.db.generate_id().unwrap() >= next_id);
    }

    #[test]
    fn a_damaged_or_cut_off_backup_restores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(&dir.path().join("store")).unwrap();
        let mut writes = WriteSet::new(&store);
        writes.put(TreeId::Contacts, "li", b"{}".to_vec());
        writes.apply().unwrap();
        let mut file = Vec::new();
        store.write_backup(&mut file).unwrap();
        verify(&mut file.as_slice()).unwrap();

        let target = tempfile::tempdir().unwrap();
        let place = target.path().join("store");
        let mut flipped = file.clone();
        // The last byte of the last record's value, before the end's 49 bytes.
        let last_value_byte = flipped.len() - 50;
        flipped[last_value_byte] ^= 0x40;
        let cut = &file[..file.len() - 10];
        for (bytes, expected) in [
            (flipped.as_slice(), "damaged"),
            (cut, "ends early"),
            (&b"PK\x03\x04 a zip file"[..], "not a Wayline backup"),
        ] {
            let error = restore(&mut &bytes[..], &place).unwrap_err().to_string();
            assert!(error.contains(expected), "{error}");
            assert!(!place.exists() && !place.with_extension("restoring").exists());
        }
        // Into a store that is there already: refused, and that store is left alone.
        restore(&mut file.as_slice(), &place).unwrap();
        let error = restore(&mut file.as_slice(), &place).unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        let restored = SledStore::open(&place).unwrap();
        assert_eq!(restored.contacts.get("li").unwrap().unwrap(), &b"{}"[..]);
    }

    #[test]
    fn one_backup_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SledStore::open(&dir.path().join("store")).unwrap());
        let (started, wait) = std::sync::mpsc::channel::<()>();
        let (release, blocked) = std::sync::mpsc::channel::<()>();
        /// A reader that stops at its first write until it is released.
        struct Slow(std::sync::mpsc::Sender<()>, std::sync::mpsc::Receiver<()>);
        impl Write for Slow {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                let _ = self.0.send(());
                self.1.recv().map_err(|_| std::io::Error::other("gone"))?;
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        // More than the backup buffers, so that it writes while it copies, tap on.
        let mut writes = WriteSet::new(&store);
        for i in 0..30 {
            writes.put(TreeId::Events, format!("e{i}"), vec![1u8; 10 << 10]);
        }
        writes.apply().unwrap();
        let first = {
            let store = store.clone();
            std::thread::spawn(move || store.write_backup(&mut Slow(started, blocked)).map(drop))
        };
        wait.recv().unwrap();
        let error = store.write_backup(&mut Vec::new()).unwrap_err();
        assert!(matches!(error, StoreError::Conflict(_)), "{error}");
        drop(release);
        first.join().unwrap().unwrap_err();
        // Once it ended (failed: its reader went away), the next may run.
        store.write_backup(&mut Vec::new()).unwrap();
    }
}
