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
//! use wayline_sdk::scorer::{Contact, Event, PluginInfo, ConfigProblem, ScoreChange, Scorer};
//!
//! struct PricingClicks;
//!
//! impl Scorer for PricingClicks {
//!     fn describe() -> PluginInfo { PluginInfo::new("pricing-clicks", "1.0.0", "8 points per pricing click") }
//!     fn validate_config(_config: String) -> Result<(), Vec<ConfigProblem>> { Ok(()) }
//!     fn score(_config: String, _contact: Contact, event: Event) -> Result<Vec<ScoreChange>, String> {
//!         let clicked_pricing = event.name == "email_clicked" && event.text("link") == Some("pricing");
//!         Ok(clicked_pricing.then(|| ScoreChange::new(8.0, "clicked pricing in an email")).into_iter().collect())
//!     }
//! }
//!
//! wayline_sdk::scorer::export!(PricingClicks);
//! ```
#![deny(missing_docs)]
// The generated bindings are the canonical ABI glue; they must use `unsafe`.
#![allow(unsafe_code)]

mod helpers;

/// Bindings generated from the WIT contract, one module per world.
#[doc(hidden)]
pub mod worlds {
    #![allow(missing_docs)]

    /// The channel world imports everything the host offers; the other worlds reuse its types.
    pub mod channel {
        wit_bindgen::generate!({
            path: "../wit/0.1.0",
            world: "channel-plugin",
            pub_export_macro: true,
            export_macro_name: "export_channel",
            default_bindings_module: "wayline_sdk::worlds::channel",
            generate_all,
        });
    }

    macro_rules! world_reusing_channel_imports {
        ($module:ident, $world:literal, $macro_name:literal, $bindings:literal) => {
            pub mod $module {
                wit_bindgen::generate!({
                    path: "../wit/0.1.0",
                    world: $world,
                    pub_export_macro: true,
                    export_macro_name: $macro_name,
                    default_bindings_module: $bindings,
                    with: {
                        "wayline:plugin/types@0.1.0": crate::worlds::channel::wayline::plugin::types,
                        "wayline:plugin/log@0.1.0": crate::worlds::channel::wayline::plugin::log,
                        "wayline:plugin/clock@0.1.0": crate::worlds::channel::wayline::plugin::clock,
                        "wayline:plugin/kv@0.1.0": crate::worlds::channel::wayline::plugin::kv,
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
    Effect, EmittedEvent, Event, FailureKind, Message, PluginInfo, ScoreChange, SendRequest, Value,
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
}

macro_rules! world_module {
    ($(#[$doc:meta])* $module:ident, $trait_module:ident, $trait_name:ident, $export_macro:ident) => {
        $(#[$doc])*
        pub mod $module {
            pub use crate::*;
            /// Describe the plugin and check its config (exported by every plugin).
            /// `describe`, `validate-config` and the function this kind of plugin exists for.
            pub use crate::worlds::$module::exports::wayline::plugin::$trait_module::Guest as $trait_name;
            /// Export your type as this plugin: `export!(YourType);` once, at the crate root.
            pub use crate::worlds::$module::$export_macro as export;
        }
    };
}

world_module!(
    /// Triggers decide whether an event enrolls a contact into a journey.
    ///
    /// Implement [`trigger::Trigger`], then `wayline_sdk::trigger::export!(YourType);`.
    trigger, trigger, Trigger, export_trigger
);
world_module!(
    /// Conditions pick the branch a contact takes, by label.
    ///
    /// Implement [`condition::Condition`], then `wayline_sdk::condition::export!(YourType);`.
    condition, condition, Condition, export_condition
);
world_module!(
    /// Actions return effects that the host applies atomically.
    ///
    /// Implement [`action::Action`], then `wayline_sdk::action::export!(YourType);`.
    action, action, Action, export_action
);
world_module!(
    /// Scorers say how an event changes a contact's score, and why.
    ///
    /// Implement [`scorer::Scorer`], then `wayline_sdk::scorer::export!(YourType);`.
    scorer, scorer, Scorer, export_scorer
);
world_module!(
    /// Channels deliver one rendered message to a provider.
    ///
    /// Implement [`channel::Channel`], then `wayline_sdk::channel::export!(YourType);`.
    channel, channel, Channel, export_channel
);
