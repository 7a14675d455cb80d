//! A scorer kept instantiated across calls, for the benchmark's "direct call" baseline only.
//!
//! Production never does this: every call gets a fresh store so nothing leaks between
//! contacts. The benchmark reports it beside the real path to show what instantiation costs.

use wasmtime::Store;
use wasmtime::component::TypedFunc;

use super::Runtime;
use super::bindings::wit;
use super::host::HostState;
use super::load::{Plugin, PluginKind};
use crate::model::{Contact, Event};

type ScoreFn<'a> = TypedFunc<(&'a [u8], &'a wit::Contact, &'a wit::Event), (ScoreResult,)>;
type ScoreResult = Result<Vec<wit::ScoreChange>, String>;

/// One scorer instance and its store, reused call after call.
#[doc(hidden)]
pub struct WarmScorer {
    store: Store<HostState>,
    /// `score`, its type checked once when warmed.
    score: wasmtime::component::Func,
}

impl Runtime {
    /// Instantiate `plugin` once for repeated direct calls; `None` if it is not a scorer.
    #[doc(hidden)]
    pub fn warm_scorer(&self, plugin: &Plugin) -> Option<WarmScorer> {
        if plugin.kind != PluginKind::Scorer {
            return None;
        }
        let mut store = self.store(plugin, None);
        // Repeated calls accumulate CPU; this baseline measures call cost, not limits.
        store.set_epoch_deadline(u64::MAX / 2);
        let instance = plugin.pre.instance.instantiate(&mut store).ok()?;
        let score: ScoreFn<'static> = instance.get_typed_func(&mut store, plugin.entry).ok()?;
        Some(WarmScorer {
            store,
            score: *score.func(),
        })
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
        #[allow(unsafe_code)]
        // SAFETY: `warm_scorer` checked this function against `ScoreFn` (lifetimes do not
        // enter a type check).
        let score: ScoreFn<'_> = unsafe { TypedFunc::new_unchecked(self.score) };
        score
            .call(&mut self.store, (config, contact, event))
            .map_err(|e| format!("{e:#}"))?
            .0
            .map(|changes| changes.len())
    }
}

/// Convert once, outside a timed loop.
#[doc(hidden)]
pub fn to_wit(contact: &Contact, event: &Event) -> (wit::Contact, wit::Event) {
    (contact.into(), event.into())
}
