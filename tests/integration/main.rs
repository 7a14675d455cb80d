//! Wayline's integration tests, one module per feature, run through the real interfaces.
//! Plugins and fixtures are built from source by `cargo xtask plugins` (or `cargo xtask test`).

mod server;
mod support;

mod activation;
mod admin;
mod api;
mod approval;
mod backup;
mod cache;
mod cli;
mod consent;
mod contacts;
mod crash;
mod delivery;
mod email;
mod faults;
mod gateways;
mod hostile;
mod journeys;
mod lifecycle;
mod loading;
mod openapi;
mod plugins;
mod races;
mod reports;
mod roles;
mod scoring;
mod segment;
mod segments;
mod standing;
mod transfer;
mod uploads;
mod versions;
mod webhook;
mod wedged_log;
