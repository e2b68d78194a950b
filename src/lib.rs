//! ferry as a library: the XMPP core that the `ferry` binary and the tests drive.
//!
//! See ARCHITECTURE.md for the map. In short: [`component`] keeps one XEP-0114 link per
//! bridge domain, [`router`] decides what each incoming stanza means, [`gateway`] carries
//! that out with [`service`] answering what is addressed to a domain itself, [`outbox`]
//! and [`relay`] move messages each way, [`store`] keeps everything durable, and [`app`]
//! wires them together with the bridges.

#![forbid(unsafe_code)]

pub mod app;
pub mod bridges;
pub mod component;
pub mod config;
pub mod gateway;
pub mod http;
pub mod jid;
pub mod metrics;
pub mod outbox;
pub mod relay;
pub mod router;
pub mod service;
pub mod sessions;
pub mod stanza;
pub mod store;
pub mod xml;

/// Every binary that links ferry (the `ferry` binary, tests, benchmarks) allocates with
/// mimalloc: routing a message makes many small, short-lived allocations across threads,
/// where glibc's allocator spent about a third of the runtime's CPU (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
