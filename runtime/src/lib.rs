//! correlator: a log-correlation runtime whose detection logic (modules)
//! and actions (handlers) run as sandboxed WebAssembly components.
//!
//! A record flows: input ([`replay`] of a [`capture`], or the network:
//! [`listen`]) → parser ([`record`]) → flat batch →
//! every module ([`host`]) → validated events → every handler whose filter
//! ([`filter`]) selects them ([`pipeline`]). The app file ([`app`]) and the
//! configuration store ([`config_store`]) decide what runs; [`loader`] puts
//! it together; [`cli`] is the thin command line over all of it.

pub mod app;
pub mod capture;
pub mod cli;
pub mod clock_guard;
pub mod config_store;
pub mod delivery;
pub mod events_file;
pub mod filter;
pub mod follow;
pub mod host;
pub mod journal;
pub mod listen;
pub mod loader;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod receipts;
pub mod record;
pub mod replay;
pub mod service;
pub mod signals;
pub mod state_store;
pub mod stream;
pub mod types;
