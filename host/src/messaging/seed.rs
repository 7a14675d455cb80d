//! Channels and templates from files at start-up (`serve --channels DIR --templates DIR`):
//! each `NAME.json` is the body of `PUT /v1/channels/NAME` or `PUT /v1/templates/NAME`, applied
//! when nothing of that name exists yet, so a start never overwrites an operator's change.

use std::path::{Path, PathBuf};

use super::{ChannelRequest, Messaging, TemplateDraft};

use crate::auth::STARTUP_ACTOR as ACTOR;

fn json_files(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_owned();
            Some((name, path))
        })
        .collect();
    files.sort();
    Ok(files)
}

fn read<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Bind each channel in `dir` that is not bound yet; the names bound.
pub fn channels(messaging: &Messaging, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut bound = Vec::new();
    for (name, path) in json_files(dir)? {
        if messaging.store.channel(&name)?.is_some() {
            continue;
        }
        let request: ChannelRequest = read(&path)?;
        messaging
            .put_channel(&name, request, ACTOR)
            .map_err(|e| anyhow::anyhow!("{}: {e}: {}", path.display(), problems(&e)))?;
        bound.push(name);
    }
    Ok(bound)
}

/// Store each template in `dir` that has no version yet; the names stored.
pub fn templates(messaging: &Messaging, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut stored = Vec::new();
    for (name, path) in json_files(dir)? {
        if messaging.store.template(&name, None)?.is_some() {
            continue;
        }
        let draft: TemplateDraft = read(&path)?;
        messaging
            .put_template(&name, draft, ACTOR)
            .map_err(|e| anyhow::anyhow!("{}: {e}: {}", path.display(), problems(&e)))?;
        stored.push(name);
    }
    Ok(stored)
}

fn problems(error: &super::MessagingError) -> String {
    match error {
        super::MessagingError::BadChannel(problems) => serde_json::to_string(problems),
        super::MessagingError::BadTemplate(problems) => serde_json::to_string(problems),
        _ => Ok(String::new()),
    }
    .unwrap_or_default()
}
