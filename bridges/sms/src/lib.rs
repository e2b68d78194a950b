//! ferry's SMS bridge: phone numbers as XMPP contacts, over Twilio, Telnyx, Vonage and
//! Kannel behind one [`provider::Provider`] interface.
//!
//! The gateway owns the numbers of `[[sms.number]]`; a user registers by claiming one
//! ([`store::SmsStore`] keeps the claims). Outbound texts leave from the user's number
//! through its provider ([`session`]); webhooks ([`webhook`]) bring texts and delivery
//! reports back, are verified before anything is read, and are kept in the store before
//! they are acknowledged, so a repeated webhook is taken once and a crash loses nothing.

pub mod number;
pub mod provider;
pub mod segments;
pub mod session;
pub mod store;
pub mod webhook;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ferry_bridge_api::{
    AccountId, Bridge, BridgeCommand, BridgeError, BridgeKind, Credentials, ErrorKind, FieldKind,
    Form, FormField, FormValues, Hub, ParsedAddress, RemoteId, Session,
};
use tokio::sync::{Notify, watch};

use crate::number::Number;
use crate::provider::{Context, Provider, ProviderConfig};
use crate::store::{ClaimOutcome, SmsStore, TextCounts};

/// Words that stop texts from a gateway number to the sender (any case), and that start
/// them again.
pub const STOP_WORDS: &[&str] = &["STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"];
pub const START_WORDS: &[&str] = &["START", "UNSTOP"];

/// One `[[sms.number]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberEntry {
    /// E.164.
    pub number: String,
    /// The `[[sms.provider]] name` it sends through.
    pub provider: String,
    /// The only user who may claim it; `None`: any allowed user.
    pub owner: Option<String>,
}

/// The `[sms]` table, as the bridge needs it.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How national numbers are read (ISO 3166 alpha-2).
    pub default_region: String,
    /// Texts per user per rolling 24 hours; 0 = unlimited.
    pub quota_per_day: u32,
    pub numbers: Vec<NumberEntry>,
    /// `[http] public_url` (trailing slash ignored): where providers reach the webhooks and
    /// clients the media.
    pub public_url: String,
    /// The largest inbound media item ferry fetches.
    pub max_media_bytes: usize,
}

/// The SMS bridge.
pub struct SmsBridge {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) providers: BTreeMap<String, Arc<dyn Provider>>,
    pub(crate) store: Arc<dyn SmsStore>,
    pub(crate) health: Health,
    /// Wakes the deliverer when a webhook kept a new text.
    pub(crate) wake: Notify,
    /// The core's channel, once [`Bridge::serve`] has started.
    pub(crate) hub: OnceLock<Hub>,
    /// The number each logged-in account sends from.
    pub(crate) accounts: Mutex<HashMap<AccountId, Number>>,
    /// Who holds which gateway number (number → bare JID), as last read from the store;
    /// `None` until the first read. Only for the registration form, which cannot wait for
    /// the store: every change of a claim goes through this bridge and reads it again, and
    /// `register` decides on the store's own answer.
    pub(crate) claims: tokio::sync::watch::Sender<Option<HashMap<String, String>>>,
    /// One reading of the claims at a time, so that an older reading never replaces a
    /// newer one.
    claims_reading: tokio::sync::Mutex<()>,
    /// Per account, the texts admitted against the quota that the store may not show yet.
    quota: Mutex<HashMap<AccountId, Arc<tokio::sync::Mutex<Reservations>>>>,
}

/// How long a text admitted by [`Bridge::admit`] may take to appear in the outbox before
/// its reservation is dropped. The core stores what it admitted within moments (its group
/// commit writes a batch as soon as no more messages are waiting); a text that is refused
/// after it was admitted (its batch could not be stored) never appears, and holds its
/// place in the quota this long.
const RESERVATION_MS: i64 = 10 * 60_000;

/// The quota's window: a rolling day.
const QUOTA_WINDOW_MS: i64 = 24 * 3_600_000;

/// One account's texts admitted for sending in the last [`RESERVATION_MS`], by the time
/// they were admitted, oldest first.
///
/// The core admits a message and stores it later, together with the messages after it
/// (group commit), so counting the outbox alone lets a burst past the quota. The count
/// that `admit` compares with the quota is therefore the outbox's rows in the window plus
/// the reserved texts whose rows are not there yet. Which ones those are follows from the
/// outbox too: every outbox row of an account was admitted here first and is stored after
/// it was admitted (its `created_at_ms` is not earlier), in the order of admission, so the
/// rows since the oldest reservation are reserved texts that have arrived, and the
/// reservations beyond their number are still on their way. A restart forgets the
/// reservations but not the rows already stored.
#[derive(Debug, Default)]
struct Reservations {
    admitted_at: VecDeque<i64>,
}

impl Reservations {
    /// Forgets reservations older than [`RESERVATION_MS`] at `now`.
    fn expire(&mut self, now: i64) {
        while self
            .admitted_at
            .front()
            .is_some_and(|&t| t < now - RESERVATION_MS)
        {
            self.admitted_at.pop_front();
        }
    }

    /// From when the outbox's rows may be reserved texts (`i64::MAX`: none are).
    fn mark(&self) -> i64 {
        self.admitted_at.front().copied().unwrap_or(i64::MAX)
    }

    /// The texts that count against the quota, given the outbox's counts since the
    /// window's start and since [`Reservations::mark`].
    fn used(&self, stored: TextCounts) -> i64 {
        let on_their_way = (self.admitted_at.len() as i64 - stored.since_mark).max(0);
        stored.since + on_their_way
    }

    /// Reserves a text admitted at `now` (kept in order should the clock step back).
    fn reserve(&mut self, now: i64) {
        let last = self.admitted_at.back().copied().unwrap_or(i64::MIN);
        self.admitted_at.push_back(now.max(last));
    }
}

/// Whether each provider answered its last call, and a way to watch for changes.
pub(crate) struct Health {
    problems: Mutex<BTreeMap<String, String>>,
    changed: watch::Sender<u64>,
}

impl Health {
    fn new() -> Health {
        Health {
            problems: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }

    /// Records how a call to `provider` went. Only failures of the provider itself count
    /// (unreachable, credentials refused), not a refused recipient.
    pub(crate) fn record<T>(&self, provider: &str, result: &Result<T, BridgeError>) {
        let problem = match result {
            Ok(_) => None,
            Err(e) if matches!(e.kind, ErrorKind::Transient | ErrorKind::NotAuthorized) => {
                Some(e.text.clone())
            }
            Err(_) => return,
        };
        let changed = {
            let mut p = self.problems.lock().unwrap_or_else(|e| e.into_inner());
            match problem {
                Some(text) => p.insert(provider.to_owned(), text.clone()) != Some(text),
                None => p.remove(provider).is_some(),
            }
        };
        if changed {
            match result {
                Ok(_) => tracing::info!(provider, "SMS provider answers again"),
                Err(e) => tracing::warn!(provider, "SMS provider failing: {}", e.text),
            }
            self.changed.send_modify(|v| *v += 1);
        }
    }

    pub(crate) fn problem(&self, provider: &str) -> Option<String> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(provider)
            .cloned()
    }

    pub(crate) fn all(&self) -> Vec<(String, String)> {
        self.problems
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl SmsBridge {
    /// Waits until the bridge has read who holds its numbers (it does when it starts
    /// serving); until then the registration form offers every number the config allows.
    pub async fn claims_read(&self) {
        let mut read = self.inner.claims.subscribe();
        let _ = read.wait_for(Option::is_some).await;
    }

    /// Builds the bridge and its providers. Fails when a provider's keys are unusable.
    pub fn new(
        mut settings: Settings,
        providers: &[ProviderConfig],
        store: Arc<dyn SmsStore>,
    ) -> Result<SmsBridge, BridgeError> {
        settings.public_url = settings.public_url.trim_end_matches('/').to_owned();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| BridgeError::permanent(format!("cannot build an HTTP client: {e}")))?;
        let ctx = Context {
            public_url: settings.public_url.clone(),
            http,
        };
        let mut built = BTreeMap::new();
        for cfg in providers {
            let p = provider::build(cfg, &ctx).map_err(|e| {
                BridgeError::permanent(format!("[[sms.provider]] {}: {e}", cfg.name))
            })?;
            built.insert(cfg.name.clone(), p);
        }
        for n in &settings.numbers {
            if !built.contains_key(&n.provider) {
                return Err(BridgeError::permanent(format!(
                    "number {} names no provider {:?}",
                    n.number, n.provider
                )));
            }
        }
        Ok(SmsBridge {
            inner: Arc::new(Inner {
                settings,
                providers: built,
                store,
                health: Health::new(),
                wake: Notify::new(),
                hub: OnceLock::new(),
                accounts: Mutex::default(),
                claims: tokio::sync::watch::Sender::new(None),
                claims_reading: tokio::sync::Mutex::new(()),
                quota: Mutex::default(),
            }),
        })
    }
}

impl Inner {
    /// The numbers `user` may claim: those reserved for nobody else in the configuration
    /// and held by nobody else (claimed, or assigned by an admin), as last read from the
    /// store. The number the user holds stays among them.
    fn claimable(&self, user: &str) -> Vec<&NumberEntry> {
        let claims = self.claims.borrow();
        self.settings
            .numbers
            .iter()
            .filter(|n| n.owner.as_deref().is_none_or(|o| o == user))
            .filter(|n| {
                claims
                    .as_ref()
                    .and_then(|c| c.get(&n.number))
                    .is_none_or(|holder| holder == user)
            })
            .collect()
    }

    /// Reads who holds which number from the store, for [`Inner::claimable`]. On failure
    /// the last reading stays.
    async fn read_claims(&self) {
        let _one = self.claims_reading.lock().await;
        match self.store.claims().await {
            Ok(claims) => {
                let by_number = claims.into_iter().map(|c| (c.number, c.jid)).collect();
                self.claims.send_replace(Some(by_number));
            }
            Err(e) => tracing::warn!("sms: cannot read who holds the numbers: {}", e.text),
        }
    }

    /// The quota reservations of `account`.
    fn reservations(&self, account: AccountId) -> Arc<tokio::sync::Mutex<Reservations>> {
        Arc::clone(
            self.quota
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(account)
                .or_default(),
        )
    }

    fn entry(&self, number: &str) -> Option<&NumberEntry> {
        self.settings.numbers.iter().find(|n| n.number == number)
    }

    /// Checks every provider's credentials; the outcome goes to [`Health`].
    async fn check_providers(&self) {
        for (name, p) in &self.providers {
            let r = p.check().await;
            self.health.record(name, &r);
            match r {
                Ok(()) => tracing::info!(provider = %name, "SMS provider credentials accepted"),
                Err(e) => {
                    tracing::error!(provider = %name, "SMS provider check failed: {}", e.text)
                }
            }
        }
    }

    fn parse_number(&self, raw: &str) -> Result<ParsedAddress, BridgeError> {
        let n = Number::parse(raw, &self.settings.default_region)?;
        Ok(ParsedAddress {
            id: RemoteId(n.as_str().to_owned()),
            localpart: n.as_str().to_owned(),
            display: raw.trim().to_owned(),
        })
    }
}

const COMMANDS: &[BridgeCommand] = &[
    BridgeCommand {
        node: "numbers",
        name: "Gateway numbers",
        help: "numbers — the gateway's numbers and who holds them (admins)",
        admin_only: true,
        field: None,
    },
    BridgeCommand {
        node: "assign",
        name: "Assign a number",
        help: "assign NUMBER JID — give a gateway number to a user (admins)",
        admin_only: true,
        field: Some(("args", "Number and JID")),
    },
    BridgeCommand {
        node: "free",
        name: "Free a number",
        help: "free NUMBER — take a gateway number back (admins)",
        admin_only: true,
        field: Some(("number", "Number")),
    },
];

#[async_trait]
impl Bridge for SmsBridge {
    fn kind(&self) -> BridgeKind {
        BridgeKind::Sms
    }

    fn display_name(&self) -> String {
        "SMS".to_owned()
    }

    fn gateway_prompt(&self) -> (String, String) {
        (
            "Enter a phone number: +E.164 (e.g. +12015550123), a national number, or a short code."
                .to_owned(),
            "Phone number".to_owned(),
        )
    }

    fn requires_registration(&self) -> bool {
        true
    }

    fn registration_form(&self, user: &str) -> Form {
        let options: Vec<(String, String)> = self
            .inner
            .claimable(user)
            .into_iter()
            .map(|n| (n.number.clone(), n.number.clone()))
            .collect();
        let value = (options.len() == 1).then(|| options[0].1.clone());
        Form {
            title: "SMS registration".to_owned(),
            instructions: if options.is_empty() {
                "There is no gateway number you may use; ask an admin.".to_owned()
            } else {
                "Choose the number your texts go out from.".to_owned()
            },
            fields: vec![FormField {
                var: "number".to_owned(),
                kind: FieldKind::ListSingle,
                label: "Your number".to_owned(),
                required: true,
                value,
                options,
            }],
        }
    }

    async fn register(&self, user: &str, values: &FormValues) -> Result<Credentials, BridgeError> {
        let raw = values.get("number").map(|s| s.trim()).unwrap_or_default();
        if raw.is_empty() {
            self.inner.read_claims().await;
        }
        let candidates = self.inner.claimable(user);
        let number = if raw.is_empty() && candidates.len() == 1 {
            candidates[0].number.clone()
        } else {
            Number::parse(raw, &self.inner.settings.default_region)?
                .as_str()
                .to_owned()
        };
        let Some(entry) = self.inner.entry(&number) else {
            return Err(BridgeError::new(
                ErrorKind::NotAcceptable,
                format!("{number} is not one of this gateway's numbers"),
            ));
        };
        if entry.owner.as_deref().is_some_and(|o| o != user) {
            return Err(BridgeError::new(
                ErrorKind::Forbidden,
                format!("{number} is reserved for another user"),
            ));
        }
        let outcome = self.inner.store.claim_number(&number, user).await?;
        self.inner.read_claims().await;
        match outcome {
            ClaimOutcome::Claimed => {}
            ClaimOutcome::TakenBy(_) => {
                return Err(BridgeError::new(
                    ErrorKind::NotAcceptable,
                    format!("{number} is already taken"),
                ));
            }
        }
        tracing::info!(user, %number, "number claimed");
        Ok(Credentials::from([("number".to_owned(), number)]))
    }

    fn parse_address(&self, raw: &str) -> Result<ParsedAddress, BridgeError> {
        self.inner.parse_number(raw)
    }

    fn parse_localpart(&self, localpart: &str) -> Option<ParsedAddress> {
        self.inner.parse_number(localpart).ok()
    }

    fn localparts_are_derived(&self) -> bool {
        true
    }

    async fn login(
        &self,
        account: AccountId,
        user: &str,
        credentials: Credentials,
    ) -> Result<Arc<dyn Session>, BridgeError> {
        let number = credentials
            .get("number")
            .cloned()
            .ok_or_else(|| BridgeError::permanent("no number on file; register again"))?;
        let entry = self.inner.entry(&number).ok_or_else(|| {
            BridgeError::permanent(format!("{number} is no longer a gateway number"))
        })?;
        if self.inner.store.owner_account(&number).await? != Some(account) {
            return Err(BridgeError::permanent(format!(
                "{number} is no longer yours; register again"
            )));
        }
        let provider = self
            .inner
            .providers
            .get(&entry.provider)
            .cloned()
            .ok_or_else(|| BridgeError::permanent("the number's provider is gone"))?;
        let number = Number::from_canonical(&number);
        self.inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account, number.clone());
        tracing::debug!(user, %number, "SMS session up");
        Ok(Arc::new(session::SmsSession::new(
            Arc::clone(&self.inner),
            number,
            provider,
        )))
    }

    fn http_routes(&self) -> Option<axum::Router> {
        Some(webhook::routes(Arc::clone(&self.inner)))
    }

    async fn serve(&self, hub: Hub) {
        let _ = self.inner.hub.set(hub.clone());
        self.inner.read_claims().await;
        webhook::serve(Arc::clone(&self.inner), hub).await;
    }

    async fn admit(&self, account: AccountId, to: &RemoteId) -> Result<(), BridgeError> {
        let quota = self.inner.settings.quota_per_day;
        // The account's reservations stay locked until this text is reserved, so that
        // concurrent admissions for one account count one after the other.
        let mut reserved = None;
        if quota > 0 {
            let mut r = self.inner.reservations(account).lock_owned().await;
            let now = now_ms();
            r.expire(now);
            let stored = self
                .inner
                .store
                .texts_since(account, now - QUOTA_WINDOW_MS, r.mark())
                .await?;
            if r.used(stored) >= i64::from(quota) {
                return Err(BridgeError::new(
                    ErrorKind::ResourceConstraint,
                    format!("daily quota of {quota} texts reached; try again later"),
                ));
            }
            reserved = Some((r, now));
        }
        let from = self
            .inner
            .accounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&account)
            .cloned();
        if let Some(from) = from
            && self
                .inner
                .store
                .opted_out(from.as_str(), to.as_str())
                .await?
        {
            return Err(opted_out());
        }
        if let Some((mut r, now)) = reserved {
            r.reserve(now);
        }
        Ok(())
    }

    async fn unregister(&self, user: &str) -> Result<(), BridgeError> {
        let released = self.inner.store.release_numbers_of(user).await;
        self.inner.read_claims().await;
        released
    }

    fn health(&self) -> Vec<String> {
        self.inner
            .health
            .all()
            .into_iter()
            .map(|(p, why)| format!("sms provider {p} did not answer its last call: {why}"))
            .collect()
    }

    fn commands(&self) -> Vec<BridgeCommand> {
        COMMANDS.to_vec()
    }

    async fn run_command(
        &self,
        _user: &str,
        admin: bool,
        node: &str,
        args: &str,
    ) -> Result<String, BridgeError> {
        if !admin {
            return Err(BridgeError::new(ErrorKind::Forbidden, "admins only"));
        }
        let region = &self.inner.settings.default_region;
        match node {
            "numbers" => {
                let claims = self.inner.store.claims().await?;
                let mut out = String::from("gateway numbers:");
                for n in &self.inner.settings.numbers {
                    let holder = claims
                        .iter()
                        .find(|c| c.number == n.number)
                        .map(|c| c.jid.as_str())
                        .unwrap_or("free");
                    let reserved = n
                        .owner
                        .as_deref()
                        .map(|o| format!(", reserved for {o}"))
                        .unwrap_or_default();
                    out.push_str(&format!(
                        "\n  {} via {}: {holder}{reserved}",
                        n.number, n.provider
                    ));
                }
                Ok(out)
            }
            "assign" => {
                // The JID is the last word; the number may be spelled with spaces.
                let Some((number, jid)) = args.trim().rsplit_once(char::is_whitespace) else {
                    return Err(BridgeError::malformed("usage: assign NUMBER JID"));
                };
                if !jid.contains('@') {
                    return Err(BridgeError::malformed("usage: assign NUMBER JID"));
                }
                let number = Number::parse(number, region)?;
                if self.inner.entry(number.as_str()).is_none() {
                    return Err(BridgeError::new(
                        ErrorKind::NotAcceptable,
                        format!("{number} is not one of this gateway's numbers"),
                    ));
                }
                let jid = jid.to_lowercase();
                let assigned = self.inner.store.assign_number(number.as_str(), &jid).await;
                self.inner.read_claims().await;
                assigned?;
                tracing::info!(%number, user = %jid, "number assigned by an admin");
                Ok(format!(
                    "{number} now belongs to {jid}; they register with it to start"
                ))
            }
            "free" => {
                let number = Number::parse(args, region)?;
                let released = self.inner.store.release_number(number.as_str()).await;
                self.inner.read_claims().await;
                if released? {
                    tracing::info!(%number, "number freed by an admin");
                    Ok(format!("{number} is free"))
                } else {
                    Ok(format!("{number} was not held by anyone"))
                }
            }
            other => Err(BridgeError::permanent(format!("unknown command {other:?}"))),
        }
    }
}

/// The answer to a text for someone who sent STOP.
pub(crate) fn opted_out() -> BridgeError {
    BridgeError::new(ErrorKind::NotAcceptable, "recipient opted out (STOP)")
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(since: i64, since_mark: i64) -> TextCounts {
        TextCounts { since, since_mark }
    }

    #[test]
    fn reservations_count_until_their_rows_are_stored() {
        let mut r = Reservations::default();
        assert_eq!(r.mark(), i64::MAX);
        assert_eq!(r.used(stored(5, 0)), 5);
        r.reserve(1_000);
        r.reserve(1_001);
        assert_eq!(r.mark(), 1_000);
        // Neither row is stored yet: both count beside the 5 older ones.
        assert_eq!(r.used(stored(5, 0)), 7);
        // The first is stored: it counts once.
        assert_eq!(r.used(stored(6, 1)), 7);
        // Both are.
        assert_eq!(r.used(stored(7, 2)), 7);
    }

    #[test]
    fn reservations_expire_and_stay_in_order() {
        let mut r = Reservations::default();
        r.reserve(1_000);
        r.reserve(900); // the clock stepped back
        assert_eq!(r.admitted_at, [1_000, 1_000]);
        r.reserve(5_000);
        r.expire(1_000 + RESERVATION_MS);
        assert_eq!(r.admitted_at.len(), 3);
        r.expire(1_001 + RESERVATION_MS);
        assert_eq!(r.admitted_at, [5_000]);
        assert_eq!(r.mark(), 5_000);
        r.expire(5_001 + RESERVATION_MS);
        assert_eq!(r.mark(), i64::MAX);
    }
}
