//! ferry as a library: the XMPP core that the `ferry` binary and the tests drive.
//!
//! See ARCHITECTURE.md for the map. In short: [`component`] keeps one XEP-0114 link per
//! bridge domain, [`router`] decides what each incoming stanza means, [`service`] answers
//! what is addressed to a gateway domain itself, [`store`] keeps everything durable, and
//! [`app`] wires them together with the bridges.

#![forbid(unsafe_code)]

pub mod config;
pub mod store;
pub mod xml;
