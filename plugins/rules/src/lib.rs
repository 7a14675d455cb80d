//! What the first-party plugins share: config literals and how they compare with a contact's or
//! event's typed values, event-property filters, and config parsing with located problems.
//!
//! Config literals are JSON: numbers compare numerically with integers, numbers and timestamps
//! (milliseconds); strings with text; booleans with booleans; a string against a text list
//! means "the list contains it". A comparison of mismatched types is simply false.
//!
//! This is a plain library (no WIT bindings of its own), compiled into each plugin.

mod config;
mod filter;
mod literal;
mod op;
mod text;

pub use config::{Check, Entries, Path, Problems, ROOT, parse};
pub use filter::{PropertyFilter, check_filters};
pub use literal::{Literal, Subject};
pub use op::{Op, Takes};
pub use text::Text;
