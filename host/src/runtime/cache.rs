//! The compile cache: precompiled components on disk, so a restart does not recompile plugins.
//!
//! Entries are named by the binary's sha256 and the engine's compatibility hash. Deserializing
//! precompiled code is only safe for bytes this host produced for this very binary and engine,
//! so each entry is sealed with an HMAC, under a key that lives in the cache directory (mode
//! 0600), over the compatibility hash, the binary's sha256 and the artifact: an entry that fails
//! the check (corrupted, truncated, written by someone else, or copied under another binary's
//! or engine's name) is discarded and rebuilt, never loaded.

use std::fs;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

type HmacSha256 = Hmac<Sha256>;
const TAG_BYTES: usize = 32;

/// Counters that show what the cache did, e.g. that a restart recompiled nothing.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub compiled: AtomicU64,
    pub hits: AtomicU64,
    pub rejected: AtomicU64,
}

/// A snapshot of [`CacheStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CacheCounts {
    pub compiled: u64,
    pub hits: u64,
    pub rejected: u64,
}

impl CacheStats {
    pub fn snapshot(&self) -> CacheCounts {
        CacheCounts {
            compiled: self.compiled.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Compiles components, through the disk cache when there is one.
pub struct Compiler {
    engine: Engine,
    disk: Option<DiskCache>,
    compat: String,
    pub stats: CacheStats,
}

struct DiskCache {
    dir: PathBuf,
    key: [u8; 32],
}

impl Compiler {
    pub fn new(engine: Engine, cache_dir: Option<&Path>) -> std::io::Result<Self> {
        let disk = cache_dir.map(DiskCache::open).transpose()?;
        let compat = compatibility_hash(&engine);
        Ok(Compiler {
            engine,
            disk,
            compat,
            stats: CacheStats::default(),
        })
    }

    /// The compiled component for the binary whose sha256 is `sha256`. `component_bytes` makes
    /// the component (componentizing a core module if need be) and runs only on a cache miss.
    pub fn compile<E: From<wasmtime::Error>>(
        &self,
        sha256: &str,
        component_bytes: impl FnOnce() -> Result<Vec<u8>, E>,
    ) -> Result<Component, E> {
        let Some(disk) = &self.disk else {
            let component = Component::new(&self.engine, component_bytes()?)?;
            self.stats.compiled.fetch_add(1, Ordering::Relaxed);
            return Ok(component);
        };
        let path = disk.dir.join(format!("{sha256}-{}.cwasm", self.compat));
        let identity = format!("{}\0{sha256}", self.compat);
        if let Some(component) = self.load_sealed(disk, &path, &identity) {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(sha256, "plugin loaded from the compile cache");
            return Ok(component);
        }
        let artifact = self.engine.precompile_component(&component_bytes()?)?;
        self.stats.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sha256, "plugin compiled");
        if let Err(error) = disk.store(&path, &identity, &artifact) {
            tracing::warn!(%error, path = %path.display(), "could not write the compile cache");
        }
        Ok(deserialize_own_artifact(&self.engine, &artifact)?)
    }

    fn load_sealed(&self, disk: &DiskCache, path: &Path, identity: &str) -> Option<Component> {
        let sealed = fs::read(path).ok()?;
        let artifact = match disk.open_seal(&sealed, identity) {
            Some(artifact) => artifact,
            None => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %path.display(), "compile cache entry failed its integrity check; rebuilding");
                let _ = fs::remove_file(path);
                return None;
            }
        };
        match deserialize_own_artifact(&self.engine, artifact) {
            Ok(component) => Some(component),
            Err(error) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, path = %path.display(), "compile cache entry did not load; rebuilding");
                let _ = fs::remove_file(path);
                None
            }
        }
    }
}

/// Deserialize an artifact this process's own precompile step produced (directly, or through a
/// cache entry whose HMAC proved it).
#[allow(unsafe_code)]
fn deserialize_own_artifact(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that the bytes come from `Engine::precompile_component` of a
    // compatible engine. Callers pass either our fresh precompile output or a cache entry whose
    // HMAC, under a key only this host can read, proves we wrote it for this engine: the MAC
    // covers the engine's compatibility hash (and the binary's sha256), so an entry made by an
    // incompatible engine, or for another binary, fails the check and is never deserialized.
    unsafe { Component::deserialize(engine, artifact) }
}

impl DiskCache {
    fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        let key_path = dir.join("cache.key");
        let key = match fs::read(&key_path) {
            Ok(bytes) if bytes.len() == 32 => bytes.try_into().expect("length checked"),
            _ => {
                let mut key = [0u8; 32];
                getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
                write_private(&key_path, &key)?;
                key
            }
        };
        Ok(DiskCache {
            dir: dir.to_owned(),
            key,
        })
    }

    fn mac(&self) -> HmacSha256 {
        HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length")
    }

    /// The MAC of an entry: what it is for (engine and binary), then the artifact.
    fn mac_of(&self, identity: &str, artifact: &[u8]) -> HmacSha256 {
        let mut mac = self.mac();
        mac.update(&(identity.len() as u64).to_be_bytes());
        mac.update(identity.as_bytes());
        mac.update(artifact);
        mac
    }

    fn store(&self, path: &Path, identity: &str, artifact: &[u8]) -> std::io::Result<()> {
        let mac = self.mac_of(identity, artifact);
        let tag = mac.finalize().into_bytes();
        // Write then rename, so a crash never leaves a half-written entry under the real name.
        let temp = path.with_extension("tmp");
        let mut file = fs::File::create(&temp)?;
        file.write_all(&tag)?;
        file.write_all(artifact)?;
        file.sync_all()?;
        fs::rename(temp, path)
    }

    fn open_seal<'a>(&self, sealed: &'a [u8], identity: &str) -> Option<&'a [u8]> {
        if sealed.len() < TAG_BYTES {
            return None;
        }
        let (tag, artifact) = sealed.split_at(TAG_BYTES);
        self.mac_of(identity, artifact).verify_slice(tag).ok()?;
        Some(artifact)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A stable hex digest of the engine's compatibility hash (wasmtime version, target, settings).
fn compatibility_hash(engine: &Engine) -> String {
    struct Sha256Hasher(Sha256);
    impl Hasher for Sha256Hasher {
        fn finish(&self) -> u64 {
            let digest = self.0.clone().finalize();
            u64::from_le_bytes(digest[..8].try_into().expect("sha256 has 32 bytes"))
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = Sha256Hasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(&hasher.0.finalize()[..8])
}

/// The sha256 of a binary, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
