//! Write Wayline plugins in Rust.
//!
//! A plugin is a WebAssembly component that implements one of Wayline's worlds: a trigger, a
//! condition, an action, a scorer or a channel. Each world has a module here with the traits to
//! implement and an `export!` macro that wires your type up. Build it for
//! `wasm32-unknown-unknown` as a `cdylib`; Wayline accepts the core module as it is.
//!
//! A lead-scoring plugin in about ten lines:
//!
//! ```no_run
//! use wayline_sdk::scorer::{Contact, Event, NoConfig, PluginInfo, ScoreChange, Scorer};
//!
//! struct PricingClicks;
//!
//! impl Scorer for PricingClicks {
//!     type Config = NoConfig;
//!     fn describe() -> PluginInfo { PluginInfo::new("pricing-clicks", "1.0.0", "8 points per pricing click") }
//!     fn score(_config: NoConfig, _contact: Contact, event: Event) -> Result<Vec<ScoreChange>, String> {
//!         let clicked_pricing = event.name == "email_clicked" && event.text("link") == Some("pricing");
//!         Ok(clicked_pricing.then(|| ScoreChange::new(8.0, "clicked pricing in an email")).into_iter().collect())
//!     }
//! }
//!
//! wayline_sdk::scorer::export!(PricingClicks);
//! ```
//!
//! A channel plugin, here an SMS gateway, in about thirty lines. The host writes the API key
//! into the request (the plugin never holds it) and only for the gateway's host, retries what
//! the plugin calls retryable, and suppresses an address the plugin calls invalid:
//!
//! ```no_run
//! use wayline_sdk::channel::*;
//! use wayline_sdk::host::http::{Request, send};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Gateway { url: String }
//! impl PluginConfig for Gateway {}
//!
//! struct AcmeSms;
//!
//! impl Channel for AcmeSms {
//!     type Config = Gateway;
//!     fn describe() -> PluginInfo {
//!         let mut info = PluginInfo::new("acme-sms", "1.0.0", "SMS through the Acme gateway");
//!         info.outbound_hosts = vec!["api.acme-sms.example".into()];
//!         info
//!     }
//!     fn deliver(gateway: Gateway, message: Message) -> Result<Delivery, DeliveryFailure> {
//!         let body = serde_json::json!({"to": message.recipient, "text": message.body()});
//!         let response = send(&Request {
//!             method: "POST".into(),
//!             url: gateway.url,
//!             headers: vec![
//!                 ("authorization".into(), "Bearer {{secret:acme_key}}".into()),
//!                 ("idempotency-key".into(), message.id.clone()),
//!             ],
//!             body: Some(body.to_string().into_bytes()),
//!             timeout_ms: Some(5_000),
//!         })
//!         .map_err(|error| DeliveryFailure::retry(format!("{error:?}"), None))?;
//!         match DeliveryFailure::from_status(response.status, None, &response.body) {
//!             Some(failure) => Err(failure),
//!             None => Ok(Delivery::accepted(message.id)),
//!         }
//!     }
//! }
//!
//! wayline_sdk::channel::export!(AcmeSms);
//! ```
//!
//! A plugin that takes a config names its type as `Config`: a serde type implementing
//! [`PluginConfig`]. The SDK reads the operator's JSON into it once, when a journey is published
//! (`validate-config`), and hands every call the same value decoded from compact prepared bytes
//! the host keeps (see [`config`]), so the hot path never parses JSON.
#![deny(missing_docs)]
// The generated bindings are the canonical ABI glue; they must use `unsafe`.
#![allow(unsafe_code)]

pub mod config;
mod helpers;

pub use config::{NoConfig, PluginConfig};

#[cfg(feature = "arena-allocator")]
mod arena;
#[cfg(feature = "arena-allocator")]
pub use arena::ArenaAllocator;

// Plugins get the arena allocator unless they turn off the `arena-allocator` feature to bring
// their own `#[global_allocator]`.
#[cfg(all(feature = "arena-allocator", target_arch = "wasm32"))]
#[global_allocator]
static ALLOCATOR: ArenaAllocator = ArenaAllocator::new();

/// Bindings generated from the WIT contract, one module per world.
#[doc(hidden)]
pub mod worlds {
    #![allow(missing_docs)]

    /// The channel world imports everything the host offers; the other worlds reuse its types.
    pub mod channel {
        wit_bindgen::generate!({
            path: "../wit/0.2.0",
            world: "channel-plugin",
            pub_export_macro: true,
            export_macro_name: "export_channel",
            default_bindings_module: "wayline_sdk::worlds::channel",
            additional_derives: [PartialEq],
            generate_all,
        });
    }

    macro_rules! world_reusing_channel_imports {
        ($module:ident, $world:literal, $macro_name:literal, $bindings:literal) => {
            pub mod $module {
                wit_bindgen::generate!({
                    path: "../wit/0.2.0",
                    world: $world,
                    pub_export_macro: true,
                    export_macro_name: $macro_name,
                    default_bindings_module: $bindings,
                    with: {
                        "wayline:plugin/types@0.2.0": crate::worlds::channel::wayline::plugin::types,
                        "wayline:plugin/log@0.2.0": crate::worlds::channel::wayline::plugin::log,
                        "wayline:plugin/clock@0.2.0": crate::worlds::channel::wayline::plugin::clock,
                        "wayline:plugin/kv@0.2.0": crate::worlds::channel::wayline::plugin::kv,
                    },
                });
            }
        };
    }

    world_reusing_channel_imports!(
        trigger,
        "trigger-plugin",
        "export_trigger",
        "wayline_sdk::worlds::trigger"
    );
    world_reusing_channel_imports!(
        condition,
        "condition-plugin",
        "export_condition",
        "wayline_sdk::worlds::condition"
    );
    world_reusing_channel_imports!(
        action,
        "action-plugin",
        "export_action",
        "wayline_sdk::worlds::action"
    );
    world_reusing_channel_imports!(
        scorer,
        "scorer-plugin",
        "export_scorer",
        "wayline_sdk::worlds::scorer"
    );
}

pub use worlds::channel::wayline::plugin::types::{
    Attribute, ChannelConsent, ConfigProblem, ConsentState, Contact, Delivery, DeliveryFailure,
    Effect, EmittedEvent, Event, FailureKind, Message, MessageClass, PluginInfo, PreparedConfig,
    ProviderEvent, ProviderEventKind, ScoreChange, SendRequest, Value, WebhookError,
    WebhookRequest,
};

/// Host services every plugin may import: logging, the host's clock, a private key-value space.
pub mod host {
    pub use crate::worlds::channel::wayline::plugin::clock::now;
    pub use crate::worlds::channel::wayline::plugin::kv;
    pub use crate::worlds::channel::wayline::plugin::log::{Level, log};
    /// Outbound HTTP through the host (channel plugins only).
    pub mod http {
        pub use crate::worlds::channel::wayline::plugin::http::{
            HttpError, Request, Response, send,
        };
    }
    /// Email through an SMTP relay the operator approved (channel plugins only).
    pub mod smtp {
        pub use crate::worlds::channel::wayline::plugin::smtp::{Email, Relay, SmtpError, send};
    }
    /// A provider's webhook signature checked with a channel secret (channel plugins only).
    pub mod signatures {
        pub use crate::worlds::channel::wayline::plugin::signatures::{Digest, verify_hmac};
    }
}

/// Make panics visible to the host: the message goes out through the log import at error level,
/// prefixed `panic: `, just before the guest aborts, and the host reports it with the failed call.
#[doc(hidden)]
pub fn __install_panic_hook() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("(non-text panic payload)");
            let location = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            host::log(host::Level::Error, &format!("panic: {message}{location}"));
        }));
    });
}

macro_rules! world_module {
    (
        $(#[$doc:meta])* $module:ident, $export_macro:ident,
        $(#[$trait_doc:meta])* trait $trait_name:ident {
            $(#[$fn_doc:meta])* fn $fn_name:ident($($arg:ident: $arg_ty:ty),*) -> $ret:ty;
        }
    ) => {
        $(#[$doc])*
        pub mod $module {
            pub use crate::*;

            $(#[$trait_doc])*
            pub trait $trait_name {
                /// The config this plugin takes ([`NoConfig`] for none). `validate-config`
                /// reads it with [`PluginConfig::parse`] when a journey is published; every
                /// call gets it back from the prepared bytes the host keeps.
                type Config: PluginConfig;

                /// Who this plugin is: name, version, the config it takes, the hosts it needs.
                fn describe() -> PluginInfo;

                $(#[$fn_doc])*
                fn $fn_name($($arg: $arg_ty),*) -> $ret;
            }

            /// Export your type as this plugin: `export!(YourType);`, once per crate.
            pub use crate::$export_macro as export;
        }
    };
}

world_module!(
    /// Triggers decide whether an event enrolls a contact into a journey.
    ///
    /// Implement [`trigger::Trigger`], then `wayline_sdk::trigger::export!(YourType);`.
    trigger, __wayline_export_trigger,
    /// A trigger plugin.
    trait Trigger {
        /// Does `event` enroll `contact`?
        fn matches(config: Self::Config, event: Event, contact: Contact) -> Result<bool, String>;
    }
);
world_module!(
    /// Conditions pick the branch a contact takes, by label.
    ///
    /// Implement [`condition::Condition`], then `wayline_sdk::condition::export!(YourType);`.
    condition, __wayline_export_condition,
    /// A condition plugin.
    trait Condition {
        /// The label of the branch `contact` takes.
        fn evaluate(config: Self::Config, contact: Contact, event: Option<Event>) -> Result<String, String>;
    }
);
world_module!(
    /// Actions return effects that the host applies atomically.
    ///
    /// Implement [`action::Action`], then `wayline_sdk::action::export!(YourType);`.
    action, __wayline_export_action,
    /// An action plugin.
    trait Action {
        /// The effects to apply to `contact`.
        fn run(config: Self::Config, contact: Contact, event: Option<Event>) -> Result<Vec<Effect>, String>;
    }
);
world_module!(
    /// Scorers say how an event changes a contact's score, and why.
    ///
    /// Implement [`scorer::Scorer`], then `wayline_sdk::scorer::export!(YourType);`.
    scorer, __wayline_export_scorer,
    /// A scorer plugin.
    trait Scorer {
        /// How `event` changes `contact`'s score, one explained change per reason.
        fn score(config: Self::Config, contact: Contact, event: Event) -> Result<Vec<ScoreChange>, String>;
    }
);
/// Channels deliver one rendered message to a provider, and read what the provider reports
/// back through its webhooks.
///
/// Implement [`channel::Channel`], then `wayline_sdk::channel::export!(YourType);`.
pub mod channel {
    pub use crate::*;

    /// A channel plugin.
    pub trait Channel {
        /// The config this plugin takes ([`NoConfig`] for none). `validate-config` reads it
        /// with [`PluginConfig::parse`] when a journey is published; every call gets it back
        /// from the prepared bytes the host keeps.
        type Config: PluginConfig;

        /// Who this plugin is: name, version, the config it takes, the hosts it needs.
        fn describe() -> PluginInfo;

        /// Deliver `message`, or say why not in a way the host can act on.
        fn deliver(config: Self::Config, message: Message) -> Result<Delivery, DeliveryFailure>;

        /// What the provider reports in a request to `POST /v1/webhooks/{channel}`. Check its
        /// signature first ([`crate::host::signatures`]). The default takes no webhooks.
        fn parse_webhook(
            config: Self::Config,
            request: WebhookRequest,
        ) -> Result<Vec<ProviderEvent>, WebhookError> {
            let _ = (config, request);
            Err(WebhookError::Malformed(
                "this channel takes no webhooks".into(),
            ))
        }
    }

    /// Export your type as this plugin: `export!(YourType);`, once per crate.
    pub use crate::__wayline_export_channel as export;
}

// The export macros wrap the plugin's type in an adapter that installs the panic hook before
// each call, prepares the config in `validate-config` and decodes it for every other call, then
// hand the adapter to wit-bindgen's generated export macro. `PLUGIN` expands in the plugin's
// crate, so prepared bytes name the plugin and version that made them.

#[doc(hidden)]
#[macro_export]
macro_rules! __wayline_export_trigger {
    ($plugin:ty) => {
        // Exports exist only in the wasm build; natively a plugin crate is a plain library
        // whose logic its own unit tests can call.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WaylineExport;
            type Config = <$plugin as $crate::trigger::Trigger>::Config;
            const PLUGIN: &str = concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"));
            impl $crate::worlds::trigger::exports::wayline::plugin::trigger::Guest for WaylineExport {
                fn describe() -> $crate::PluginInfo {
                    $crate::__install_panic_hook();
                    <$plugin as $crate::trigger::Trigger>::describe()
                }
                fn validate_config(config: String) -> Result<$crate::PreparedConfig, Vec<$crate::ConfigProblem>> {
                    $crate::__install_panic_hook();
                    $crate::config::prepare::<Config>(&config, PLUGIN)
                }
                fn matches(config: Vec<u8>, event: $crate::Event, contact: $crate::Contact) -> Result<bool, String> {
                    $crate::__install_panic_hook();
                    let config = $crate::config::load::<Config>(&config, PLUGIN)?;
                    <$plugin as $crate::trigger::Trigger>::matches(config, event, contact)
                }
            }
            $crate::worlds::trigger::export_trigger!(WaylineExport with_types_in $crate::worlds::trigger);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wayline_export_condition {
    ($plugin:ty) => {
        // Exports exist only in the wasm build; natively a plugin crate is a plain library
        // whose logic its own unit tests can call.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WaylineExport;
            type Config = <$plugin as $crate::condition::Condition>::Config;
            const PLUGIN: &str = concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"));
            impl $crate::worlds::condition::exports::wayline::plugin::condition::Guest for WaylineExport {
                fn describe() -> $crate::PluginInfo {
                    $crate::__install_panic_hook();
                    <$plugin as $crate::condition::Condition>::describe()
                }
                fn validate_config(config: String) -> Result<$crate::PreparedConfig, Vec<$crate::ConfigProblem>> {
                    $crate::__install_panic_hook();
                    $crate::config::prepare::<Config>(&config, PLUGIN)
                }
                fn evaluate(config: Vec<u8>, contact: $crate::Contact, event: Option<$crate::Event>) -> Result<String, String> {
                    $crate::__install_panic_hook();
                    let config = $crate::config::load::<Config>(&config, PLUGIN)?;
                    <$plugin as $crate::condition::Condition>::evaluate(config, contact, event)
                }
            }
            $crate::worlds::condition::export_condition!(WaylineExport with_types_in $crate::worlds::condition);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wayline_export_action {
    ($plugin:ty) => {
        // Exports exist only in the wasm build; natively a plugin crate is a plain library
        // whose logic its own unit tests can call.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WaylineExport;
            type Config = <$plugin as $crate::action::Action>::Config;
            const PLUGIN: &str = concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"));
            impl $crate::worlds::action::exports::wayline::plugin::action::Guest for WaylineExport {
                fn describe() -> $crate::PluginInfo {
                    $crate::__install_panic_hook();
                    <$plugin as $crate::action::Action>::describe()
                }
                fn validate_config(config: String) -> Result<$crate::PreparedConfig, Vec<$crate::ConfigProblem>> {
                    $crate::__install_panic_hook();
                    $crate::config::prepare::<Config>(&config, PLUGIN)
                }
                fn run(config: Vec<u8>, contact: $crate::Contact, event: Option<$crate::Event>) -> Result<Vec<$crate::Effect>, String> {
                    $crate::__install_panic_hook();
                    let config = $crate::config::load::<Config>(&config, PLUGIN)?;
                    <$plugin as $crate::action::Action>::run(config, contact, event)
                }
            }
            $crate::worlds::action::export_action!(WaylineExport with_types_in $crate::worlds::action);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wayline_export_scorer {
    ($plugin:ty) => {
        // Exports exist only in the wasm build; natively a plugin crate is a plain library
        // whose logic its own unit tests can call.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WaylineExport;
            type Config = <$plugin as $crate::scorer::Scorer>::Config;
            const PLUGIN: &str = concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"));
            impl $crate::worlds::scorer::exports::wayline::plugin::scorer::Guest for WaylineExport {
                fn describe() -> $crate::PluginInfo {
                    $crate::__install_panic_hook();
                    <$plugin as $crate::scorer::Scorer>::describe()
                }
                fn validate_config(config: String) -> Result<$crate::PreparedConfig, Vec<$crate::ConfigProblem>> {
                    $crate::__install_panic_hook();
                    $crate::config::prepare::<Config>(&config, PLUGIN)
                }
                fn score(config: Vec<u8>, contact: $crate::Contact, event: $crate::Event) -> Result<Vec<$crate::ScoreChange>, String> {
                    $crate::__install_panic_hook();
                    let config = $crate::config::load::<Config>(&config, PLUGIN)?;
                    <$plugin as $crate::scorer::Scorer>::score(config, contact, event)
                }
            }
            $crate::worlds::scorer::export_scorer!(WaylineExport with_types_in $crate::worlds::scorer);
        };
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __wayline_export_channel {
    ($plugin:ty) => {
        // Exports exist only in the wasm build; natively a plugin crate is a plain library
        // whose logic its own unit tests can call.
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct WaylineExport;
            type Config = <$plugin as $crate::channel::Channel>::Config;
            const PLUGIN: &str = concat!(env!("CARGO_PKG_NAME"), "@", env!("CARGO_PKG_VERSION"));
            impl $crate::worlds::channel::exports::wayline::plugin::channel::Guest for WaylineExport {
                fn describe() -> $crate::PluginInfo {
                    $crate::__install_panic_hook();
                    <$plugin as $crate::channel::Channel>::describe()
                }
                fn validate_config(config: String) -> Result<$crate::PreparedConfig, Vec<$crate::ConfigProblem>> {
                    $crate::__install_panic_hook();
                    $crate::config::prepare::<Config>(&config, PLUGIN)
                }
                fn deliver(config: Vec<u8>, message: $crate::Message) -> Result<$crate::Delivery, $crate::DeliveryFailure> {
                    $crate::__install_panic_hook();
                    let config = $crate::config::load::<Config>(&config, PLUGIN)
                        .map_err(|message| $crate::DeliveryFailure {
                            kind: $crate::FailureKind::Permanent,
                            message,
                            retry_after_ms: None,
                        })?;
                    <$plugin as $crate::channel::Channel>::deliver(config, message)
                }
                fn parse_webhook(config: Vec<u8>, request: $crate::WebhookRequest) -> Result<Vec<$crate::ProviderEvent>, $crate::WebhookError> {
                    $crate::__install_panic_hook();
                    let config = $crate::config::load::<Config>(&config, PLUGIN)
                        .map_err($crate::WebhookError::Malformed)?;
                    <$plugin as $crate::channel::Channel>::parse_webhook(config, request)
                }
            }
            $crate::worlds::channel::export_channel!(WaylineExport with_types_in $crate::worlds::channel);
        };
    };
}
