//! The feed engine: one fetch per feed for all its subscribers. It claims due feeds from
//! the store (a lease, so several ferry instances share the work), fetches them with the
//! [`Fetcher`], parses off the reactor, records entry keys and the next poll time in one
//! transaction, and hands new entries to every subscriber as [`RemoteEvent`]s. New
//! subscriptions are "pending" until the engine has a working copy of the feed: then the
//! subscriber gets [`RemoteEvent::Followed`] and the newest `initial_entries`, or
//! [`RemoteEvent::FollowRefused`] with the reason when the feed cannot be read.
//!
//! A user's quiet hours ([`QuietHours`], UTC) hold their new entries back: the store keeps
//! them per subscription ([`FeedStore::hold`]) and the engine sends them, oldest first, once
//! the quiet hours are over ([`FeedStore::held`], [`FeedStore::release`]), also after a
//! restart. A subscription may have its own delivery (`chat` or `headline`) that beats the
//! user's default.
//!
//! The store is behind [`FeedStore`], which the core implements over its database.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use ferry_bridge_api::{
    AccountId, BridgeError, ContactState, Hub, InboundMessage, RemoteEvent, RemoteId,
};
use sha1::{Digest, Sha1};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::fetch::{FetchError, FetchOutcome, FetchPolicy, Fetcher, Validators};
use crate::parse::{self, Entry, Feed};
use crate::schedule::{self, Hints, Intervals};

/// How many of the newest entries a feed row keeps for subscribers who join later.
const RECENT_KEPT: usize = 10;
/// At most this many new entries of one feed are delivered per poll (a feed that rewrites
/// its whole history is not allowed to flood anyone).
const MAX_NEW_PER_POLL: usize = 30;
/// How long a claim on a feed lasts; a crashed instance's feeds come back after it.
const LEASE: Duration = Duration::from_secs(300);
/// The engine looks at the store at least this often, for work other instances added.
const IDLE_CHECK: Duration = Duration::from_secs(60);
/// How often feeds nobody follows are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Held entries are sent in batches of this many.
const RELEASE_BATCH: usize = 100;
/// One day in milliseconds.
const DAY_MS: i64 = 86_400_000;

/// A feed as the store keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedRecord {
    /// The feed's id: the canonical address its JID maps to.
    pub feed: String,
    /// Where it is actually fetched from, when that differs (autodiscovery found it).
    pub fetch_url: Option<String>,
    pub title: Option<String>,
    pub icon: Option<String>,
    /// Validators exactly as the server sent them.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
    /// When to fetch next, unix ms.
    pub next_fetch_ms: i64,
    /// Failed fetches in a row.
    pub failures: i64,
    /// Why the last fetch failed, while it keeps failing.
    pub last_error: Option<String>,
    /// The last successful fetch, unix ms; `None` until the feed has worked once.
    pub last_ok_ms: Option<i64>,
    /// When new entries last appeared (or the feed says it was updated), unix ms.
    pub updated_ms: Option<i64>,
    /// The newest entries as JSON ([`StoredEntry`]s, newest first), for new subscribers.
    pub recent: String,
}

/// One subscription of a feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscriber {
    pub account: AccountId,
    /// Deliver as `headline` rather than `chat` (the feed's own choice, else the user's).
    pub headline: bool,
    /// Not yet confirmed to the user.
    pub pending: bool,
    /// The user's quiet hours, if they set any.
    pub quiet: Option<QuietHours>,
}

/// A user's quiet hours: a daily range of UTC times of day, from `from_min` (inclusive) to
/// `to_min` (exclusive), in minutes after midnight; when `from_min > to_min` the range wraps
/// midnight (`22:00-07:00`). ferry does not know the user's time zone, hence UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuietHours {
    pub from_min: u16,
    pub to_min: u16,
}

impl QuietHours {
    /// Reads `HH:MM-HH:MM` (24-hour clock, UTC); the text says what is wrong.
    pub fn parse(raw: &str) -> Result<QuietHours, String> {
        let usage = || {
            format!(
                "quiet hours are HH:MM-HH:MM in UTC (e.g. 22:00-07:00), or off; not {}",
                raw.trim()
            )
        };
        let (from, to) = raw.trim().split_once('-').ok_or_else(usage)?;
        let time = |t: &str| -> Result<u16, String> {
            let (h, m) = t.trim().split_once(':').ok_or_else(usage)?;
            let digits = |x: &str, n: std::ops::RangeInclusive<usize>| {
                n.contains(&x.len()) && x.bytes().all(|b| b.is_ascii_digit())
            };
            if !digits(h, 1..=2) || !digits(m, 2..=2) {
                return Err(usage());
            }
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| usage())?,
                m.parse().map_err(|_| usage())?,
            );
            if h > 23 || m > 59 {
                return Err(format!(
                    "{} is not a time of day (00:00 to 23:59)",
                    t.trim()
                ));
            }
            Ok(h * 60 + m)
        };
        let q = QuietHours {
            from_min: time(from)?,
            to_min: time(to)?,
        };
        if q.from_min == q.to_min {
            return Err("quiet hours cannot start and end at the same time".to_owned());
        }
        Ok(q)
    }

    /// Whether `at_ms` (unix milliseconds) falls within the quiet hours.
    pub fn contains(&self, at_ms: i64) -> bool {
        let minute = at_ms.rem_euclid(DAY_MS) / 60_000;
        let (from, to) = (i64::from(self.from_min), i64::from(self.to_min));
        if from < to {
            from <= minute && minute < to
        } else {
            minute >= from || minute < to
        }
    }

    /// The first end of the quiet hours after `at_ms` (unix milliseconds).
    pub fn end_after(&self, at_ms: i64) -> i64 {
        let day = at_ms - at_ms.rem_euclid(DAY_MS);
        let end = day + i64::from(self.to_min) * 60_000;
        if end > at_ms { end } else { end + DAY_MS }
    }
}

impl std::fmt::Display for QuietHours {
    /// `22:00-07:00`, as [`QuietHours::parse`] reads it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.from_min / 60,
            self.from_min % 60,
            self.to_min / 60,
            self.to_min % 60
        )
    }
}

/// What a store that does not implement holding entries answers.
fn unsupported(what: &str) -> BridgeError {
    BridgeError::permanent(format!("this store does not support {what}"))
}

/// The part of the database the engine needs. Every method is one transaction.
#[async_trait]
pub trait FeedStore: Send + Sync + 'static {
    async fn feed(&self, feed: &str) -> Result<Option<FeedRecord>, BridgeError>;
    /// Adds `account` as a pending subscriber of `feed` (creating the feed row, due now,
    /// if it is new). Subscribing again makes the subscription pending again; a delivery
    /// of its own ([`FeedStore::set_feed_delivery`]) beats `headline`.
    async fn subscribe(
        &self,
        account: AccountId,
        feed: &str,
        headline: bool,
        now_ms: i64,
    ) -> Result<(), BridgeError>;
    async fn unsubscribe(&self, account: AccountId, feed: &str) -> Result<bool, BridgeError>;
    /// The feeds `account` follows.
    async fn subscriptions(&self, account: AccountId) -> Result<Vec<FeedRecord>, BridgeError>;
    async fn subscribers(&self, feed: &str) -> Result<Vec<Subscriber>, BridgeError>;
    /// Marks a subscription confirmed.
    async fn confirm(&self, account: AccountId, feed: &str) -> Result<(), BridgeError>;
    /// Feeds with pending subscribers.
    async fn pending_feeds(&self, limit: usize) -> Result<Vec<String>, BridgeError>;
    /// Claims up to `limit` feeds that have subscribers, are due at `now_ms` and are not
    /// leased, leasing them until `lease_until_ms`.
    async fn claim_due_feeds(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<FeedRecord>, BridgeError>;
    /// Claims one feed whatever its schedule, unless someone holds its lease.
    async fn claim(
        &self,
        feed: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<FeedRecord>, BridgeError>;
    /// When the next subscribed feed is due.
    async fn next_due_ms(&self) -> Result<Option<i64>, BridgeError>;
    /// Writes the feed row back (releasing the lease) and records `keys`; returns those of
    /// `keys` that were not recorded before.
    async fn save(
        &self,
        record: &FeedRecord,
        keys: &[String],
        now_ms: i64,
    ) -> Result<HashSet<String>, BridgeError>;
    /// The user's delivery choice (`Some(true)`: headline), if they made one.
    async fn delivery(&self, account: AccountId) -> Result<Option<bool>, BridgeError>;
    /// Sets the user's delivery for their current and future subscriptions, except those
    /// with a delivery of their own.
    async fn set_delivery(&self, account: AccountId, headline: bool) -> Result<(), BridgeError>;
    /// Forgets the feeds nobody follows any more (rows and entry keys); how many.
    async fn prune(&self) -> Result<u64, BridgeError>;

    /// Gives one subscription a delivery of its own (`Some(true)`: headline), or takes it
    /// away (`None`); `headline` is the delivery it has from now on. False when `account`
    /// does not follow `feed`. A new subscription of the same feed keeps it.
    async fn set_feed_delivery(
        &self,
        _account: AccountId,
        _feed: &str,
        _choice: Option<bool>,
        _headline: bool,
    ) -> Result<bool, BridgeError> {
        Err(unsupported("a feed's own delivery"))
    }
    /// The subscriptions of `account` with a delivery of their own: (feed, headline), by feed.
    async fn feed_deliveries(
        &self,
        _account: AccountId,
    ) -> Result<Vec<(String, bool)>, BridgeError> {
        Ok(Vec::new())
    }
    /// The user's quiet hours, if they set any.
    async fn quiet(&self, _account: AccountId) -> Result<Option<QuietHours>, BridgeError> {
        Ok(None)
    }
    /// Sets (or, with `None`, ends) the user's quiet hours.
    async fn set_quiet(
        &self,
        _account: AccountId,
        _quiet: Option<QuietHours>,
    ) -> Result<(), BridgeError> {
        Err(unsupported("quiet hours"))
    }
    /// Keeps `entries` (oldest first) for one subscription until they are released; they go
    /// when the subscription does.
    async fn hold(
        &self,
        _account: AccountId,
        _feed: &str,
        _entries: &[StoredEntry],
        _now_ms: i64,
    ) -> Result<(), BridgeError> {
        Err(unsupported("quiet hours"))
    }
    /// The subscriptions that have entries held: (feed, subscriber).
    async fn held_subscriptions(&self) -> Result<Vec<(String, Subscriber)>, BridgeError> {
        Ok(Vec::new())
    }
    /// The oldest `limit` entries held for one subscription, oldest first, with their ids.
    async fn held(
        &self,
        _account: AccountId,
        _feed: &str,
        _limit: usize,
    ) -> Result<Vec<(i64, StoredEntry)>, BridgeError> {
        Ok(Vec::new())
    }
    /// Forgets the entries held for one subscription up to id `up_to` (they were sent).
    async fn release(
        &self,
        _account: AccountId,
        _feed: &str,
        _up_to: i64,
    ) -> Result<(), BridgeError> {
        Ok(())
    }
}

/// An entry as kept in [`FeedRecord::recent`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredEntry {
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    pub body: String,
}

impl StoredEntry {
    /// The entry as the store keeps it (JSON).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An entry the store kept; `None` if the text is not one.
    pub fn from_json(text: &str) -> Option<StoredEntry> {
        serde_json::from_str(text).ok()
    }

    fn from_entry(e: &Entry) -> StoredEntry {
        StoredEntry {
            key: e.key.clone(),
            title: e.title.clone(),
            link: e.link.clone(),
            body: e.body(),
        }
    }
}

/// Where feeds come from: the network ([`Fetcher`]) in ferry, memory in tests.
#[async_trait]
pub trait Source: Send + Sync + 'static {
    async fn fetch(&self, url: &str, validators: &Validators) -> Result<FetchOutcome, FetchError>;
    /// The feed address a site's page names (autodiscovery).
    async fn discover(&self, site: &str) -> Result<String, FetchError>;
}

#[async_trait]
impl Source for Fetcher {
    async fn fetch(&self, url: &str, validators: &Validators) -> Result<FetchOutcome, FetchError> {
        Fetcher::fetch(self, url, validators).await
    }

    async fn discover(&self, site: &str) -> Result<String, FetchError> {
        crate::discover::discover(self, site).await
    }
}

/// The `[rss]` settings the engine works with.
#[derive(Clone, Debug)]
pub struct Settings {
    pub intervals: Intervals,
    /// How many existing entries a new subscriber gets.
    pub initial_entries: usize,
    /// Default delivery: `headline` when true, `chat` otherwise.
    pub headline: bool,
    pub fetch: FetchPolicy,
    /// Feeds fetched at once (per host the fetcher allows fewer).
    pub concurrency: usize,
}

/// Wall-clock time that follows tokio's clock once read: unix milliseconds at start plus
/// the tokio time elapsed since, so tests with a paused clock move the schedule too.
struct Clock {
    wall_ms: i64,
    start: tokio::time::Instant,
}

impl Clock {
    fn new() -> Clock {
        Clock::at(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or_default(),
        )
    }

    /// A clock that reads `wall_ms` now.
    fn at(wall_ms: i64) -> Clock {
        Clock {
            wall_ms,
            start: tokio::time::Instant::now(),
        }
    }

    fn now_ms(&self) -> i64 {
        self.wall_ms.saturating_add(ms(self.start.elapsed()))
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What one poll found.
enum Poll {
    Fresh {
        feed: Feed,
        validators: Validators,
        max_age: Option<Duration>,
        fetch_url: Option<String>,
    },
    NotModified {
        max_age: Option<Duration>,
    },
    Failed {
        reason: String,
        retry_after: Option<Duration>,
        refused: bool,
    },
}

/// The engine; one per RSS gateway.
pub struct Engine {
    settings: Settings,
    store: Arc<dyn FeedStore>,
    source: Arc<dyn Source>,
    clock: Clock,
    /// Pokes the loop when a subscription is added.
    wake: Notify,
    /// Set once [`Engine::serve`] runs; events go there.
    hub: OnceLock<Hub>,
    /// Feeds being polled by this process right now.
    inflight: Mutex<HashSet<String>>,
    /// When to look for held entries whose quiet hours are over (unix ms); 0: at once.
    release_at: AtomicI64,
}

impl Engine {
    /// An engine fetching over the network with `settings.fetch`.
    pub fn new(settings: Settings, store: Arc<dyn FeedStore>) -> Result<Engine, BridgeError> {
        let fetcher = Fetcher::new(settings.fetch.clone())
            .map_err(|e| BridgeError::permanent(format!("cannot set up fetching: {e}")))?;
        Ok(Engine::with_source(settings, store, Arc::new(fetcher)))
    }

    /// An engine reading feeds from `source`.
    pub fn with_source(
        settings: Settings,
        store: Arc<dyn FeedStore>,
        source: Arc<dyn Source>,
    ) -> Engine {
        Engine {
            settings,
            store,
            source,
            clock: Clock::new(),
            wake: Notify::new(),
            hub: OnceLock::new(),
            inflight: Mutex::default(),
            release_at: AtomicI64::new(0),
        }
    }

    /// The same engine with its clock reading `wall_ms` (unix milliseconds) now; it still
    /// follows tokio's clock from there. For tests of quiet hours and times of day.
    pub fn starting_at(mut self, wall_ms: i64) -> Engine {
        self.clock = Clock::at(wall_ms);
        self
    }

    /// Now, in unix milliseconds, on the engine's clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn store(&self) -> &Arc<dyn FeedStore> {
        &self.store
    }

    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    /// Records a pending subscription and wakes the loop to confirm it.
    pub async fn follow(&self, account: AccountId, feed: &str) -> Result<(), BridgeError> {
        let headline = self
            .store
            .delivery(account)
            .await?
            .unwrap_or(self.settings.headline);
        self.store
            .subscribe(account, feed, headline, self.now_ms())
            .await?;
        self.wake.notify_one();
        Ok(())
    }

    /// Gives `account`'s subscription of `feed` a delivery of its own (`Some(true)`:
    /// headline), or back the user's default (`None`). False when they do not follow it.
    pub async fn set_feed_delivery(
        &self,
        account: AccountId,
        feed: &str,
        choice: Option<bool>,
    ) -> Result<bool, BridgeError> {
        let headline = match choice {
            Some(h) => h,
            None => self.default_delivery(account).await?,
        };
        self.store
            .set_feed_delivery(account, feed, choice, headline)
            .await
    }

    /// The user's own default delivery, else the configured one (`true`: headline).
    pub async fn default_delivery(&self, account: AccountId) -> Result<bool, BridgeError> {
        Ok(self
            .store
            .delivery(account)
            .await?
            .unwrap_or(self.settings.headline))
    }

    /// Sets or ends the user's quiet hours. Entries held that the new setting no longer
    /// holds go out now, before this returns when quiet hours end.
    pub async fn set_quiet(
        &self,
        account: AccountId,
        quiet: Option<QuietHours>,
    ) -> Result<(), BridgeError> {
        self.store.set_quiet(account, quiet).await?;
        if quiet.is_none() {
            // Released here, so that nothing newer overtakes them.
            for (feed, sub) in self.store.held_subscriptions().await? {
                if sub.account == account {
                    self.release_held(&feed, sub).await?;
                }
            }
        }
        self.release_at.store(0, Ordering::SeqCst);
        self.wake.notify_one();
        Ok(())
    }

    /// What a feed contact shows.
    pub async fn state_of(&self, feed: &str) -> Option<ContactState> {
        let rec = self.store.feed(feed).await.ok()??;
        Some(state_of(&rec))
    }

    /// Runs until `hub.shutdown`: confirms pending subscriptions and polls due feeds.
    pub async fn serve(self: Arc<Self>, hub: Hub) {
        let _ = self.hub.set(hub.clone());
        let mut shutdown = hub.shutdown.clone();
        let permits = Arc::new(Semaphore::new(self.settings.concurrency.max(1)));
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        loop {
            if *shutdown.borrow() {
                break;
            }
            while tasks.try_join_next().is_some() {}
            let started = match self.start_work(&permits, &mut tasks).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!("feeds: store: {e}");
                    0
                }
            };
            if self.now_ms() >= self.release_at.load(Ordering::SeqCst) {
                self.release_due().await;
            }
            if started > 0 {
                continue;
            }
            let wait = match self.store.next_due_ms().await {
                Ok(Some(at)) => {
                    Duration::from_millis(u64::try_from(at - self.now_ms()).unwrap_or(0))
                        .min(IDLE_CHECK)
                }
                _ => IDLE_CHECK,
            };
            let release_in = self.release_at.load(Ordering::SeqCst) - self.now_ms();
            let wait = wait.min(Duration::from_millis(
                u64::try_from(release_in).unwrap_or(0),
            ));
            // When everything due is already being polled, wait for a poll to finish.
            let wait = if wait.is_zero() && !tasks.is_empty() {
                IDLE_CHECK
            } else {
                wait.max(Duration::from_millis(5))
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = prune.tick() => match self.store.prune().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("forgot {n} feed(s) nobody follows"),
                    Err(e) => tracing::warn!("feeds: cannot prune: {e}"),
                },
                _ = shutdown.changed() => {}
            }
        }
        // Polls in flight finish (each is bounded by the fetch time limit).
        while tasks.join_next().await.is_some() {}
    }

    /// Starts polls for pending subscriptions and due feeds; how many it started.
    async fn start_work(
        self: &Arc<Self>,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
    ) -> Result<usize, BridgeError> {
        let mut started = 0;
        let now = self.now_ms();
        let lease_until = now + ms(LEASE);
        for feed in self.store.pending_feeds(64).await? {
            if self.is_inflight(&feed) {
                continue;
            }
            let Some(rec) = self.store.feed(&feed).await? else {
                continue;
            };
            let fresh = rec.last_ok_ms.is_some_and(|t| {
                rec.failures == 0 && now - t < ms(self.settings.intervals.default)
            });
            if fresh {
                // A working copy is at hand: no fetch needed to confirm.
                self.settle_pending(&rec, true).await;
                started += 1;
                continue;
            }
            if let Some(rec) = self.store.claim(&feed, now, lease_until).await? {
                self.spawn_poll(rec, permits, tasks);
                started += 1;
            }
        }
        let free = permits.available_permits();
        if free > 0 {
            for rec in self
                .store
                .claim_due_feeds(now, lease_until, free.min(256))
                .await?
            {
                if self.is_inflight(&rec.feed) {
                    continue;
                }
                self.spawn_poll(rec, permits, tasks);
                started += 1;
            }
        }
        Ok(started)
    }

    fn is_inflight(&self, feed: &str) -> bool {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(feed)
    }

    fn spawn_poll(
        self: &Arc<Self>,
        rec: FeedRecord,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
    ) {
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(rec.feed.clone());
        let me = Arc::clone(self);
        let permits = Arc::clone(permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let feed = rec.feed.clone();
            me.poll_and_deliver(rec).await;
            me.inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&feed);
        });
    }

    /// Fetches one feed and tells its subscribers what came of it.
    pub async fn poll_and_deliver(&self, mut rec: FeedRecord) {
        let poll = self.poll(&rec).await;
        let now = self.now_ms();
        let was_failing = rec.last_error.is_some();
        let mut new_entries: Vec<StoredEntry> = Vec::new();
        let outcome = match poll {
            Poll::Fresh {
                feed,
                validators,
                max_age,
                fetch_url,
            } => {
                let hints = Hints {
                    ttl: feed.ttl,
                    max_age,
                    skip_hours: feed.skip_hours.clone(),
                };
                let first = rec.last_ok_ms.is_none();
                rec.fetch_url = fetch_url.or(rec.fetch_url.take());
                rec.title = feed.title.clone().or(rec.title.take());
                rec.icon = feed.icon.clone().or(rec.icon.take());
                rec.etag = validators.etag;
                rec.last_modified = validators.last_modified;
                rec.failures = 0;
                rec.last_error = None;
                rec.last_ok_ms = Some(now);
                rec.next_fetch_ms = self.next_after_success(now, &hints);
                // The feed's own idea of its last update, else its newest entry's date.
                let newest = feed.entries.iter().filter_map(|e| e.published_ms).max();
                rec.updated_ms = feed.updated_ms.or(newest).or(rec.updated_ms).or(Some(now));
                let stored: Vec<StoredEntry> = feed
                    .entries
                    .iter()
                    .take(RECENT_KEPT)
                    .map(StoredEntry::from_entry)
                    .collect();
                rec.recent = serde_json::to_string(&stored).unwrap_or_default();
                let keys: Vec<Vec<String>> = feed.entries.iter().map(entry_keys).collect();
                let flat: Vec<String> = keys.iter().flatten().cloned().collect();
                let fresh = match self.store.save(&rec, &flat, now).await {
                    Ok(f) => f,
                    Err(e) => {
                        tracing::warn!(feed = %rec.feed, "feeds: cannot save: {e}");
                        return;
                    }
                };
                if !first {
                    // New only when none of its keys was seen (rotating GUIDs keep their link).
                    for (entry, ks) in feed.entries.iter().zip(&keys) {
                        if ks.iter().all(|k| fresh.contains(k)) {
                            new_entries.push(StoredEntry::from_entry(entry));
                        }
                    }
                    new_entries.truncate(MAX_NEW_PER_POLL);
                }
                self.count("ok");
                true
            }
            Poll::NotModified { max_age } => {
                rec.failures = 0;
                rec.last_error = None;
                rec.last_ok_ms = Some(now);
                let hints = Hints {
                    max_age,
                    ..Hints::default()
                };
                rec.next_fetch_ms = self.next_after_success(now, &hints);
                if let Err(e) = self.store.save(&rec, &[], now).await {
                    tracing::warn!(feed = %rec.feed, "feeds: cannot save: {e}");
                    return;
                }
                self.count("not_modified");
                true
            }
            Poll::Failed {
                reason,
                retry_after,
                refused,
            } => {
                rec.failures = rec.failures.saturating_add(1);
                let n = u32::try_from(rec.failures).unwrap_or(u32::MAX);
                let delay = match retry_after {
                    Some(d) => self.settings.intervals.after_retry_after(d),
                    None => self.settings.intervals.after_failure(n),
                };
                rec.next_fetch_ms = now + ms(schedule::jitter(delay, rand::random()));
                tracing::info!(feed = %rec.feed, failures = rec.failures, "feed fetch failed: {reason}");
                rec.last_error = Some(reason);
                if let Err(e) = self.store.save(&rec, &[], now).await {
                    tracing::warn!(feed = %rec.feed, "feeds: cannot save: {e}");
                    return;
                }
                self.count(if refused { "refused" } else { "error" });
                false
            }
        };
        // Tell the subscribers.
        let subscribers = match self.store.subscribers(&rec.feed).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(feed = %rec.feed, "feeds: store: {e}");
                return;
            }
        };
        let state = state_of(&rec);
        for sub in subscribers {
            if sub.pending {
                self.settle_one(&rec, sub, rec.last_ok_ms.is_some()).await;
                continue;
            }
            if outcome == was_failing {
                // Recovered, or started failing: the contact's presence changes.
                self.emit(
                    sub.account,
                    RemoteEvent::ContactStatus {
                        contact: RemoteId(rec.feed.clone()),
                        state: state.clone(),
                    },
                )
                .await;
            }
            if !new_entries.is_empty() {
                let oldest_first: Vec<StoredEntry> = new_entries.iter().rev().cloned().collect();
                self.deliver(&rec, sub, &oldest_first, now).await;
            }
        }
    }

    /// Sends new entries (oldest first) to one subscriber, or holds them during the user's
    /// quiet hours. Outside them, entries held before go first, so the order is kept.
    async fn deliver(&self, rec: &FeedRecord, sub: Subscriber, entries: &[StoredEntry], now: i64) {
        if let Some(q) = sub.quiet {
            if q.contains(now) {
                match self.store.hold(sub.account, &rec.feed, entries, now).await {
                    Ok(()) => {
                        self.release_at
                            .fetch_min(q.end_after(now), Ordering::SeqCst);
                        return;
                    }
                    // Better early than never.
                    Err(e) => {
                        tracing::warn!(feed = %rec.feed, "feeds: cannot hold entries, sending them: {e}")
                    }
                }
            } else if let Err(e) = self.release_held(&rec.feed, sub).await {
                tracing::warn!(feed = %rec.feed, "feeds: cannot release held entries: {e}");
            }
        }
        for e in entries {
            self.emit(
                sub.account,
                RemoteEvent::Message(message(rec, e, sub.headline)),
            )
            .await;
        }
    }

    /// Sends the entries held for subscriptions whose quiet hours are over, and notes when
    /// to look again: the earliest end of the quiet hours still holding some, and at least
    /// every [`IDLE_CHECK`] (another instance may have held some).
    async fn release_due(&self) {
        let now = self.now_ms();
        let mut next = now + ms(IDLE_CHECK);
        match self.store.held_subscriptions().await {
            Ok(held) => {
                for (feed, sub) in held {
                    match sub.quiet {
                        Some(q) if q.contains(now) => next = next.min(q.end_after(now)),
                        _ => {
                            if let Err(e) = self.release_held(&feed, sub).await {
                                tracing::warn!(%feed, "feeds: cannot release held entries: {e}");
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!("feeds: store: {e}"),
        }
        self.release_at.store(next, Ordering::SeqCst);
    }

    /// Sends every entry held for one subscription, oldest first, then forgets them (a crash
    /// in between sends them again; the relay drops the repeats).
    async fn release_held(&self, feed: &str, sub: Subscriber) -> Result<(), BridgeError> {
        let mut held = self.store.held(sub.account, feed, RELEASE_BATCH).await?;
        if held.is_empty() {
            return Ok(());
        }
        let rec = self.store.feed(feed).await?.unwrap_or_else(|| FeedRecord {
            feed: feed.to_owned(),
            ..FeedRecord::default()
        });
        while let Some(&(last, _)) = held.last() {
            for (_, e) in &held {
                self.emit(
                    sub.account,
                    RemoteEvent::Message(message(&rec, e, sub.headline)),
                )
                .await;
            }
            self.store.release(sub.account, feed, last).await?;
            if held.len() < RELEASE_BATCH {
                break;
            }
            held = self.store.held(sub.account, feed, RELEASE_BATCH).await?;
        }
        Ok(())
    }

    fn next_after_success(&self, now: i64, hints: &Hints) -> i64 {
        let d = self.settings.intervals.after_success(hints);
        let at = now + ms(schedule::jitter(d, rand::random()));
        schedule::skip_hours(at, &hints.skip_hours)
    }

    /// Confirms (or refuses) every pending subscriber of a feed without fetching it.
    async fn settle_pending(&self, rec: &FeedRecord, works: bool) {
        match self.store.subscribers(&rec.feed).await {
            Ok(subs) => {
                for sub in subs.into_iter().filter(|s| s.pending) {
                    self.settle_one(rec, sub, works).await;
                }
            }
            Err(e) => tracing::warn!(feed = %rec.feed, "feeds: store: {e}"),
        }
    }

    /// Confirms a pending subscription with the newest entries, or refuses it when the
    /// feed has never worked.
    async fn settle_one(&self, rec: &FeedRecord, sub: Subscriber, works: bool) {
        let contact = RemoteId(rec.feed.clone());
        if !works {
            let reason = rec
                .last_error
                .clone()
                .unwrap_or_else(|| "the feed could not be read".to_owned());
            let _ = self.store.unsubscribe(sub.account, &rec.feed).await;
            self.emit(sub.account, RemoteEvent::FollowRefused { contact, reason })
                .await;
            return;
        }
        if let Err(e) = self.store.confirm(sub.account, &rec.feed).await {
            tracing::warn!(feed = %rec.feed, "feeds: store: {e}");
            return;
        }
        self.emit(
            sub.account,
            RemoteEvent::Followed {
                contact: contact.clone(),
                nick: rec.title.clone(),
            },
        )
        .await;
        self.emit(
            sub.account,
            RemoteEvent::ContactStatus {
                contact,
                state: state_of(rec),
            },
        )
        .await;
        let recent: Vec<StoredEntry> = serde_json::from_str(&rec.recent).unwrap_or_default();
        let n = self.settings.initial_entries.min(recent.len());
        for e in recent[..n].iter().rev() {
            self.emit(
                sub.account,
                RemoteEvent::Message(message(rec, e, sub.headline)),
            )
            .await;
        }
    }

    async fn emit(&self, account: AccountId, event: RemoteEvent) {
        if let Some(hub) = self.hub.get() {
            let _ = hub.events.send((account, event)).await;
        }
    }

    fn count(&self, outcome: &'static str) {
        if let Some(hub) = self.hub.get() {
            hub.count("ferry_feed_fetches_total", outcome);
        }
    }

    /// Fetches and parses one feed; finds the feed of a site page on the first fetch.
    async fn poll(&self, rec: &FeedRecord) -> Poll {
        let url = rec.fetch_url.clone().unwrap_or_else(|| rec.feed.clone());
        let validators = Validators {
            etag: rec.etag.clone(),
            last_modified: rec.last_modified.clone(),
        };
        match self.source.fetch(&url, &validators).await {
            Ok(fetched) => match read(fetched, |final_url| final_url != rec.feed).await {
                Ok(poll) => poll,
                Err(e) if rec.last_ok_ms.is_none() && rec.fetch_url.is_none() => {
                    // Not a feed: perhaps the site's page, which names its feed.
                    self.poll_discovered(&rec.feed, e).await
                }
                Err(e) => not_a_feed(e),
            },
            Err(e) => failed(&e),
        }
    }

    async fn poll_discovered(&self, site: &str, parse_error: String) -> Poll {
        let found = match self.source.discover(site).await {
            Ok(u) => u,
            Err(e) => {
                return Poll::Failed {
                    reason: format!("{parse_error}, and no feed was found on the site ({e})"),
                    retry_after: e.retry_after(),
                    refused: e.is_refusal(),
                };
            }
        };
        match self.source.fetch(&found, &Validators::default()).await {
            Ok(fetched) => read(fetched, |_| true).await.unwrap_or_else(not_a_feed),
            Err(e) => failed(&e),
        }
    }
}

/// What a fetched body gives: the feed (remembering where it was fetched from when
/// `keep_url` says that address is worth keeping), or why it is not one.
async fn read(fetched: FetchOutcome, keep_url: impl Fn(&str) -> bool) -> Result<Poll, String> {
    match fetched {
        FetchOutcome::NotModified { max_age } => Ok(Poll::NotModified { max_age }),
        FetchOutcome::Fetched {
            body,
            final_url,
            validators,
            max_age,
            ..
        } => {
            let fetch_url = keep_url(&final_url).then(|| final_url.clone());
            let feed = parse_off_reactor(body, final_url).await?;
            Ok(Poll::Fresh {
                feed,
                validators,
                max_age,
                fetch_url,
            })
        }
    }
}

fn not_a_feed(reason: String) -> Poll {
    Poll::Failed {
        reason,
        retry_after: None,
        refused: false,
    }
}

fn failed(e: &FetchError) -> Poll {
    Poll::Failed {
        reason: e.to_string(),
        retry_after: e.retry_after(),
        refused: e.is_refusal(),
    }
}

/// Parses on the blocking pool, so a large feed never stalls the reactor.
async fn parse_off_reactor(body: Vec<u8>, url: String) -> Result<Feed, String> {
    match tokio::task::spawn_blocking(move || parse::parse_feed(&body, &url)).await {
        Ok(Ok(feed)) => Ok(feed),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) => Err(format!("parser failed: {e}")),
    }
}

/// The keys an entry is known by: its own key, and its link, so an entry whose id changes
/// on every fetch (rotating GUIDs) is still recognised.
fn entry_keys(e: &Entry) -> Vec<String> {
    let mut keys = vec![e.key.clone()];
    if let Some(link) = &e.link {
        let k = if link.len() > 200 {
            format!("h:{}", hex::encode(Sha1::digest(link.as_bytes())))
        } else {
            format!("link:{link}")
        };
        if k != e.key {
            keys.push(k);
        }
    }
    keys
}

/// The message one entry becomes for one subscriber.
fn message(rec: &FeedRecord, e: &StoredEntry, headline: bool) -> InboundMessage {
    let mut h = Sha1::new();
    h.update(rec.feed.as_bytes());
    h.update([0]);
    h.update(e.key.as_bytes());
    InboundMessage {
        from: Some(RemoteId(rec.feed.clone())),
        remote_message_id: format!("rss:{}", hex::encode(h.finalize())),
        body: e.body.clone(),
        subject: if headline { e.title.clone() } else { None },
        thread: None,
        nick: rec.title.clone(),
        links: e.link.iter().cloned().collect(),
        headline,
        ..Default::default()
    }
}

/// What a feed contact shows: its title and last update, or `xa` with the error.
pub fn state_of(rec: &FeedRecord) -> ContactState {
    let title = rec.title.clone();
    let status = match (&rec.last_error, rec.last_ok_ms) {
        (Some(err), _) => Some(err.clone()),
        (None, Some(_)) => {
            let name = title.clone().unwrap_or_else(|| rec.feed.clone());
            Some(match rec.updated_ms {
                Some(t) => format!("{name} · updated {}", format_utc(t)),
                None => name,
            })
        }
        (None, None) => Some("waiting for the first fetch".to_owned()),
    };
    ContactState {
        available: rec.last_error.is_none(),
        status,
        name: title,
        avatar_url: rec.icon.clone(),
    }
}

/// `2026-11-25 14:03 UTC` from unix milliseconds.
pub fn format_utc(at_ms: i64) -> String {
    let secs = at_ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

/// An in-memory [`FeedStore`] for tests and benchmarks.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
}

#[derive(Default)]
struct MemoryInner {
    feeds: HashMap<String, (FeedRecord, i64)>,
    subs: HashMap<(AccountId, String), Subscriber>,
    keys: HashSet<(String, String)>,
    delivery: HashMap<AccountId, bool>,
    /// Subscriptions' own deliveries.
    own_delivery: HashMap<(AccountId, String), bool>,
    quiet: HashMap<AccountId, QuietHours>,
    /// (id, account, feed, entry), in id order.
    held: Vec<(i64, AccountId, String, StoredEntry)>,
    last_held_id: i64,
}

impl MemoryStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many entry keys are recorded for `feed`.
    pub fn key_count(&self, feed: &str) -> usize {
        self.lock().keys.iter().filter(|(f, _)| f == feed).count()
    }

    /// How many entries are held for `account`.
    pub fn held_count(&self, account: AccountId) -> usize {
        self.lock()
            .held
            .iter()
            .filter(|(_, a, _, _)| *a == account)
            .count()
    }
}

impl MemoryInner {
    fn subscriber(&self, s: &Subscriber) -> Subscriber {
        Subscriber {
            quiet: self.quiet.get(&s.account).copied(),
            ..*s
        }
    }
}

#[async_trait]
impl FeedStore for MemoryStore {
    async fn feed(&self, feed: &str) -> Result<Option<FeedRecord>, BridgeError> {
        Ok(self.lock().feeds.get(feed).map(|(r, _)| r.clone()))
    }
    async fn subscribe(
        &self,
        account: AccountId,
        feed: &str,
        headline: bool,
        now_ms: i64,
    ) -> Result<(), BridgeError> {
        let mut g = self.lock();
        g.feeds.entry(feed.to_owned()).or_insert_with(|| {
            (
                FeedRecord {
                    feed: feed.to_owned(),
                    next_fetch_ms: now_ms,
                    ..FeedRecord::default()
                },
                0,
            )
        });
        let key = (account, feed.to_owned());
        let headline = g.own_delivery.get(&key).copied().unwrap_or(headline);
        g.subs.insert(
            key,
            Subscriber {
                account,
                headline,
                pending: true,
                quiet: None,
            },
        );
        Ok(())
    }
    async fn unsubscribe(&self, account: AccountId, feed: &str) -> Result<bool, BridgeError> {
        let mut g = self.lock();
        let key = (account, feed.to_owned());
        g.own_delivery.remove(&key);
        g.held.retain(|(_, a, f, _)| !(*a == account && f == feed));
        Ok(g.subs.remove(&key).is_some())
    }
    async fn subscriptions(&self, account: AccountId) -> Result<Vec<FeedRecord>, BridgeError> {
        let g = self.lock();
        let mut out: Vec<FeedRecord> = g
            .subs
            .keys()
            .filter(|(a, _)| *a == account)
            .filter_map(|(_, f)| g.feeds.get(f).map(|(r, _)| r.clone()))
            .collect();
        out.sort_by(|a, b| a.feed.cmp(&b.feed));
        Ok(out)
    }
    async fn subscribers(&self, feed: &str) -> Result<Vec<Subscriber>, BridgeError> {
        let g = self.lock();
        let mut out: Vec<Subscriber> = g
            .subs
            .iter()
            .filter(|((_, f), _)| f == feed)
            .map(|(_, s)| g.subscriber(s))
            .collect();
        out.sort_by_key(|s| s.account);
        Ok(out)
    }
    async fn confirm(&self, account: AccountId, feed: &str) -> Result<(), BridgeError> {
        if let Some(s) = self.lock().subs.get_mut(&(account, feed.to_owned())) {
            s.pending = false;
        }
        Ok(())
    }
    async fn pending_feeds(&self, limit: usize) -> Result<Vec<String>, BridgeError> {
        let g = self.lock();
        let mut out: Vec<String> = g
            .subs
            .iter()
            .filter(|(_, s)| s.pending)
            .map(|((_, f), _)| f.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        out.sort();
        out.truncate(limit);
        Ok(out)
    }
    async fn claim_due_feeds(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<FeedRecord>, BridgeError> {
        let mut g = self.lock();
        let subscribed: HashSet<String> = g.subs.keys().map(|(_, f)| f.clone()).collect();
        let mut due: Vec<(i64, String)> = g
            .feeds
            .iter()
            .filter(|(f, (r, lease))| {
                subscribed.contains(*f) && r.next_fetch_ms <= now_ms && *lease <= now_ms
            })
            .map(|(f, (r, _))| (r.next_fetch_ms, f.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut out = Vec::new();
        for (_, f) in due {
            if let Some((r, lease)) = g.feeds.get_mut(&f) {
                *lease = lease_until_ms;
                out.push(r.clone());
            }
        }
        Ok(out)
    }
    async fn claim(
        &self,
        feed: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<FeedRecord>, BridgeError> {
        let mut g = self.lock();
        match g.feeds.get_mut(feed) {
            Some((r, lease)) if *lease <= now_ms => {
                *lease = lease_until_ms;
                Ok(Some(r.clone()))
            }
            _ => Ok(None),
        }
    }
    async fn next_due_ms(&self) -> Result<Option<i64>, BridgeError> {
        let g = self.lock();
        let subscribed: HashSet<&String> = g.subs.keys().map(|(_, f)| f).collect();
        Ok(g.feeds
            .iter()
            .filter(|(f, _)| subscribed.contains(f))
            .map(|(_, (r, lease))| r.next_fetch_ms.max(*lease))
            .min())
    }
    async fn save(
        &self,
        record: &FeedRecord,
        keys: &[String],
        _now_ms: i64,
    ) -> Result<HashSet<String>, BridgeError> {
        let mut g = self.lock();
        g.feeds.insert(record.feed.clone(), (record.clone(), 0));
        let mut fresh = HashSet::new();
        for k in keys {
            if g.keys.insert((record.feed.clone(), k.clone())) {
                fresh.insert(k.clone());
            }
        }
        Ok(fresh)
    }
    async fn delivery(&self, account: AccountId) -> Result<Option<bool>, BridgeError> {
        Ok(self.lock().delivery.get(&account).copied())
    }
    async fn prune(&self) -> Result<u64, BridgeError> {
        let mut g = self.lock();
        let followed: HashSet<String> = g.subs.keys().map(|(_, f)| f.clone()).collect();
        let before = g.feeds.len();
        g.feeds.retain(|f, _| followed.contains(f));
        g.keys.retain(|(f, _)| followed.contains(f));
        Ok((before - g.feeds.len()) as u64)
    }

    async fn set_delivery(&self, account: AccountId, headline: bool) -> Result<(), BridgeError> {
        let mut g = self.lock();
        g.delivery.insert(account, headline);
        let inner = &mut *g;
        for (key, s) in inner.subs.iter_mut() {
            if key.0 == account && !inner.own_delivery.contains_key(key) {
                s.headline = headline;
            }
        }
        Ok(())
    }

    async fn set_feed_delivery(
        &self,
        account: AccountId,
        feed: &str,
        choice: Option<bool>,
        headline: bool,
    ) -> Result<bool, BridgeError> {
        let mut g = self.lock();
        let key = (account, feed.to_owned());
        let Some(s) = g.subs.get_mut(&key) else {
            return Ok(false);
        };
        s.headline = headline;
        match choice {
            Some(c) => g.own_delivery.insert(key, c),
            None => g.own_delivery.remove(&key),
        };
        Ok(true)
    }

    async fn feed_deliveries(
        &self,
        account: AccountId,
    ) -> Result<Vec<(String, bool)>, BridgeError> {
        let g = self.lock();
        let mut out: Vec<(String, bool)> = g
            .own_delivery
            .iter()
            .filter(|((a, _), _)| *a == account)
            .map(|((_, f), h)| (f.clone(), *h))
            .collect();
        out.sort();
        Ok(out)
    }

    async fn quiet(&self, account: AccountId) -> Result<Option<QuietHours>, BridgeError> {
        Ok(self.lock().quiet.get(&account).copied())
    }

    async fn set_quiet(
        &self,
        account: AccountId,
        quiet: Option<QuietHours>,
    ) -> Result<(), BridgeError> {
        let mut g = self.lock();
        match quiet {
            Some(q) => g.quiet.insert(account, q),
            None => g.quiet.remove(&account),
        };
        Ok(())
    }

    async fn hold(
        &self,
        account: AccountId,
        feed: &str,
        entries: &[StoredEntry],
        _now_ms: i64,
    ) -> Result<(), BridgeError> {
        let mut g = self.lock();
        if !g.subs.contains_key(&(account, feed.to_owned())) {
            return Ok(());
        }
        for e in entries {
            g.last_held_id += 1;
            let id = g.last_held_id;
            g.held.push((id, account, feed.to_owned(), e.clone()));
        }
        Ok(())
    }

    async fn held_subscriptions(&self) -> Result<Vec<(String, Subscriber)>, BridgeError> {
        let g = self.lock();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for (_, a, f, _) in &g.held {
            if seen.insert((*a, f.clone()))
                && let Some(s) = g.subs.get(&(*a, f.clone()))
            {
                out.push((f.clone(), g.subscriber(s)));
            }
        }
        Ok(out)
    }

    async fn held(
        &self,
        account: AccountId,
        feed: &str,
        limit: usize,
    ) -> Result<Vec<(i64, StoredEntry)>, BridgeError> {
        Ok(self
            .lock()
            .held
            .iter()
            .filter(|(_, a, f, _)| *a == account && f == feed)
            .take(limit)
            .map(|(id, _, _, e)| (*id, e.clone()))
            .collect())
    }

    async fn release(&self, account: AccountId, feed: &str, up_to: i64) -> Result<(), BridgeError> {
        self.lock()
            .held
            .retain(|(id, a, f, _)| !(*a == account && f == feed && *id <= up_to));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(1_795_615_380_000), "2026-11-25 14:03 UTC");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29 00:00 UTC");
    }

    /// 2026-01-01 00:00 UTC plus `h` hours and `m` minutes, in unix ms.
    fn at(h: i64, m: i64) -> i64 {
        1_767_225_600_000 + (h * 60 + m) * 60_000
    }

    #[test]
    fn quiet_hours_parse_and_may_wrap_midnight() {
        let q = QuietHours::parse("22:00-07:00").expect("wraps");
        assert_eq!((q.from_min, q.to_min), (22 * 60, 7 * 60));
        assert_eq!(q.to_string(), "22:00-07:00");
        for (h, m, quiet) in [
            (21, 59, false),
            (22, 0, true),
            (23, 59, true),
            (24, 0, true),
            (30, 59, true),
            (31, 0, false),
            (12, 0, false),
        ] {
            assert_eq!(q.contains(at(h, m)), quiet, "{h}:{m:02}");
        }
        // Ends at the next 07:00: the same day before midnight's turn, else the next one.
        assert_eq!(q.end_after(at(23, 0)), at(31, 0));
        assert_eq!(q.end_after(at(26, 30)), at(31, 0));

        let q = QuietHours::parse(" 9:30-17:05 ").expect("within a day");
        assert_eq!(q.to_string(), "09:30-17:05");
        assert!(!q.contains(at(9, 29)) && q.contains(at(9, 30)));
        assert!(q.contains(at(17, 4)) && !q.contains(at(17, 5)));
        assert_eq!(q.end_after(at(10, 0)), at(17, 5));
        assert_eq!(
            QuietHours::parse("0:00-23:59").map(|q| q.to_min),
            Ok(23 * 60 + 59)
        );
    }

    #[test]
    fn bad_quiet_hours_are_refused_with_a_reason() {
        for bad in [
            "",
            "22",
            "22:00",
            "22:00-",
            "22-07",
            "2200-0700",
            "aa:bb-cc:dd",
            "22:0-07:00",
            "22:00-07:00-08:00",
        ] {
            let e = QuietHours::parse(bad).expect_err(bad);
            assert!(
                e.starts_with("quiet hours are HH:MM-HH:MM in UTC (e.g. 22:00-07:00), or off"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            QuietHours::parse("24:00-07:00"),
            Err("24:00 is not a time of day (00:00 to 23:59)".to_owned())
        );
        assert_eq!(
            QuietHours::parse("22:00-07:60"),
            Err("07:60 is not a time of day (00:00 to 23:59)".to_owned())
        );
        assert_eq!(
            QuietHours::parse("08:00-08:00"),
            Err("quiet hours cannot start and end at the same time".to_owned())
        );
    }

    #[test]
    fn a_failing_feed_shows_xa_with_the_reason() {
        let mut rec = FeedRecord {
            feed: "https://x.org/f".into(),
            title: Some("X".into()),
            last_ok_ms: Some(0),
            updated_ms: Some(0),
            ..FeedRecord::default()
        };
        let s = state_of(&rec);
        assert!(s.available);
        assert_eq!(
            s.status.as_deref(),
            Some("X · updated 1970-01-01 00:00 UTC")
        );
        rec.last_error = Some("http status 500".into());
        let s = state_of(&rec);
        assert!(!s.available);
        assert_eq!(s.status.as_deref(), Some("http status 500"));
    }
}
