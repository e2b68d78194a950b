//! The test bed shared by the integration tests: a real Prosody on free loopback ports
//! ([`prosody`]), a real XMPP client over plain c2s ([`client`]), and waiting helpers so
//! that no test ever sleeps for a fixed time.
//!
//! Each test binary pulls this in with `mod common;`; not every binary uses every helper.

#![allow(dead_code)]

pub mod client;
pub mod prosody;

use std::future::Future;
use std::panic::Location;
use std::time::Duration;

use tokio::time::Instant;

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

/// The pause between two polls: short at first, then backing off to 50 ms.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(u64::from((attempt + 1) * 5).min(50))
}

/// Polls `f` until it returns true; panics (naming the caller's line) when `within` passes.
#[track_caller]
pub fn wait_for<F: Fn() -> bool>(within: Duration, f: F) -> impl Future<Output = ()> {
    let caller = Location::caller();
    async move {
        let deadline = Instant::now() + within;
        let mut attempt = 0;
        while !f() {
            if Instant::now() >= deadline {
                panic!("condition at {caller} not met within {within:?}");
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// Like [`wait_for`], with a condition that has to await something (a query, a connect).
#[track_caller]
pub fn wait_for_async<F, Fut>(within: Duration, mut f: F) -> impl Future<Output = ()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let caller = Location::caller();
    async move {
        let deadline = Instant::now() + within;
        let mut attempt = 0;
        while !f().await {
            if Instant::now() >= deadline {
                panic!("condition at {caller} not met within {within:?}");
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}

/// Polls `f` until it yields a value, and returns that value; panics when `within` passes.
#[track_caller]
pub fn poll_until<T, F, Fut>(within: Duration, mut f: F) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let caller = Location::caller();
    async move {
        let deadline = Instant::now() + within;
        let mut attempt = 0;
        loop {
            if let Some(v) = f().await {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("no value from the poll at {caller} within {within:?}");
            }
            tokio::time::sleep(backoff(attempt)).await;
            attempt += 1;
        }
    }
}
