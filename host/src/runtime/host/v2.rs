//! The 0.2.0 imports that 0.1.0 already had (`log`, `clock`, `kv`): the same host functions
//! under the new version's names. What 0.2.0 added lives in `smtp` and `signatures`.

use super::HostState;
use crate::runtime::bindings::{clock, kv, log, v2};

impl v2::types::Host for HostState {}

impl v2::log::Host for HostState {
    fn log(&mut self, level: v2::log::Level, message: String) -> wasmtime::Result<()> {
        use v2::log::Level as V2;
        let level = match level {
            V2::Trace => log::Level::Trace,
            V2::Debug => log::Level::Debug,
            V2::Info => log::Level::Info,
            V2::Warn => log::Level::Warn,
            V2::Error => log::Level::Error,
        };
        log::Host::log(self, level, message)
    }
}

impl v2::clock::Host for HostState {
    fn now(&mut self) -> wasmtime::Result<i64> {
        clock::Host::now(self)
    }
}

impl v2::kv::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        kv::Host::get(self, key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        kv::Host::set(self, key, value)
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        kv::Host::delete(self, key)
    }
}
