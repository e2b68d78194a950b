//! A test double for [`Bridge`] and [`Session`]: records every send, lets a test inject
//! inbound events, and fails on cue by address.
//!
//! Addresses are lowercase words of `a-z0-9.+-`. Sending to an address that starts with
//! `reject` fails permanently (recipient unavailable); one that starts with `flaky` fails
//! transiently on its first two attempts; one that starts with `slow` is counted as begun
//! ([`FakeBridge::wait_begun`]) and takes half a second before it succeeds, like a slow
//! upstream; one that starts with `panic` panics, like a buggy bridge; every other send
//! succeeds and is recorded.
//! Registering with the password `wrong` is refused with `NotAuthorized`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::{
    AccountId, Bridge, BridgeError, BridgeKind, Credentials, ErrorKind, EventSink, Form, FormField,
    FormValues, Hub, Outbound, ParsedAddress, RemoteEvent, RemoteId, SendReceipt, Session,
    Shutdown,
};

/// What the fake has seen, shared between the bridge, its sessions and the test.
#[derive(Default)]
struct State {
    /// Every successful send: (account, recipient, message).
    sent: Vec<(AccountId, RemoteId, Outbound)>,
    /// Attempts per outbound key, to script transient failures.
    attempts: HashMap<String, u32>,
    /// The running sessions' sinks, so a test can inject inbound events.
    sinks: HashMap<AccountId, EventSink>,
    /// Accounts that logged in, in order.
    logins: Vec<(AccountId, String)>,
    /// Sends to `slow…` addresses begun so far.
    begun: usize,
    /// Events `serve` emits through the hub as soon as it starts, like kept texts that a
    /// bridge hands over at start-up.
    at_serve: Vec<(AccountId, RemoteEvent)>,
}

/// A bridge that talks to nothing. Clone it to keep a handle for the test.
#[derive(Clone)]
pub struct FakeBridge {
    kind: BridgeKind,
    /// Whether users must register before sending (email and SMS do, RSS does not).
    needs_registration: bool,
    /// Accept every send without recording it or waking anyone ([`FakeBridge::sink`]).
    sink: bool,
    state: Arc<Mutex<State>>,
    /// Woken on every send and login, so tests wait for events instead of sleeping.
    notify: Arc<tokio::sync::Notify>,
}

impl FakeBridge {
    pub fn new(kind: BridgeKind, needs_registration: bool) -> Self {
        FakeBridge {
            kind,
            needs_registration,
            sink: false,
            state: Arc::default(),
            notify: Arc::default(),
        }
    }

    /// A fake that accepts every send and keeps nothing of it: for benchmarks, where the
    /// bridge should cost next to nothing so that what is measured is ferry's own path.
    /// Addresses, registration and sessions work as with [`FakeBridge::new`]; `sent()`
    /// stays empty and sends wake nobody.
    pub fn sink(kind: BridgeKind, needs_registration: bool) -> Self {
        FakeBridge {
            sink: true,
            ..FakeBridge::new(kind, needs_registration)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every successful send so far.
    pub fn sent(&self) -> Vec<(AccountId, RemoteId, Outbound)> {
        self.lock().sent.clone()
    }

    /// Accounts that logged in so far, with their user JIDs.
    pub fn logins(&self) -> Vec<(AccountId, String)> {
        self.lock().logins.clone()
    }

    /// Waits until `pred` holds for the sends so far, or the deadline passes.
    pub async fn wait_sent(
        &self,
        deadline: std::time::Duration,
        pred: impl Fn(&[(AccountId, RemoteId, Outbound)]) -> bool,
    ) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            if pred(&self.lock().sent) {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return pred(&self.lock().sent);
            }
        }
    }

    /// Waits until `n` sends to `slow…` addresses have begun, or the deadline passes.
    pub async fn wait_begun(&self, n: usize, deadline: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            if self.lock().begun >= n {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return self.lock().begun >= n;
            }
        }
    }

    /// Waits until the account's session runs, or the deadline passes.
    pub async fn wait_session(&self, account: AccountId, deadline: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            if self.lock().sinks.contains_key(&account) {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Queues an event that [`Bridge::serve`] emits through the hub as soon as the gateway
    /// starts serving, before any session of the account may have logged in.
    pub fn emit_at_serve(&self, account: AccountId, event: RemoteEvent) {
        self.lock().at_serve.push((account, event));
    }

    /// Pushes an event as if it came from upstream for `account`.
    pub async fn inject(&self, account: AccountId, event: RemoteEvent) -> Result<(), BridgeError> {
        let sink = self.lock().sinks.get(&account).cloned();
        match sink {
            Some(sink) => sink.emit(event).await,
            None => Err(BridgeError::permanent("no session for that account")),
        }
    }

    fn valid(raw: &str) -> bool {
        !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
    }
}

#[async_trait]
impl Bridge for FakeBridge {
    fn kind(&self) -> BridgeKind {
        self.kind
    }

    fn display_name(&self) -> String {
        format!("Fake {} gateway", self.kind)
    }

    async fn serve(&self, hub: Hub) {
        let events = std::mem::take(&mut self.lock().at_serve);
        for ev in events {
            if hub.events.send(ev).await.is_err() {
                return;
            }
        }
    }

    fn gateway_prompt(&self) -> (String, String) {
        (
            "Enter a fake address (lowercase letters and digits).".to_owned(),
            "Address".to_owned(),
        )
    }

    fn requires_registration(&self) -> bool {
        self.needs_registration
    }

    fn registration_form(&self, _user: &str) -> Form {
        let fields = if self.needs_registration {
            vec![
                FormField::text("email", "Address", true, None),
                FormField::private("password", "Password", true),
            ]
        } else {
            Vec::new()
        };
        Form {
            title: "Fake registration".to_owned(),
            instructions: "Fill in any address; the password 'wrong' is refused.".to_owned(),
            fields,
        }
    }

    async fn register(&self, _user: &str, values: &FormValues) -> Result<Credentials, BridgeError> {
        if !self.needs_registration {
            return Ok(Credentials::new());
        }
        match (values.get("email"), values.get("password")) {
            (Some(_), Some(p)) if p == "wrong" => Err(BridgeError::new(
                ErrorKind::NotAuthorized,
                "fake server refused the login: authentication failed",
            )),
            (Some(e), Some(p)) if !e.is_empty() && !p.is_empty() => {
                let mut c = Credentials::new();
                c.insert("email".to_owned(), e.clone());
                c.insert("password".to_owned(), p.clone());
                Ok(c)
            }
            _ => Err(BridgeError::new(
                ErrorKind::NotAcceptable,
                "email and password are required",
            )),
        }
    }

    fn parse_address(&self, raw: &str) -> Result<ParsedAddress, BridgeError> {
        let raw = raw.trim();
        if Self::valid(raw) {
            Ok(ParsedAddress {
                id: RemoteId(raw.to_owned()),
                localpart: raw.to_owned(),
                display: raw.to_owned(),
            })
        } else {
            Err(BridgeError::malformed(format!("not a fake address: {raw}")))
        }
    }

    fn parse_localpart(&self, localpart: &str) -> Option<ParsedAddress> {
        self.parse_address(localpart).ok()
    }

    fn localparts_are_derived(&self) -> bool {
        true
    }

    async fn login(
        &self,
        account: AccountId,
        user: &str,
        _credentials: Credentials,
    ) -> Result<Arc<dyn Session>, BridgeError> {
        self.lock().logins.push((account, user.to_owned()));
        self.notify.notify_waiters();
        Ok(Arc::new(FakeSession {
            bridge: self.clone(),
            account,
        }))
    }
}

/// One fake user's session.
struct FakeSession {
    bridge: FakeBridge,
    account: AccountId,
}

#[async_trait]
impl Session for FakeSession {
    async fn run(&self, events: EventSink, mut shutdown: Shutdown) -> Result<(), BridgeError> {
        self.bridge.lock().sinks.insert(self.account, events);
        self.bridge.notify.notify_waiters();
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        self.bridge.lock().sinks.remove(&self.account);
        Ok(())
    }

    async fn send(&self, to: &RemoteId, msg: &Outbound) -> Result<SendReceipt, BridgeError> {
        if self.bridge.sink {
            return Ok(SendReceipt {
                remote_message_id: ["fake-", msg.key.as_str()].concat(),
                delivered: true,
                notice: None,
            });
        }
        if to.0.starts_with("panic") {
            panic!("fake bridge: told to panic by the address {}", to.0);
        }
        if to.0.starts_with("slow") {
            self.bridge.lock().begun += 1;
            self.bridge.notify.notify_waiters();
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let result = {
            let mut state = self.bridge.lock();
            let n = state.attempts.entry(msg.key.clone()).or_insert(0);
            *n += 1;
            let attempt = *n;
            if to.0.starts_with("reject") {
                Err(BridgeError::new(
                    ErrorKind::RecipientUnavailable,
                    "mailbox does not exist",
                ))
            } else if to.0.starts_with("flaky") && attempt <= 2 {
                Err(BridgeError::transient("fake upstream is busy"))
            } else {
                state.sent.push((self.account, to.clone(), msg.clone()));
                Ok(SendReceipt {
                    remote_message_id: format!("fake-{}", msg.key),
                    delivered: true,
                    notice: None,
                })
            }
        };
        self.bridge.notify.notify_waiters();
        result
    }
}
