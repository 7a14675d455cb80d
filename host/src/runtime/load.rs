//! From bytes to a loaded plugin: recognise the binary, make it a component if it is a core
//! module, compile it (through the cache), find the world it implements, and pre-link it.

use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::{Component, ComponentExportIndex, InstancePre, Linker};

use super::Runtime;
use super::cache::sha256_hex;
use super::egress::{Egress, EgressError, SecretSetting, TlsRoots};
use super::error::LoadError;
use super::host::HostState;
use super::limits::Limits;
use crate::model::PluginInfo;

const CORE_MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// The node kinds a plugin can implement, one WIT world each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PluginKind {
    Trigger,
    Condition,
    Action,
    Scorer,
    Channel,
}

impl PluginKind {
    pub const ALL: [PluginKind; 5] = [
        PluginKind::Trigger,
        PluginKind::Condition,
        PluginKind::Action,
        PluginKind::Scorer,
        PluginKind::Channel,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PluginKind::Trigger => "trigger",
            PluginKind::Condition => "condition",
            PluginKind::Action => "action",
            PluginKind::Scorer => "scorer",
            PluginKind::Channel => "channel",
        }
    }

    /// The interface a plugin of this kind exports in `version` of the contract.
    pub fn export_name(self, version: WitVersion) -> String {
        format!("wayline:plugin/{}@{}", self.as_str(), version.as_str())
    }

    /// The function a plugin of this kind exists for: `matches`, `evaluate`, `run`, `score`
    /// or `deliver`.
    pub fn function(self) -> &'static str {
        match self {
            PluginKind::Trigger => "matches",
            PluginKind::Condition => "evaluate",
            PluginKind::Action => "run",
            PluginKind::Scorer => "score",
            PluginKind::Channel => "deliver",
        }
    }

    /// The WIT world a plugin of this kind implements in `version` of the contract.
    pub fn world(self, version: WitVersion) -> String {
        format!(
            "wayline:plugin/{}-plugin@{}",
            self.as_str(),
            version.as_str()
        )
    }
}

/// The versions of the plugin contract (`wit/`) the host runs. A plugin implements one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum WitVersion {
    #[serde(rename = "0.1.0")]
    V0_1,
    #[serde(rename = "0.2.0")]
    V0_2,
}

impl WitVersion {
    pub const ALL: [WitVersion; 2] = [WitVersion::V0_1, WitVersion::V0_2];

    pub fn as_str(self) -> &'static str {
        match self {
            WitVersion::V0_1 => "0.1.0",
            WitVersion::V0_2 => "0.2.0",
        }
    }
}

/// A plugin pre-linked against its world's imports, ready to instantiate cheaply per call,
/// with its functions found once among the component's exports (a call looks them up by
/// index, not by name).
#[derive(Clone)]
pub(crate) struct Pre {
    pub(crate) instance: InstancePre<HostState>,
    pub(crate) describe: ComponentExportIndex,
    pub(crate) validate_config: ComponentExportIndex,
    /// A 0.2.0 channel's `parse-webhook`.
    pub(crate) parse_webhook: Option<ComponentExportIndex>,
}

/// One linker per world and version: a world's linker holds exactly the imports that world
/// may use, so a scorer that imports `http` fails to link instead of getting the network.
pub(crate) struct Linkers {
    linkers: std::collections::HashMap<(PluginKind, WitVersion), Linker<HostState>>,
}

impl Linkers {
    pub(crate) fn new(engine: &wasmtime::Engine) -> wasmtime::Result<Self> {
        use super::bindings::{self as v1, v2};
        use wasmtime::component::HasSelf;
        fn linker(
            engine: &wasmtime::Engine,
            add: impl FnOnce(&mut Linker<HostState>) -> wasmtime::Result<()>,
        ) -> wasmtime::Result<Linker<HostState>> {
            let mut linker = Linker::new(engine);
            add(&mut linker)?;
            Ok(linker)
        }
        let (one, two) = (WitVersion::V0_1, WitVersion::V0_2);
        let linkers = [
            (
                (PluginKind::Trigger, one),
                linker(engine, |l| {
                    v1::TriggerPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Condition, one),
                linker(engine, |l| {
                    v1::ConditionPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Action, one),
                linker(engine, |l| {
                    v1::ActionPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Scorer, one),
                linker(engine, |l| {
                    v1::ScorerPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Channel, one),
                linker(engine, |l| {
                    v1::ChannelPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Trigger, two),
                linker(engine, |l| {
                    v2::TriggerPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Condition, two),
                linker(engine, |l| {
                    v2::ConditionPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Action, two),
                linker(engine, |l| {
                    v2::ActionPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Scorer, two),
                linker(engine, |l| {
                    v2::ScorerPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
            (
                (PluginKind::Channel, two),
                linker(engine, |l| {
                    v2::ChannelPlugin::add_to_linker::<_, HasSelf<_>>(l, |s| s)
                })?,
            ),
        ];
        Ok(Linkers {
            linkers: linkers.into_iter().collect(),
        })
    }

    fn pre(
        &self,
        kind: PluginKind,
        version: WitVersion,
        component: &Component,
    ) -> wasmtime::Result<Pre> {
        let linker = &self.linkers[&(kind, version)];
        let instance = linker.instantiate_pre(component)?;
        let interface = kind.export_name(version);
        let function = |name: &str| {
            component
                .get_export_index(None, &interface)
                .and_then(|i| component.get_export_index(Some(&i), name))
                .ok_or_else(|| wasmtime::format_err!("`{interface}` does not export `{name}`"))
        };
        Ok(Pre {
            instance,
            describe: function("describe")?,
            validate_config: function("validate-config")?,
            parse_webhook: match (kind, version) {
                (PluginKind::Channel, WitVersion::V0_2) => Some(function("parse-webhook")?),
                _ => None,
            },
        })
    }
}

/// What the operator decided for one plugin: its limits, approved hosts and secrets.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginSettings {
    pub limits: Limits,
    /// Targets this plugin may reach, as `scheme://host[:port]` (`https://api.example.com`
    /// means port 443 only; `https://*.example.com`; `http://127.0.0.1:8080`).
    pub approved_hosts: Vec<String>,
    /// Secrets by name, each with the targets it may be sent to; the plugin refers to them
    /// as `{{secret:NAME}}` and never reads them.
    pub secrets: std::collections::BTreeMap<String, SecretSetting>,
}

/// A loaded plugin version.
pub struct Plugin {
    pub kind: PluginKind,
    /// The version of the contract it implements.
    pub wit_version: WitVersion,
    pub info: PluginInfo,
    pub sha256: String,
    pub size: usize,
    /// Whether the binary was a core module that the host componentized.
    pub componentized: bool,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub limits: Limits,
    pub(crate) id: Arc<str>,
    /// What its calls did since it was loaded.
    pub stats: Arc<super::CallStats>,
    pub(crate) pre: Pre,
    /// Where [`PluginKind::function`] is among the component's exports, found once here so a
    /// call looks it up by index rather than by name.
    pub(crate) entry: ComponentExportIndex,
    pub(crate) http: Option<Arc<Egress>>,
    /// What its outbound TLS trusts besides the public roots (the server's setting).
    pub(crate) tls_roots: TlsRoots,
}

impl Plugin {
    /// `name@version`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The outbound policy it was loaded with (channel plugins).
    pub fn egress(&self) -> Option<Arc<Egress>> {
        self.http.clone()
    }

    /// Whether it reads its provider's webhooks (0.2.0 channels export `parse-webhook`).
    pub fn reads_webhooks(&self) -> bool {
        self.pre.parse_webhook.is_some()
    }
}

impl Runtime {
    /// Load a plugin binary (a component, or a core module carrying wit-bindgen's
    /// component-type section) with the operator's settings.
    pub fn load(&self, bytes: &[u8], settings: &PluginSettings) -> Result<Plugin, LoadError> {
        if bytes.len() > self.max_binary_bytes {
            return Err(LoadError::TooLarge {
                size: bytes.len(),
                limit: self.max_binary_bytes,
            });
        }
        let componentized = is_core_module(bytes)?;
        let sha256 = sha256_hex(bytes);
        // A cache hit means these exact bytes were checked and compiled before.
        let component = self.compiler.compile(&sha256, || {
            if componentized {
                componentize(bytes)
            } else {
                Ok(bytes.to_vec())
            }
        })?;
        let engine = &self.engine;
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let exports: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let (kind, wit_version, pre) = self.classify(&component, &imports, &exports)?;
        // The world's linker accepted the component, so its interface exports the function.
        let entry = component
            .get_export_index(None, kind.export_name(wit_version))
            .and_then(|interface| component.get_export_index(Some(&interface), kind.function()))
            .ok_or_else(|| {
                LoadError::WrongWorld(format!(
                    "`{}` does not export `{}`",
                    kind.export_name(wit_version),
                    kind.function()
                ))
            })?;
        let limits = clamp(settings.limits);
        let mut plugin = Plugin {
            kind,
            wit_version,
            info: PluginInfo {
                name: String::new(),
                version: String::new(),
                description: String::new(),
                config_schema: serde_json::Value::Null,
                outbound_hosts: Vec::new(),
            },
            sha256,
            size: bytes.len(),
            componentized,
            imports,
            exports,
            limits,
            id: Arc::from("(loading)"),
            stats: Arc::default(),
            pre,
            entry,
            http: None,
            tls_roots: self.shared.tls_roots.clone(),
        };
        let info = self.describe(&plugin).result.map_err(LoadError::Describe)?;
        check_identity(&info)?;
        self.check_entry(&plugin)?;
        plugin.id = Arc::from(info.id().as_str());
        // The checks above are not the plugin's calls.
        plugin.stats = Arc::default();
        if kind == PluginKind::Channel {
            plugin.http = Some(Arc::new(http_policy(&info, settings, &plugin.tls_roots)?));
        }
        plugin.info = info;
        Ok(plugin)
    }

    /// Check the entry function's signature once, so calls need not (see `entry`).
    fn check_entry(&self, plugin: &Plugin) -> Result<(), LoadError> {
        let mut store = self.store(plugin, None);
        let instance = if plugin.kind == PluginKind::Channel {
            // Async worlds instantiate asynchronously; nothing here waits on I/O.
            super::run::block_on(plugin.pre.instance.instantiate_async(&mut store))
        } else {
            plugin.pre.instance.instantiate(&mut store)
        };
        instance
            .and_then(|instance| super::entry::check(plugin, &instance, &mut store))
            .map_err(|error| {
                LoadError::WrongWorld(format!(
                    "`{}` in `{}` does not have the `{}` world's signature: {error:#}",
                    plugin.kind.function(),
                    plugin.kind.export_name(plugin.wit_version),
                    plugin.kind.world(plugin.wit_version)
                ))
            })
    }

    fn classify(
        &self,
        component: &Component,
        imports: &[String],
        exports: &[String],
    ) -> Result<(PluginKind, WitVersion, Pre), LoadError> {
        let candidates: Vec<(PluginKind, WitVersion)> = PluginKind::ALL
            .into_iter()
            .flat_map(|kind| WitVersion::ALL.map(|version| (kind, version)))
            .filter(|(kind, version)| exports.contains(&kind.export_name(*version)))
            .collect();
        match candidates.as_slice() {
            [] => Err(LoadError::WrongWorld(format!(
                "this binary implements none of Wayline's plugin worlds: it must export one of {} (or the same at 0.1.0), but it exports [{}] and imports [{}]",
                PluginKind::ALL
                    .map(|k| format!("`{}`", k.export_name(WitVersion::V0_2)))
                    .join(", "),
                exports.join(", "),
                imports.join(", "),
            ))),
            [(kind, version)] => self
                .linkers
                .pre(*kind, *version, component)
                .map(|pre| (*kind, *version, pre))
                .map_err(|error| {
                    LoadError::WrongWorld(format!(
                        "this binary comes closest to the `{}` world but does not satisfy it: {}",
                        kind.world(*version),
                        describe_link_error(&error, *kind),
                    ))
                }),
            several => Err(LoadError::WrongWorld(format!(
                "this binary exports {}; a plugin implements exactly one world",
                several
                    .iter()
                    .map(|(k, v)| format!("`{}`", k.export_name(*v)))
                    .collect::<Vec<_>>()
                    .join(" and "),
            ))),
        }
    }
}

fn describe_link_error(error: &wasmtime::Error, kind: PluginKind) -> String {
    let chain = format!("{error:#}");
    let network = ["http", "smtp", "signatures"]
        .into_iter()
        .find(|name| chain.contains(&format!("wayline:plugin/{name}@")));
    if let Some(name) = network
        && kind != PluginKind::Channel
    {
        format!("it imports `wayline:plugin/{name}`, which only channel plugins may use ({chain})")
    } else {
        chain
    }
}

/// Whether a name is one the host gives a plugin: 1 to 64 lower-case letters, digits, `-` and
/// `_`, starting with a letter or digit. It names the plugin's key-value space and its files,
/// so nothing in it may separate, escape or hide.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

/// A version: 1 to 64 letters, digits, `.`, `-` and `+` (semver's characters), starting with a
/// digit.
pub fn valid_version(version: &str) -> bool {
    (1..=64).contains(&version.len())
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+".contains(&b))
        && version.as_bytes()[0].is_ascii_digit()
}

/// What a plugin says its name and version are must be names the host can give it.
fn check_identity(info: &PluginInfo) -> Result<(), LoadError> {
    if !valid_name(&info.name) {
        return Err(LoadError::BadIdentity(format!(
            "the plugin calls itself `{}`: a plugin's name is 1 to 64 lower-case letters, digits, `-` and `_`",
            info.name.escape_debug()
        )));
    }
    if !valid_version(&info.version) {
        return Err(LoadError::BadIdentity(format!(
            "the plugin gives its version as `{}`: a version is 1 to 64 letters, digits, `.`, `-` and `+`, starting with a digit",
            info.version.escape_debug()
        )));
    }
    Ok(())
}

/// Per-plugin limits may be tightened freely but never raised past what the engine is built for.
fn clamp(mut limits: Limits) -> Limits {
    limits.memory_bytes = limits.memory_bytes.min(super::limits::MAX_MEMORY_BYTES);
    limits
}

fn http_policy(
    info: &PluginInfo,
    settings: &PluginSettings,
    roots: &TlsRoots,
) -> Result<Egress, LoadError> {
    Egress::new(
        &info.outbound_hosts,
        &settings.approved_hosts,
        &settings.secrets,
        roots,
    )
    .map_err(|error| match error {
        EgressError::Declared(e) => {
            LoadError::Invalid(format!("the plugin declares an outbound host {e}"))
        }
        EgressError::Settings(e) => LoadError::Settings(e),
    })
}

/// Whether `bytes` is a core module (`true`) or a component (`false`); anything else is refused.
fn is_core_module(bytes: &[u8]) -> Result<bool, LoadError> {
    if bytes.len() < 8 || bytes[..4] != CORE_MODULE_HEADER[..4] {
        return Err(LoadError::NotWasm(format!(
            "it does not start with the `\\0asm` magic ({} bytes)",
            bytes.len()
        )));
    }
    match &bytes[..8] {
        header if header == COMPONENT_HEADER => Ok(false),
        header if header == CORE_MODULE_HEADER => Ok(true),
        other => Err(LoadError::Invalid(format!(
            "unsupported WebAssembly version/layer {:02x?}",
            &other[4..8]
        ))),
    }
}

/// A core module carrying wit-bindgen's component-type section, made into a component.
fn componentize(module: &[u8]) -> Result<Vec<u8>, LoadError> {
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|encoder| encoder.validate(true).encode())
        .map_err(|e| LoadError::NotComponentizable(format!("{e:#}")))
}

impl From<wasmtime::Error> for LoadError {
    fn from(error: wasmtime::Error) -> Self {
        LoadError::Invalid(format!("{error:#}"))
    }
}
