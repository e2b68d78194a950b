//! The test bed shared by the integration tests: a real Prosody on free loopback ports
//! ([`prosody`]) and a real XMPP client over plain c2s ([`client`]). Both wait for events
//! (a line Prosody logs, a stanza that arrives) with deadlines; neither sleeps to wait.
//!
//! Each test binary pulls this in with `mod common;`; not every binary uses every helper.

#![allow(dead_code)]

pub mod client;
pub mod mail;
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

/// Starts ferry for `cfg` with the bridges its tables name, on a store with a fixed test
/// key, and waits (with a deadline) until the `kind` gateway's component link is up.
/// Panics with Prosody's log when it does not come up.
pub async fn start_ferry(
    cfg: &ferry::config::Config,
    kind: ferry_bridge_api::BridgeKind,
    prosody: &prosody::Prosody,
) -> ferry::app::Running {
    let store =
        ferry::store::Store::open(&cfg.database.url, ferry::store::Cipher::from_key([7; 32]))
            .await
            .expect("store");
    store.migrate().await.expect("migrate");
    let bridges = ferry::bridges::from_config(cfg, &store).expect("bridges");
    let running = ferry::app::start(cfg, store, bridges)
        .await
        .expect("ferry starts");
    let gw = running.gateway(kind).expect("gateway");
    let mut up = gw.connected.clone();
    tokio::time::timeout(std::time::Duration::from_secs(20), up.wait_for(|v| *v))
        .await
        .unwrap_or_else(|_| panic!("not linked:\n{}", prosody.log()))
        .expect("link alive");
    running
}
