//! The feed engine on a paused tokio clock: feeds come from memory, the store is the
//! in-memory one, and virtual hours pass in milliseconds. Covers confirming a subscription
//! with the newest entries, polling at the polite interval (lengthened by a TTL), honouring
//! Retry-After, backing off after errors, delivering a new entry once (also when its GUID
//! rotates), refusing a feed that never worked, one fetch for many subscribers, a
//! restart that does not refetch at once, a feed's own delivery beating the user's
//! default, and quiet hours holding entries until they end (on a clock set to a time of
//! day), also across a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use ferry_bridge_api::{AccountId, Counters, Hub, RemoteEvent};
use ferry_rss::engine::{Engine, FeedStore, MemoryStore, QuietHours, Settings, Source};
use ferry_rss::fetch::{FetchError, FetchOutcome, FetchPolicy, Validators};
use ferry_rss::schedule::Intervals;
use tokio::sync::{mpsc, watch};

const FEED: &str = "https://feeds.example/rss";
const MIN: Duration = Duration::from_secs(60);

/// What the memory source answers for a URL.
#[derive(Clone)]
enum Answer {
    Feed(String),
    Status(u16, Option<Duration>),
}

#[derive(Default)]
struct MemorySource {
    answers: Mutex<HashMap<String, Answer>>,
    /// (url, tokio instant) of every fetch.
    log: Mutex<Vec<(String, tokio::time::Instant)>>,
    /// Signalled on every fetch.
    fetched: tokio::sync::Notify,
}

impl MemorySource {
    fn set(&self, url: &str, a: Answer) {
        self.answers.lock().expect("lock").insert(url.to_owned(), a);
    }
    fn fetches(&self, url: &str) -> Vec<tokio::time::Instant> {
        self.log
            .lock()
            .expect("lock")
            .iter()
            .filter(|(u, _)| u == url)
            .map(|(_, t)| *t)
            .collect()
    }

    /// Waits (on the virtual clock, at most `within`) until `url` has been fetched `n`
    /// times; the instants of its fetches.
    async fn wait_fetches(
        &self,
        url: &str,
        n: usize,
        within: Duration,
    ) -> Vec<tokio::time::Instant> {
        let wait = async {
            loop {
                let notified = self.fetched.notified();
                let got = self.fetches(url);
                if got.len() >= n {
                    return got;
                }
                notified.await;
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("{url} not fetched {n} times within {within:?}"))
    }
}

/// Minutes between consecutive instants.
fn gaps(times: &[tokio::time::Instant]) -> Vec<Duration> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[async_trait]
impl Source for MemorySource {
    async fn fetch(&self, url: &str, _v: &Validators) -> Result<FetchOutcome, FetchError> {
        self.log
            .lock()
            .expect("lock")
            .push((url.to_owned(), tokio::time::Instant::now()));
        self.fetched.notify_waiters();
        let answer = self.answers.lock().expect("lock").get(url).cloned();
        match answer {
            Some(Answer::Feed(body)) => Ok(FetchOutcome::Fetched {
                body: body.into_bytes(),
                final_url: url.to_owned(),
                validators: Validators::default(),
                max_age: None,
                content_type: Some("application/rss+xml".into()),
            }),
            Some(Answer::Status(code, retry_after)) => {
                Err(FetchError::Status { code, retry_after })
            }
            None => Err(FetchError::Status {
                code: 404,
                retry_after: None,
            }),
        }
    }
    async fn discover(&self, _site: &str) -> Result<String, FetchError> {
        Err(FetchError::Status {
            code: 404,
            retry_after: None,
        })
    }
}

#[derive(Default)]
struct NoCounters;
impl Counters for NoCounters {
    fn count(&self, _metric: &'static str, _outcome: &'static str) {}
}

fn rss(items: &[(&str, &str)], ttl: Option<u32>) -> String {
    let ttl = ttl.map(|t| format!("<ttl>{t}</ttl>")).unwrap_or_default();
    let mut s = format!(
        "<?xml version='1.0'?><rss version='2.0'><channel><title>Example</title><link>https://feeds.example/</link><description>d</description>{ttl}"
    );
    for (guid, title) in items {
        s.push_str(&format!(
            "<item><guid>{guid}</guid><title>{title}</title><link>https://feeds.example/{title}</link><description>{title} text</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

struct Rig {
    engine: Arc<Engine>,
    store: Arc<MemoryStore>,
    source: Arc<MemorySource>,
    events: mpsc::Receiver<(AccountId, RemoteEvent)>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn settings(default_min: u32, min_min: u32) -> Settings {
    Settings {
        intervals: Intervals {
            default: MIN * default_min,
            min: MIN * min_min,
        },
        initial_entries: 3,
        headline: false,
        fetch: FetchPolicy::default(),
        concurrency: 8,
    }
}

fn rig_on(store: Arc<MemoryStore>, source: Arc<MemorySource>, s: Settings) -> Rig {
    let engine = Engine::with_source(s, store.clone() as Arc<dyn FeedStore>, source.clone());
    start(engine, store, source)
}

/// A rig whose engine's clock reads `wall_ms` (unix ms) at start.
fn rig_at(store: Arc<MemoryStore>, source: Arc<MemorySource>, s: Settings, wall_ms: i64) -> Rig {
    let engine = Engine::with_source(s, store.clone() as Arc<dyn FeedStore>, source.clone())
        .starting_at(wall_ms);
    start(engine, store, source)
}

fn start(engine: Engine, store: Arc<MemoryStore>, source: Arc<MemorySource>) -> Rig {
    let engine = Arc::new(engine);
    let (tx, events) = mpsc::channel(1024);
    let (stop, shutdown) = watch::channel(false);
    let hub = Hub {
        events: tx,
        shutdown,
        counters: Arc::new(NoCounters),
    };
    let task = tokio::spawn(Arc::clone(&engine).serve(hub));
    Rig {
        engine,
        store,
        source,
        events,
        stop,
        task,
    }
}

fn rig(s: Settings) -> Rig {
    rig_on(Arc::default(), Arc::default(), s)
}

impl Rig {
    /// The next event, waiting at most a virtual day.
    async fn next(&mut self) -> (AccountId, RemoteEvent) {
        tokio::time::timeout(Duration::from_secs(24 * 3600), self.events.recv())
            .await
            .expect("an event within a virtual day")
            .expect("engine alive")
    }

    fn drain(&mut self) -> Vec<(AccountId, RemoteEvent)> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e);
        }
        out
    }

    async fn stop(self) -> (Arc<MemoryStore>, Arc<MemorySource>) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        (self.store, self.source)
    }
}

fn bodies(events: &[(AccountId, RemoteEvent)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            RemoteEvent::Message(m) => Some(m.body.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_new_subscriber_gets_the_newest_entries_then_polls_are_polite() {
    let mut r = rig(settings(60, 5));
    let items: Vec<(String, String)> = (1..=5)
        .rev()
        .map(|i| (format!("g{i}"), format!("Entry{i}")))
        .collect();
    let refs: Vec<(&str, &str)> = items
        .iter()
        .map(|(g, t)| (g.as_str(), t.as_str()))
        .collect();
    r.source.set(FEED, Answer::Feed(rss(&refs, None)));
    r.engine.follow(AccountId(1), FEED).await.expect("follow");

    match r.next().await {
        (AccountId(1), RemoteEvent::Followed { nick, .. }) => {
            assert_eq!(nick.as_deref(), Some("Example"))
        }
        other => panic!("expected Followed, got {other:?}"),
    }
    assert!(matches!(
        r.next().await.1,
        RemoteEvent::ContactStatus { .. }
    ));
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(r.next().await);
    }
    let b = bodies(&got);
    assert_eq!(b.len(), 3);
    assert!(
        b[0].starts_with("Entry3") && b[2].starts_with("Entry5"),
        "{b:?}"
    );

    // Ten more fetches, each an hour (±10 % jitter) after the one before.
    let times = r.source.wait_fetches(FEED, 11, MIN * 60 * 12).await;
    for gap in gaps(&times) {
        assert!(gap >= MIN * 54 && gap <= MIN * 66, "gap {gap:?}");
    }
    // One more: by then the tenth poll has been handled, and nothing new was sent.
    r.source.wait_fetches(FEED, 12, MIN * 70).await;
    assert!(r.drain().is_empty(), "nothing new, nothing sent");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_feed_ttl_lengthens_the_interval() {
    let mut r = rig(settings(60, 5));
    r.source
        .set(FEED, Answer::Feed(rss(&[("a", "A")], Some(180))));
    r.engine.follow(AccountId(1), FEED).await.expect("follow");
    r.next().await;
    let times = r.source.wait_fetches(FEED, 4, MIN * 60 * 12).await;
    for gap in gaps(&times) {
        assert!(
            gap >= MIN * 162 && gap <= MIN * 198,
            "gap {gap:?} with a 3 h TTL"
        );
    }
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_after_and_errors_slow_polling_down() {
    let mut r = rig(settings(10, 5));
    r.source.set(FEED, Answer::Feed(rss(&[("a", "A")], None)));
    r.engine.follow(AccountId(1), FEED).await.expect("follow");
    r.next().await;
    // 429 with two hours: the fetch after it waits for them (±10 % jitter).
    r.source.set(FEED, Answer::Status(429, Some(MIN * 120)));
    r.source.wait_fetches(FEED, 2, MIN * 12).await;
    r.source.set(FEED, Answer::Status(500, None));
    let times = r.source.wait_fetches(FEED, 3, MIN * 140).await;
    assert!(times[2] - times[1] >= MIN * 108, "Retry-After honoured");
    // The contact shows the failure.
    let ev = r.drain();
    assert!(
        ev.iter().any(
            |(_, e)| matches!(e, RemoteEvent::ContactStatus { state, .. } if !state.available)
        ),
        "{ev:?}"
    );
    // 500s back off: 10, 20, 40 min … each wait about twice the one before.
    let times = r.source.wait_fetches(FEED, 6, MIN * 60 * 3).await;
    let g = gaps(&times[2..]);
    assert!(g[0] >= MIN * 9 && g[0] <= MIN * 11, "{g:?}");
    for w in g.windows(2) {
        assert!(w[1] >= w[0].mul_f64(1.5), "backing off: {g:?}");
    }
    // Recovery is announced.
    r.source.set(FEED, Answer::Feed(rss(&[("a", "A")], None)));
    loop {
        if let (_, RemoteEvent::ContactStatus { state, .. }) = r.next().await
            && state.available
        {
            break;
        }
    }
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn new_entries_arrive_once_for_every_subscriber() {
    let mut r = rig(settings(10, 5));
    r.source
        .set(FEED, Answer::Feed(rss(&[("g1", "One")], None)));
    for a in 1..=3 {
        r.engine.follow(AccountId(a), FEED).await.expect("follow");
    }
    // Each subscriber: Followed, status, one entry.
    let mut first = Vec::new();
    for _ in 0..9 {
        first.push(r.next().await);
    }
    assert_eq!(bodies(&first).len(), 3);
    assert_eq!(
        r.source.fetches(FEED).len(),
        1,
        "one fetch serves all subscribers"
    );

    // A new entry, and the old one's GUID rotates (same link): only the new one is news.
    r.source.set(
        FEED,
        Answer::Feed(rss(&[("g2", "Two"), ("g1-rotated", "One")], None)),
    );
    let mut ev = Vec::new();
    for _ in 0..3 {
        ev.push(r.next().await);
    }
    let b = bodies(&ev);
    assert_eq!(b.len(), 3, "one message per subscriber: {b:?}");
    assert!(b.iter().all(|x| x.starts_with("Two")), "{b:?}");
    let mut accounts: Vec<i64> = ev.iter().map(|(a, _)| a.0).collect();
    accounts.sort();
    assert_eq!(accounts, vec![1, 2, 3]);
    // Two more polls (the first fully handled once the second starts): nothing new.
    r.source.wait_fetches(FEED, 4, MIN * 30).await;
    assert!(bodies(&r.drain()).is_empty());
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_feed_that_never_worked_is_refused() {
    let mut r = rig(settings(10, 5));
    r.source
        .set(FEED, Answer::Feed("this is not a feed".into()));
    r.engine.follow(AccountId(7), FEED).await.expect("follow");
    match r.next().await {
        (AccountId(7), RemoteEvent::FollowRefused { reason, .. }) => {
            assert!(!reason.is_empty())
        }
        other => panic!("expected FollowRefused, got {other:?}"),
    }
    assert!(
        r.store.subscribers(FEED).await.expect("subs").is_empty(),
        "the refused subscription is gone"
    );
    // Another feed is polled three times meanwhile; nobody follows the refused one.
    let other = "https://feeds.example/other";
    r.source.set(other, Answer::Feed(rss(&[("o", "O")], None)));
    r.engine.follow(AccountId(7), other).await.expect("follow");
    r.source.wait_fetches(other, 3, MIN * 60).await;
    assert_eq!(r.source.fetches(FEED).len(), 1, "not polled");
    r.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_the_schedule() {
    let mut r = rig(settings(60, 5));
    r.source.set(FEED, Answer::Feed(rss(&[("a", "A")], None)));
    r.engine.follow(AccountId(1), FEED).await.expect("follow");
    r.next().await;
    let (store, source) = r.stop().await;
    assert_eq!(source.fetches(FEED).len(), 1);
    // A new engine on the same store waits for the stored next fetch time (54–66 min).
    let restarted = tokio::time::Instant::now();
    let r = rig_on(store, source, settings(60, 5));
    let times = r.source.wait_fetches(FEED, 2, MIN * 70).await;
    assert!(times[1] - restarted >= MIN * 50, "no refetch at start");
    r.stop().await;
}

fn messages(events: &[(AccountId, RemoteEvent)]) -> Vec<ferry_bridge_api::InboundMessage> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            RemoteEvent::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

/// The next message event, skipping the others.
async fn next_message(r: &mut Rig) -> ferry_bridge_api::InboundMessage {
    loop {
        if let (_, RemoteEvent::Message(m)) = r.next().await {
            return m;
        }
    }
}

/// A subscription's own delivery beats the user's default, whichever way either points,
/// and the user's default still decides for the other feeds.
#[tokio::test(start_paused = true)]
async fn a_feeds_own_delivery_beats_the_users_default() {
    let mut r = rig(settings(10, 5));
    let other = "https://feeds.example/other";
    r.source.set(FEED, Answer::Feed(rss(&[("a1", "A1")], None)));
    r.source
        .set(other, Answer::Feed(rss(&[("b1", "B1")], None)));
    let me = AccountId(1);
    r.engine.follow(me, FEED).await.expect("follow");
    r.engine.follow(me, other).await.expect("follow");
    for _ in 0..2 {
        let m = next_message(&mut r).await;
        assert!(!m.headline, "the configured default is chat: {m:?}");
    }

    // FEED: headline of its own; the user's default stays chat.
    assert!(
        r.engine
            .set_feed_delivery(me, FEED, Some(true))
            .await
            .expect("set")
    );
    assert!(
        !r.engine
            .set_feed_delivery(me, "https://feeds.example/unfollowed", Some(true))
            .await
            .expect("set"),
        "a feed the user does not follow has no delivery of its own"
    );
    assert_eq!(
        r.store.feed_deliveries(me).await.expect("list"),
        vec![(FEED.to_owned(), true)]
    );
    r.source
        .set(FEED, Answer::Feed(rss(&[("a2", "A2"), ("a1", "A1")], None)));
    r.source.set(
        other,
        Answer::Feed(rss(&[("b2", "B2"), ("b1", "B1")], None)),
    );
    let got = [next_message(&mut r).await, next_message(&mut r).await];
    for m in &got {
        let from_feed = m.from.as_ref().map(|f| f.as_str()) == Some(FEED);
        assert_eq!(m.headline, from_feed, "{m:?}");
        assert_eq!(
            m.subject.is_some(),
            from_feed,
            "headlines carry the title: {m:?}"
        );
    }

    // The user's default turns to headline, FEED's own to chat: each keeps its own.
    r.store.set_delivery(me, true).await.expect("default");
    r.engine
        .set_feed_delivery(me, FEED, Some(false))
        .await
        .expect("set");
    r.source.set(
        FEED,
        Answer::Feed(rss(&[("a3", "A3"), ("a2", "A2"), ("a1", "A1")], None)),
    );
    r.source.set(
        other,
        Answer::Feed(rss(&[("b3", "B3"), ("b2", "B2"), ("b1", "B1")], None)),
    );
    let got = [next_message(&mut r).await, next_message(&mut r).await];
    for m in &got {
        let from_feed = m.from.as_ref().map(|f| f.as_str()) == Some(FEED);
        assert_eq!(m.headline, !from_feed, "{m:?}");
    }

    // `default`: FEED follows the user's default (now headline) again.
    r.engine
        .set_feed_delivery(me, FEED, None)
        .await
        .expect("set");
    assert!(r.store.feed_deliveries(me).await.expect("list").is_empty());
    r.source.set(
        FEED,
        Answer::Feed(rss(
            &[("a4", "A4"), ("a3", "A3"), ("a2", "A2"), ("a1", "A1")],
            None,
        )),
    );
    let m = next_message(&mut r).await;
    assert!(m.body.starts_with("A4") && m.headline, "{m:?}");
    r.stop().await;
}

/// 2026-01-01 00:00 UTC plus `h` hours and `m` minutes, in unix ms.
fn utc(h: i64, m: i64) -> i64 {
    1_767_225_600_000 + (h * 60 + m) * 60_000
}

const NIGHT: &str = "22:00-07:00";

/// A rig at 22:30 UTC whose user (account 1) has quiet hours 22:00-07:00 and follows FEED;
/// the entry the subscription brings has been received.
async fn quiet_rig() -> Rig {
    let mut r = rig_at(Arc::default(), Arc::default(), settings(10, 5), utc(22, 30));
    r.engine
        .set_quiet(AccountId(1), Some(QuietHours::parse(NIGHT).expect("quiet")))
        .await
        .expect("set quiet");
    r.source
        .set(FEED, Answer::Feed(rss(&[("g1", "One")], None)));
    r.engine.follow(AccountId(1), FEED).await.expect("follow");
    // What a subscription brings is the answer to the user's own act: it comes at once.
    let m = next_message(&mut r).await;
    assert!(m.body.starts_with("One"), "{m:?}");
    r
}

/// Two entries appear during quiet hours, in two polls: each poll handled (the poll after
/// it has started) holds them, nothing is sent.
async fn two_entries_held(r: &mut Rig) {
    r.source.set(
        FEED,
        Answer::Feed(rss(&[("g2", "Two"), ("g1", "One")], None)),
    );
    let n = r.source.fetches(FEED).len();
    r.source.wait_fetches(FEED, n + 2, MIN * 30).await;
    r.source.set(
        FEED,
        Answer::Feed(rss(&[("g3", "Three"), ("g2", "Two"), ("g1", "One")], None)),
    );
    r.source.wait_fetches(FEED, n + 4, MIN * 30).await;
    assert!(
        messages(&r.drain()).is_empty(),
        "nothing is sent in quiet hours"
    );
    assert_eq!(r.store.held_count(AccountId(1)), 2);
    assert!(
        r.engine.now_ms() < utc(24, 0),
        "still the first night: {}",
        r.engine.now_ms()
    );
}

/// Entries that arrive in quiet hours are held and come, oldest first, when they end
/// (07:00 UTC); an entry after that comes at once.
#[tokio::test(start_paused = true)]
async fn quiet_hours_hold_entries_until_they_end() {
    let mut r = quiet_rig().await;
    two_entries_held(&mut r).await;

    let two = next_message(&mut r).await;
    let released = r.engine.now_ms();
    assert!(
        (utc(31, 0)..utc(31, 1)).contains(&released),
        "released at 07:00 the next morning, not at {}",
        ferry_rss::engine::format_utc(released)
    );
    let three = next_message(&mut r).await;
    assert!(two.body.starts_with("Two"), "{two:?}");
    assert!(three.body.starts_with("Three"), "{three:?}");
    assert_eq!(r.store.held_count(AccountId(1)), 0, "sent, so forgotten");

    r.source.set(
        FEED,
        Answer::Feed(rss(
            &[
                ("g4", "Four"),
                ("g3", "Three"),
                ("g2", "Two"),
                ("g1", "One"),
            ],
            None,
        )),
    );
    let four = next_message(&mut r).await;
    assert!(four.body.starts_with("Four"), "{four:?}");
    assert!(r.engine.now_ms() < utc(31, 15), "not held");
    r.stop().await;
}

/// A restart during quiet hours keeps what is held: the new engine sends it at their end.
#[tokio::test(start_paused = true)]
async fn held_entries_survive_a_restart() {
    let mut r = quiet_rig().await;
    two_entries_held(&mut r).await;
    let now = r.engine.now_ms();
    let (store, source) = r.stop().await;

    let mut r = rig_at(store, source, settings(10, 5), now);
    let two = next_message(&mut r).await;
    assert!(
        r.engine.now_ms() >= utc(31, 0),
        "held until 07:00, not sent at {}",
        ferry_rss::engine::format_utc(r.engine.now_ms())
    );
    let three = next_message(&mut r).await;
    assert!(two.body.starts_with("Two"), "{two:?}");
    assert!(three.body.starts_with("Three"), "{three:?}");
    r.stop().await;
}

/// Ending quiet hours (`settings quiet off`) sends what they held before it answers.
#[tokio::test(start_paused = true)]
async fn ending_quiet_hours_sends_what_they_held() {
    let mut r = quiet_rig().await;
    two_entries_held(&mut r).await;
    r.engine.set_quiet(AccountId(1), None).await.expect("off");
    let b: Vec<String> = messages(&r.drain()).into_iter().map(|m| m.body).collect();
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(
        b[0].starts_with("Two") && b[1].starts_with("Three"),
        "{b:?}"
    );
    assert_eq!(r.store.held_count(AccountId(1)), 0);
    r.stop().await;
}
