//! `wayline:plugin/clock`: the host's clock, virtual in tests and simulations.

use super::HostState;
use crate::runtime::bindings::clock;

impl clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<i64> {
        Ok(self.clock.now())
    }
}
