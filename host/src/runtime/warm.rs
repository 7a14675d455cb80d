//! A scorer kept instantiated across calls, for the benchmark's "direct call" baseline only.
//!
//! Production never does this: every call gets a fresh store so nothing leaks between
//! contacts. The benchmark reports it beside the real path to show what instantiation costs.

use wasmtime::Store;

use super::Runtime;
use super::bindings::{ScorerPlugin, wit};
use super::host::HostState;
use super::load::{Plugin, Pre};
use crate::model::{Contact, Event};

/// One scorer instance and its store, reused call after call.
#[doc(hidden)]
pub struct WarmScorer {
    store: Store<HostState>,
    instance: ScorerPlugin,
}

impl Runtime {
    /// Instantiate `plugin` once for repeated direct calls; `None` if it is not a scorer.
    #[doc(hidden)]
    pub fn warm_scorer(&self, plugin: &Plugin) -> Option<WarmScorer> {
        let Pre::Scorer(pre) = &plugin.pre else {
            return None;
        };
        let mut store = self.store(plugin, None);
        // Repeated calls accumulate CPU; this baseline measures call cost, not limits.
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = pre.instantiate(&mut store).ok()?;
        Some(WarmScorer { store, instance })
    }
}

impl WarmScorer {
    /// Score on the warm instance; returns the number of score changes.
    pub fn score(
        &mut self,
        config: &[u8],
        contact: &wit::Contact,
        event: &wit::Event,
    ) -> Result<usize, String> {
        self.instance
            .wayline_plugin_scorer()
            .call_score(&mut self.store, config, contact, event)
            .map_err(|e| format!("{e:#}"))?
            .map(|changes| changes.len())
    }
}

/// Convert once, outside a timed loop.
#[doc(hidden)]
pub fn to_wit(contact: &Contact, event: &Event) -> (wit::Contact, wit::Event) {
    (contact.into(), event.into())
}
