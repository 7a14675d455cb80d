//! How big a plugin's result is, so an oversized output is refused before the host uses it.

use super::bindings::wit;

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
