//! [`PluginStore`] for the sled store. A binary is larger than a sled value should be, so it is
//! kept in chunks under `<id>\0<chunk index, u32 BE>`, written in the same write set as its
//! record.

use super::StoreError;
use super::codec::{decode, encode};
use super::layout::TreeId;
use super::records::AuditEntry;
use super::sled_store::{SledStore, backend, lock};
use super::uploads::{PluginStore, PluginUpload};
use super::write_set::WriteSet;

/// Bytes of a binary per stored value, well below the largest value a tree holds.
const CHUNK: usize = 64 << 10;

fn chunk_prefix(id: &str) -> Vec<u8> {
    let mut key = id.as_bytes().to_vec();
    key.push(0);
    key
}

impl PluginStore for SledStore {
    fn plugin_uploads(&self) -> Result<Vec<PluginUpload>, StoreError> {
        self.plugins
            .iter()
            .values()
            .map(|bytes| decode(&bytes.map_err(backend)?))
            .collect()
    }

    fn plugin_upload(&self, id: &str) -> Result<Option<PluginUpload>, StoreError> {
        self.plugins
            .get(id.as_bytes())
            .map_err(backend)?
            .map(|bytes| decode(&bytes))
            .transpose()
    }

    fn plugin_binary(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut binary = Vec::new();
        let mut chunks = 0;
        for entry in self.plugin_binaries.scan_prefix(chunk_prefix(id)) {
            let (_, chunk) = entry.map_err(backend)?;
            binary.extend_from_slice(&chunk);
            chunks += 1;
        }
        Ok((chunks > 0).then_some(binary))
    }

    fn put_plugin_upload(
        &self,
        upload: &PluginUpload,
        binary: &[u8],
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Plugins, upload.id.as_bytes(), encode(upload));
        for (index, chunk) in binary.chunks(CHUNK).enumerate() {
            let mut key = chunk_prefix(&upload.id);
            key.extend_from_slice(&(index as u32).to_be_bytes());
            writes.put(TreeId::PluginBinaries, key, chunk.to_vec());
        }
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }

    fn delete_plugin_upload(
        &self,
        tombstone: &PluginUpload,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let _operations = lock(&self.locks.operations);
        let mut writes = WriteSet::new(self);
        writes.put(TreeId::Plugins, tombstone.id.as_bytes(), encode(tombstone));
        for entry in self
            .plugin_binaries
            .scan_prefix(chunk_prefix(&tombstone.id))
            .keys()
        {
            writes.remove(TreeId::PluginBinaries, entry.map_err(backend)?.to_vec());
        }
        self.audit_write(&mut writes, audit)?;
        writes.apply()
    }
}
