//! How big a plugin's result is, so an oversized output is refused before the host uses it.
//!
//! The entry functions' results are read from the guest's memory here: a string (a branch
//! label, the plugin's error) is measured where it lies and copied only if it fits; a list is
//! lifted item by item and refused at the first item past the limit, so no more than one item
//! past it is ever copied, and one item is bounded by the plugin's memory limit. The results
//! of `describe` and `validate-config`, and of channel calls, come through the generated
//! bindings, which copy them whole; they are measured right after, before the host uses them.

use wasmtime::Store;
use wasmtime::component::{Lift, WasmList, WasmStr};

use super::bindings::wit;
use super::error::CallError;
use super::host::HostState;

/// The longest error text the host keeps of a plugin's: the rest is cut, saying how long it
/// was. It goes into logs and enrollments, which stay small.
pub(crate) const MAX_ERROR_BYTES: usize = 2 << 10;

/// `text` cut to [`MAX_ERROR_BYTES`], on a character boundary.
pub(crate) fn bounded_error(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_owned();
    }
    let mut cut = MAX_ERROR_BYTES;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..cut], text.len())
}

/// A string the guest returned, copied only if it fits in `limit` bytes.
pub(crate) fn text(
    text: &WasmStr,
    store: &Store<HostState>,
    limit: usize,
) -> wasmtime::Result<Result<String, CallError>> {
    let borrowed = text.to_str(store)?;
    if borrowed.len() > limit {
        return Ok(Err(CallError::OutputLimit {
            size: borrowed.len(),
            limit,
        }));
    }
    Ok(Ok(borrowed.into_owned()))
}

/// The plugin's own error (a WIT `result` error), bounded like every other output (and then
/// cut, like every error text, by [`CallError::bounded`]).
pub(crate) fn plugin_error(
    error: &WasmStr,
    store: &Store<HostState>,
    limit: usize,
) -> wasmtime::Result<CallError> {
    Ok(match text(error, store, limit)? {
        Ok(message) => CallError::Plugin(message),
        Err(too_large) => too_large,
    })
}

/// A list the guest returned, lifted item by item while it stays within `limit` bytes.
pub(crate) fn list<T: Lift + OutputSize + 'static>(
    list: &WasmList<T>,
    store: &mut Store<HostState>,
    limit: usize,
) -> wasmtime::Result<Result<Vec<T>, CallError>> {
    let mut items = Vec::with_capacity(list.len().min(1_024));
    let mut size = 0;
    for item in list.iter(&mut *store)? {
        let item = item?;
        size += 8 + item.output_size();
        if size > limit {
            return Ok(Err(CallError::OutputLimit { size, limit }));
        }
        items.push(item);
    }
    Ok(Ok(items))
}

/// Bytes of strings and list items in a value, roughly as the guest laid them out.
pub(crate) trait OutputSize {
    fn output_size(&self) -> usize;
}

impl OutputSize for bool {
    fn output_size(&self) -> usize {
        1
    }
}

impl OutputSize for String {
    fn output_size(&self) -> usize {
        self.len()
    }
}

impl<T: OutputSize> OutputSize for Vec<T> {
    fn output_size(&self) -> usize {
        self.iter().map(|item| 8 + item.output_size()).sum()
    }
}

impl<T: OutputSize, E: OutputSize> OutputSize for Result<T, E> {
    fn output_size(&self) -> usize {
        match self {
            Ok(value) => value.output_size(),
            Err(error) => error.output_size(),
        }
    }
}

/// A prepared config: its bytes counted byte for byte, and the attribute names it reads.
impl OutputSize for wit::PreparedConfig {
    fn output_size(&self) -> usize {
        self.config.len()
            + self
                .attributes
                .as_ref()
                .map_or(0, |names| names.output_size())
    }
}

impl OutputSize for () {
    fn output_size(&self) -> usize {
        0
    }
}

impl OutputSize for wit::Value {
    fn output_size(&self) -> usize {
        match self {
            wit::Value::Text(s) => 8 + s.len(),
            wit::Value::TextList(items) => 8 + items.output_size(),
            _ => 8,
        }
    }
}

impl OutputSize for wit::Attribute {
    fn output_size(&self) -> usize {
        self.name.len() + self.value.output_size()
    }
}

impl OutputSize for wit::ScoreChange {
    fn output_size(&self) -> usize {
        8 + self.reason.len()
    }
}

impl OutputSize for wit::Effect {
    fn output_size(&self) -> usize {
        match self {
            wit::Effect::SetAttribute(a) => a.output_size(),
            wit::Effect::UnsetAttribute(s)
            | wit::Effect::AddTag(s)
            | wit::Effect::RemoveTag(s)
            | wit::Effect::SetLifecycleStage(s) => s.len(),
            wit::Effect::AdjustScore(c) => c.output_size(),
            wit::Effect::EmitEvent(e) => e.name.len() + e.properties.output_size(),
            wit::Effect::SendMessage(m) => {
                m.channel.len() + m.template.len() + m.variables.output_size()
            }
        }
    }
}

impl OutputSize for wit::PluginInfo {
    fn output_size(&self) -> usize {
        self.name.len()
            + self.version.len()
            + self.description.len()
            + self.config_schema.len()
            + self.outbound_hosts.output_size()
    }
}

impl OutputSize for wit::ConfigProblem {
    fn output_size(&self) -> usize {
        self.path.len() + self.message.len()
    }
}

impl OutputSize for wit::Delivery {
    fn output_size(&self) -> usize {
        self.provider_id.len()
    }
}

impl OutputSize for wit::DeliveryFailure {
    fn output_size(&self) -> usize {
        8 + self.message.len()
    }
}

impl OutputSize for super::bindings::v2::types::ProviderEvent {
    fn output_size(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        8 + text(&self.message_id) + text(&self.provider_id) + text(&self.reason) + text(&self.url)
    }
}

impl OutputSize for super::bindings::v2::types::WebhookError {
    fn output_size(&self) -> usize {
        use super::bindings::v2::types::WebhookError;
        match self {
            WebhookError::Unauthenticated(why) | WebhookError::Malformed(why) => why.len(),
        }
    }
}
