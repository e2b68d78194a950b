//! The test bed shared by the integration tests: a real Prosody on free loopback ports
//! ([`prosody`]) and a real XMPP client over plain c2s ([`client`]). Both wait for events
//! (a line Prosody logs, a stanza that arrives) with deadlines; neither sleeps to wait.
//!
//! Each test binary pulls this in with `mod common;`; not every binary uses every helper.

#![allow(dead_code)]

pub mod client;
pub mod prosody;

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then released).
///
/// Another process may take it before the caller binds it; [`prosody::Prosody::start`]
/// retries with fresh ports when that happens.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0 to find a free port")
}
