//! Each kind's entry function (`matches`, `evaluate`, `run`, `score`), type-checked once.
//!
//! wasmtime checks an export's type every time it is fetched as a `TypedFunc`, which is a few
//! percent of a whole scorer call. A plugin's entry is checked against its kind's signature once
//! when the plugin is loaded ([`check`]), and every call fetches it without checking ([`typed`]).
//! A channel's exports (`deliver`, and `parse-webhook` at 0.2.0) are checked at load too, so a
//! plugin with the wrong signature is refused then; its calls fetch them checked again, as they
//! are async and not this hot.

use wasmtime::Store;
use wasmtime::component::{
    ComponentNamedList, Instance, Lift, Lower, TypedFunc, WasmList, WasmStr,
};

use super::bindings::{v2, wit};
use super::host::HostState;
use super::load::{Plugin, PluginKind, WitVersion};
use super::lower::{ContactRef, EventRef};

/// The signature of one kind's entry function.
pub(crate) trait Entry {
    const KIND: PluginKind;
    type Params<'a>: ComponentNamedList + Lower;
    type Results: ComponentNamedList + Lift;
}

/// `matches(config, event, contact) -> result<bool, string>`
pub(crate) struct Matches;
/// `evaluate(config, contact, option<event>) -> result<string, string>`
pub(crate) struct Evaluate;
/// `run(config, contact, option<event>) -> result<list<effect>, string>`
pub(crate) struct Run;
/// `score(config, contact, event) -> result<list<score-change>, string>`
pub(crate) struct Score;

// Results are lifted as views into the guest's memory (`WasmStr`, `WasmList`), so that their
// size is known before anything is copied to the host (see `output`).

impl Entry for Matches {
    const KIND: PluginKind = PluginKind::Trigger;
    type Params<'a> = (&'a [u8], &'a EventRef<'a>, &'a ContactRef<'a>);
    type Results = (Result<bool, WasmStr>,);
}

impl Entry for Evaluate {
    const KIND: PluginKind = PluginKind::Condition;
    type Params<'a> = (&'a [u8], &'a ContactRef<'a>, Option<&'a EventRef<'a>>);
    type Results = (Result<WasmStr, WasmStr>,);
}

impl Entry for Run {
    const KIND: PluginKind = PluginKind::Action;
    type Params<'a> = (&'a [u8], &'a ContactRef<'a>, Option<&'a EventRef<'a>>);
    type Results = (Result<WasmList<wit::Effect>, WasmStr>,);
}

impl Entry for Score {
    const KIND: PluginKind = PluginKind::Scorer;
    type Params<'a> = (&'a [u8], &'a ContactRef<'a>, &'a EventRef<'a>);
    type Results = (Result<WasmList<wit::ScoreChange>, WasmStr>,);
}

/// Check that `plugin`'s entry in `instance` has its kind's signature. [`Plugin`]s come only
/// from `Runtime::load`, which calls this before it returns one.
pub(crate) fn check(
    plugin: &Plugin,
    instance: &Instance,
    store: &mut Store<HostState>,
) -> wasmtime::Result<()> {
    fn of<E: Entry>(
        plugin: &Plugin,
        instance: &Instance,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<()> {
        // Lifetimes do not enter a type check: `'static` checks every `'a`.
        instance
            .get_typed_func::<E::Params<'static>, E::Results>(store, &plugin.entry)
            .map(drop)
    }
    match plugin.kind {
        PluginKind::Trigger => of::<Matches>(plugin, instance, store),
        PluginKind::Condition => of::<Evaluate>(plugin, instance, store),
        PluginKind::Action => of::<Run>(plugin, instance, store),
        PluginKind::Scorer => of::<Score>(plugin, instance, store),
        PluginKind::Channel => {
            type Delivered = (Result<wit::Delivery, wit::DeliveryFailure>,);
            match plugin.wit_version {
                WitVersion::V0_1 => instance
                    .get_typed_func::<(&[u8], &wit::Message), Delivered>(&mut *store, plugin.entry)
                    .map(drop)?,
                WitVersion::V0_2 => instance
                    .get_typed_func::<(&[u8], &v2::types::Message), Delivered>(
                        &mut *store,
                        plugin.entry,
                    )
                    .map(drop)?,
            }
            match plugin.pre.parse_webhook {
                Some(parse) => instance
                    .get_typed_func::<(&[u8], &v2::types::WebhookRequest), ParsedWebhook>(
                        store, parse,
                    )
                    .map(drop),
                None => Ok(()),
            }
        }
    }
}

/// What `parse-webhook` returns.
pub(crate) type ParsedWebhook = (Result<Vec<v2::types::ProviderEvent>, v2::types::WebhookError>,);

/// `plugin`'s entry function in `instance` (a fresh instance of `plugin`), without checking its
/// type again.
#[allow(unsafe_code)]
pub(crate) fn typed<'a, E: Entry>(
    plugin: &Plugin,
    instance: &Instance,
    store: &mut Store<HostState>,
) -> wasmtime::Result<TypedFunc<E::Params<'a>, E::Results>> {
    if plugin.kind != E::KIND {
        wasmtime::bail!(
            "{} is a {} plugin, not a {}",
            plugin.id(),
            plugin.kind.as_str(),
            E::KIND.as_str()
        );
    }
    let func = instance
        .get_func(&mut *store, plugin.entry)
        .ok_or_else(|| wasmtime::format_err!("{} lost its entry function", plugin.id()))?;
    // SAFETY: `load` ran `check` on this plugin, so its entry has `E`'s signature (the kind is
    // checked above), and `instance` is an instance of the same component.
    Ok(unsafe { TypedFunc::new_unchecked(func) })
}
