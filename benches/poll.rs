//! Benchmark: one poll cycle of many feeds (10,000 by default) served by a local HTTP
//! server, through the real RSS engine, fetcher and store.
//!
//! An in-process axum server answers `/f/{n}` on 50 loopback addresses (127.0.0.1 …
//! 127.0.0.50, one listener each, so the fetcher's per-host limit of 2 allows 100 requests
//! in flight). Each feed is RSS 2.0 with 10 items (~5 KB) and an `ETag`; a request whose
//! `If-None-Match` matches gets 304. A SQLite store (or `BENCH_DB`) holds one rss account
//! per 100 feeds, each subscribed to its 100 feeds.
//!
//! Cycle 1 (cold): every subscription is pending; the engine fetches every feed (200),
//! confirms every subscription and sends each subscriber the newest 3 entries.
//! Cycle 2 (steady state), once per concurrency in `BENCH_CONCURRENCY`: every feed is made
//! due (`UPDATE feeds SET next_fetch_ms = 0`), 1 in 20 feeds gets a new item and ETag, and a
//! fresh engine is started (a running one would only notice the UPDATE at its next idle
//! check, up to 60 s later: nothing public wakes it): most answers are 304, the changed
//! feeds deliver one message per subscriber. A cycle ends when the engine has saved every
//! feed and delivered every message it should.
//!
//! Measured per cycle: wall time, CPU of the whole process (utime + stime from
//! /proc/self/stat; the HTTP server runs in this process, so its share is reported
//! separately from per-thread figures), and peak RSS (VmHWM, reset through
//! /proc/self/clear_refs before each cycle).
//!
//! `cargo bench --bench poll`. Knobs: `BENCH_FEEDS` (10000), `BENCH_HOSTS` (50),
//! `BENCH_FEEDS_PER_ACCOUNT` (100), `BENCH_CHANGE_EVERY` (20, i.e. 5 % change),
//! `BENCH_CONCURRENCY` (comma-separated, "64,128,256"; cycle 1 uses the first),
//! `BENCH_DB` (a database URL; default a fresh SQLite file in a temporary directory;
//! a PostgreSQL database must be empty), `BENCH_DEADLINE_SECS` (600 per cycle),
//! `BENCH_STORE_STATS=1` (wrap the store to count the engine's calls per `FeedStore`
//! method and their latency, for profiling).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferry::store::{Cipher, Store};
use ferry_bridge_api::{AccountId, BridgeError, BridgeKind, Counters, Hub, RemoteEvent};
use ferry_rss::engine::{Engine, FeedRecord, FeedStore, Settings, Subscriber};
use ferry_rss::fetch::FetchPolicy;
use ferry_rss::schedule::Intervals;
use tokio::sync::{mpsc, watch};

/// Entries a new subscriber gets (`Settings::initial_entries`).
const INITIAL_ENTRIES: u64 = 3;
/// Items in every feed document.
const ITEMS: u32 = 10;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds since `epoch`, as a u64 for atomics.
fn ns_since(epoch: Instant) -> u64 {
    u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------------------------------
// The feed server.

struct FeedServer {
    /// The current version of every feed; a version has items `v .. v + ITEMS`.
    versions: Vec<AtomicU32>,
    ok: AtomicU64,
    not_modified: AtomicU64,
    other: AtomicU64,
    body_bytes: AtomicU64,
    epoch: Instant,
    last_answer_ns: AtomicU64,
}

impl FeedServer {
    fn answered(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.last_answer_ns
            .fetch_max(ns_since(self.epoch), Ordering::Relaxed);
    }

    fn answers(&self) -> [u64; 3] {
        [
            self.ok.load(Ordering::Relaxed),
            self.not_modified.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        ]
    }
}

const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
    tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
    exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor \
    in reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur \
    sint occaecat cupidatat non proident.";

/// Feed `n` at version `v`: RSS 2.0, `ITEMS` items, newest first.
fn feed_xml(n: usize, v: u32) -> String {
    const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let mut s = String::with_capacity(6 * 1024);
    let _ = write!(
        s,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
         <title>Bench feed {n}</title><link>http://example.org/{n}/</link>\
         <description>Feed {n} of the poll benchmark</description>"
    );
    for i in (v..v + ITEMS).rev() {
        // 1 January 2024 was a Monday.
        let day = (i % 28) as usize;
        let _ = write!(
            s,
            "<item><title>Item {i} of feed {n}</title><link>http://example.org/{n}/{i}</link>\
             <guid isPermaLink=\"false\">urn:bench:{n}:{i}</guid>\
             <pubDate>{}, {:02} Jan 2024 12:00:00 GMT</pubDate>\
             <description>{LOREM}</description></item>",
            DAYS[day % 7],
            day + 1
        );
    }
    s.push_str("</channel></rss>\n");
    s
}

async fn serve_feed(
    State(s): State<Arc<FeedServer>>,
    Path(n): Path<usize>,
    headers: HeaderMap,
) -> Response {
    let Some(v) = s.versions.get(n).map(|v| v.load(Ordering::Relaxed)) else {
        s.answered(&s.other);
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{n}-v{v}\"");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|h| h.as_bytes() == etag.as_bytes());
    if fresh {
        s.answered(&s.not_modified);
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    let body = feed_xml(n, v);
    s.body_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    s.answered(&s.ok);
    (
        [
            (
                header::CONTENT_TYPE,
                "application/rss+xml; charset=utf-8".to_owned(),
            ),
            (header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------
// What the engine reports.

/// The hub's counters: fetch outcomes, counted after each feed is saved.
struct Fetches {
    ok: AtomicU64,
    not_modified: AtomicU64,
    failed: AtomicU64,
    epoch: Instant,
    last_ns: AtomicU64,
}

impl Counters for Fetches {
    fn count(&self, metric: &'static str, outcome: &'static str) {
        if metric != "ferry_feed_fetches_total" {
            return;
        }
        match outcome {
            "ok" => &self.ok,
            "not_modified" => &self.not_modified,
            _ => &self.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.last_ns
            .fetch_max(ns_since(self.epoch), Ordering::Relaxed);
    }
}

impl Fetches {
    fn snapshot(&self) -> [u64; 3] {
        [
            self.ok.load(Ordering::Relaxed),
            self.not_modified.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        ]
    }
}

/// Events drained from the hub's channel.
struct Events {
    messages: AtomicU64,
    followed: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
    epoch: Instant,
    last_ns: AtomicU64,
}

impl Events {
    fn snapshot(&self) -> [u64; 4] {
        [
            self.messages.load(Ordering::Relaxed),
            self.followed.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
        ]
    }
}

async fn drain(mut rx: mpsc::Receiver<(AccountId, RemoteEvent)>, events: Arc<Events>) {
    while let Some((_, ev)) = rx.recv().await {
        match ev {
            RemoteEvent::Message(_) => &events.messages,
            RemoteEvent::Followed { .. } => &events.followed,
            RemoteEvent::FollowRefused { .. } => &events.refused,
            _ => &events.other,
        }
        .fetch_add(1, Ordering::Relaxed);
        events
            .last_ns
            .fetch_max(ns_since(events.epoch), Ordering::Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// Optional: the store, with every call the engine makes counted and timed.

/// Calls and total latency per `FeedStore` method (latency includes waiting for a pooled
/// connection and for SQLite's write lock).
#[derive(Default)]
struct StoreStats(Mutex<BTreeMap<&'static str, (u64, Duration)>>);

impl StoreStats {
    fn take(&self) -> BTreeMap<&'static str, (u64, Duration)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct TimedStore {
    inner: Store,
    stats: Arc<StoreStats>,
}

impl TimedStore {
    async fn timed<T>(&self, method: &'static str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = call.await;
        let took = started.elapsed();
        let mut stats = self.stats.0.lock().unwrap_or_else(|e| e.into_inner());
        let entry = stats.entry(method).or_default();
        entry.0 += 1;
        entry.1 += took;
        out
    }
}

#[async_trait]
impl FeedStore for TimedStore {
    async fn feed(&self, feed: &str) -> Result<Option<FeedRecord>, BridgeError> {
        self.timed("feed", FeedStore::feed(&self.inner, feed)).await
    }
    async fn subscribe(
        &self,
        account: AccountId,
        feed: &str,
        headline: bool,
        now_ms: i64,
    ) -> Result<(), BridgeError> {
        let call = FeedStore::subscribe(&self.inner, account, feed, headline, now_ms);
        self.timed("subscribe", call).await
    }
    async fn unsubscribe(&self, account: AccountId, feed: &str) -> Result<bool, BridgeError> {
        let call = FeedStore::unsubscribe(&self.inner, account, feed);
        self.timed("unsubscribe", call).await
    }
    async fn subscriptions(&self, account: AccountId) -> Result<Vec<FeedRecord>, BridgeError> {
        let call = FeedStore::subscriptions(&self.inner, account);
        self.timed("subscriptions", call).await
    }
    async fn subscribers(&self, feed: &str) -> Result<Vec<Subscriber>, BridgeError> {
        let call = FeedStore::subscribers(&self.inner, feed);
        self.timed("subscribers", call).await
    }
    async fn confirm(&self, account: AccountId, feed: &str) -> Result<(), BridgeError> {
        let call = FeedStore::confirm(&self.inner, account, feed);
        self.timed("confirm", call).await
    }
    async fn pending_feeds(&self, limit: usize) -> Result<Vec<String>, BridgeError> {
        let call = FeedStore::pending_feeds(&self.inner, limit);
        self.timed("pending_feeds", call).await
    }
    async fn claim_due_feeds(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<FeedRecord>, BridgeError> {
        let call = FeedStore::claim_due_feeds(&self.inner, now_ms, lease_until_ms, limit);
        self.timed("claim_due_feeds", call).await
    }
    async fn claim(
        &self,
        feed: &str,
        now_ms: i64,
        lease_until_ms: i64,
    ) -> Result<Option<FeedRecord>, BridgeError> {
        let call = FeedStore::claim(&self.inner, feed, now_ms, lease_until_ms);
        self.timed("claim", call).await
    }
    async fn next_due_ms(&self) -> Result<Option<i64>, BridgeError> {
        self.timed("next_due_ms", FeedStore::next_due_ms(&self.inner))
            .await
    }
    async fn save(
        &self,
        record: &FeedRecord,
        keys: &[String],
        now_ms: i64,
    ) -> Result<HashSet<String>, BridgeError> {
        let call = FeedStore::save(&self.inner, record, keys, now_ms);
        self.timed("save", call).await
    }
    async fn delivery(&self, account: AccountId) -> Result<Option<bool>, BridgeError> {
        self.timed("delivery", FeedStore::delivery(&self.inner, account))
            .await
    }
    async fn set_delivery(&self, account: AccountId, headline: bool) -> Result<(), BridgeError> {
        let call = FeedStore::set_delivery(&self.inner, account, headline);
        self.timed("set_delivery", call).await
    }
    async fn prune(&self) -> Result<u64, BridgeError> {
        self.timed("prune", FeedStore::prune(&self.inner)).await
    }
}

// ---------------------------------------------------------------------------------------
// CPU and memory from /proc.

/// Clock ticks per second, from `getconf CLK_TCK` (the bench cannot call sysconf: the
/// workspace forbids unsafe code); 100 when getconf is missing.
fn clock_ticks() -> (f64, bool) {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .map_or((100.0, false), |t| (t, true))
}

/// The command name and utime + stime (ticks) of a /proc stat line.
fn parse_stat(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_owned();
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

fn process_ticks() -> u64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| parse_stat(&s))
        .map_or(0, |(_, t)| t)
}

/// utime + stime (ticks) of every live process named `postgres`: the database's share
/// when `BENCH_DB` is PostgreSQL (all its processes, whoever they serve).
fn postgres_ticks() -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|s| parse_stat(&s))
        .filter(|(name, _)| name == "postgres")
        .map(|(_, t)| t)
        .sum()
}

/// Every live thread: id → (name, ticks).
fn thread_ticks() -> HashMap<u32, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        if let Some(v) = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        {
            out.insert(tid, v);
        }
    }
    out
}

/// Which part of the process a thread belongs to.
fn group_of(thread: &str) -> &'static str {
    if thread.starts_with("bench-http") {
        "HTTP server (bench, not ferry)"
    } else if thread.starts_with("ferry-engine") {
        "engine runtime (tokio workers + parse pool)"
    } else if thread.starts_with("sqlx-sqlite") {
        "SQLite worker threads (sqlx)"
    } else {
        "other threads"
    }
}

/// A /proc/self/status field in kB.
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0); whether it worked.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

// ---------------------------------------------------------------------------------------
// Cycles.

struct Bench {
    feeds: usize,
    store: Store,
    server: Arc<FeedServer>,
    fetches: Arc<Fetches>,
    events: Arc<Events>,
    tx: mpsc::Sender<(AccountId, RemoteEvent)>,
    epoch: Instant,
    ticks_per_sec: f64,
    peak_reset: bool,
    deadline: Duration,
    /// The store is PostgreSQL: its server processes' CPU is measured too.
    postgres: bool,
    /// Set with `BENCH_STORE_STATS=1`: the engine gets a [`TimedStore`].
    store_stats: Option<Arc<StoreStats>>,
}

struct Cycle {
    label: String,
    concurrency: usize,
    completed: bool,
    /// Until the server had answered the cycle's last request.
    server_s: f64,
    /// Until the engine had saved every feed and delivered every event.
    wall_s: f64,
    cpu_s: f64,
    /// PostgreSQL's processes, when the store is PostgreSQL.
    db_cpu_s: Option<f64>,
    cpu_groups: Vec<(&'static str, f64)>,
    peak_kb: u64,
    rss_end_kb: u64,
    answered: [u64; 3],
    fetched: [u64; 3],
    events: [u64; 4],
    expected_messages: u64,
    store_calls: BTreeMap<&'static str, (u64, Duration)>,
}

fn settings(concurrency: usize) -> Settings {
    Settings {
        intervals: Intervals {
            default: Duration::from_secs(60 * 60),
            min: Duration::from_secs(60),
        },
        initial_entries: INITIAL_ENTRIES as usize,
        headline: false,
        fetch: FetchPolicy {
            allow_private: true,
            ..FetchPolicy::default()
        },
        concurrency,
    }
}

fn diff<const N: usize>(a: [u64; N], b: [u64; N]) -> [u64; N] {
    std::array::from_fn(|i| a[i].saturating_sub(b[i]))
}

impl Bench {
    /// Runs a fresh engine with `concurrency` until the cycle is done. `cold`: the first
    /// cycle (confirms every subscription); otherwise `changed` feeds have one new item.
    async fn cycle(&self, label: &str, concurrency: usize, cold: bool, changed: u64) -> Cycle {
        let n = self.feeds as u64;
        let expected_messages = if cold { n * INITIAL_ENTRIES } else { changed };
        let store: Arc<dyn FeedStore> = match &self.store_stats {
            Some(stats) => Arc::new(TimedStore {
                inner: self.store.clone(),
                stats: Arc::clone(stats),
            }),
            None => Arc::new(self.store.clone()),
        };
        let engine = Arc::new(Engine::new(settings(concurrency), store).expect("engine"));
        let (stop, shutdown) = watch::channel(false);
        let hub = Hub {
            events: self.tx.clone(),
            shutdown,
            counters: self.fetches.clone(),
        };

        let (answered0, fetched0, events0) = (
            self.server.answers(),
            self.fetches.snapshot(),
            self.events.snapshot(),
        );
        let threads0 = thread_ticks();
        if let Some(stats) = &self.store_stats {
            stats.take();
        }
        let _ = reset_peak();
        let db0 = self.postgres.then(postgres_ticks);
        let cpu0 = process_ticks();
        let t0 = ns_since(self.epoch);
        let serving = tokio::spawn(Arc::clone(&engine).serve(hub));

        let deadline = Instant::now() + self.deadline;
        let mut report_at = Instant::now() + Duration::from_secs(5);
        let completed = loop {
            let f = diff(self.fetches.snapshot(), fetched0);
            let e = diff(self.events.snapshot(), events0);
            let saved = f.iter().sum::<u64>();
            let done = saved >= n && e[0] >= expected_messages && (!cold || e[1] + e[2] >= n);
            if done {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            if Instant::now() >= report_at {
                eprintln!(
                    "  {label}: {saved}/{n} feeds saved, {} messages, {}s",
                    e[0],
                    (ns_since(self.epoch) - t0) / 1_000_000_000
                );
                report_at += Duration::from_secs(5);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cpu1 = process_ticks();
        let db_cpu_s = db0.map(|t| postgres_ticks().saturating_sub(t) as f64 / self.ticks_per_sec);
        let threads1 = thread_ticks();
        let peak_kb = status_kb("VmHWM:");
        let rss_end_kb = status_kb("VmRSS:");
        let _ = stop.send(true);
        let _ = serving.await;

        let secs = |ns: u64| ns.saturating_sub(t0) as f64 / 1e9;
        let wall_s = secs(
            self.fetches
                .last_ns
                .load(Ordering::Relaxed)
                .max(self.events.last_ns.load(Ordering::Relaxed)),
        );
        let server_s = secs(self.server.last_answer_ns.load(Ordering::Relaxed));
        let mut groups: Vec<(&'static str, f64)> = Vec::new();
        for (tid, (name, ticks)) in &threads1 {
            let before = threads0.get(tid).map_or(0, |(_, t)| *t);
            let d = ticks.saturating_sub(before) as f64 / self.ticks_per_sec;
            let g = group_of(name);
            match groups.iter_mut().find(|(k, _)| *k == g) {
                Some((_, v)) => *v += d,
                None => groups.push((g, d)),
            }
        }
        let cpu_s = cpu1.saturating_sub(cpu0) as f64 / self.ticks_per_sec;
        let live: f64 = groups.iter().map(|(_, v)| v).sum();
        if cpu_s - live > 0.005 {
            groups.push(("threads that exited during the cycle", cpu_s - live));
        }
        groups.sort_by(|a, b| b.1.total_cmp(&a.1));
        Cycle {
            label: label.to_owned(),
            concurrency,
            completed,
            server_s,
            wall_s,
            cpu_s,
            db_cpu_s,
            cpu_groups: groups,
            peak_kb,
            rss_end_kb,
            answered: diff(self.server.answers(), answered0),
            fetched: diff(self.fetches.snapshot(), fetched0),
            events: diff(self.events.snapshot(), events0),
            expected_messages,
            store_calls: self
                .store_stats
                .as_ref()
                .map(|s| s.take())
                .unwrap_or_default(),
        }
    }

    fn print(&self, c: &Cycle) {
        println!();
        println!(
            "== {} (concurrency {}){}",
            c.label,
            c.concurrency,
            if c.completed {
                ""
            } else {
                "  ** DEADLINE HIT: INCOMPLETE **"
            }
        );
        println!(
            "  server answers: {} × 200, {} × 304, {} other; last answer at {:.2} s",
            c.answered[0], c.answered[1], c.answered[2], c.server_s
        );
        println!(
            "  engine: {} fetched, {} not modified, {} failed; {} messages (expected {}), \
             {} follows confirmed, {} refused, {} other events",
            c.fetched[0],
            c.fetched[1],
            c.fetched[2],
            c.events[0],
            c.expected_messages,
            c.events[1],
            c.events[2],
            c.events[3]
        );
        println!("  wall time:  {:.2} s", c.wall_s);
        println!(
            "  CPU time:   {:.2} s (whole process, HTTP server included){}",
            c.cpu_s,
            if self.ticks_per_sec == 100.0 {
                ""
            } else {
                " [ticks/s ≠ 100]"
            }
        );
        for (g, v) in &c.cpu_groups {
            println!("      {v:7.2} s  {g}");
        }
        if let Some(db) = c.db_cpu_s {
            println!("  PostgreSQL server processes (separate, all of them): {db:.2} s CPU");
        }
        println!(
            "  peak RSS:   {:.1} MB{} (RSS at the end {:.1} MB)",
            c.peak_kb as f64 / 1024.0,
            if self.peak_reset {
                " during the cycle"
            } else {
                " since the process started (VmHWM could not be reset)"
            },
            c.rss_end_kb as f64 / 1024.0
        );
        if !c.store_calls.is_empty() {
            println!("  store calls (count, total latency, mean latency):");
            for (method, (calls, total)) in &c.store_calls {
                println!(
                    "      {method:16} {calls:7} {:9.2} s {:9.0} µs",
                    total.as_secs_f64(),
                    total.as_secs_f64() * 1e6 / *calls as f64
                );
            }
        }
    }
}

async fn make_all_due(url: &str) {
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .expect("raw connection");
    let done = sqlx::query("UPDATE feeds SET next_fetch_ms = 0")
        .execute(&pool)
        .await
        .expect("make feeds due");
    assert!(done.rows_affected() > 0, "no feed rows");
    pool.close().await;
}

fn main() {
    let feeds = env_usize("BENCH_FEEDS", 10_000);
    let hosts = env_usize("BENCH_HOSTS", 50).clamp(1, 250);
    let per_account = env_usize("BENCH_FEEDS_PER_ACCOUNT", 100).max(1);
    let change_every = env_usize("BENCH_CHANGE_EVERY", 20).max(1);
    let deadline = Duration::from_secs(env_usize("BENCH_DEADLINE_SECS", 600) as u64);
    let concurrencies: Vec<usize> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "64,128,256".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .filter(|v| *v > 0)
        .collect();
    let concurrencies = if concurrencies.is_empty() {
        vec![64]
    } else {
        concurrencies
    };
    let (ticks_per_sec, ticks_known) = clock_ticks();
    let epoch = Instant::now();

    // The server: its own runtime and threads, so its CPU can be told apart.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("bench-http")
        .enable_all()
        .build()
        .expect("server runtime");
    let server = Arc::new(FeedServer {
        versions: (0..feeds).map(|_| AtomicU32::new(1)).collect(),
        ok: AtomicU64::new(0),
        not_modified: AtomicU64::new(0),
        other: AtomicU64::new(0),
        body_bytes: AtomicU64::new(0),
        epoch,
        last_answer_ns: AtomicU64::new(0),
    });
    let addrs: Vec<std::net::SocketAddr> = server_rt.block_on(async {
        let app = Router::new()
            .route("/f/{n}", get(serve_feed))
            .with_state(Arc::clone(&server));
        let mut addrs = Vec::new();
        for h in 0..hosts {
            let ip = std::net::Ipv4Addr::new(127, 0, 0, u8::try_from(h + 1).expect("host"));
            let listener = tokio::net::TcpListener::bind((ip, 0))
                .await
                .expect("bind a loopback address");
            addrs.push(listener.local_addr().expect("local addr"));
            let app = app.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        addrs
    });
    let hosts = addrs.len();
    let url_of = move |n: usize| format!("http://{}/f/{n}", addrs[n % addrs.len()]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("ferry-engine")
        .enable_all()
        .build()
        .expect("engine runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = std::env::var("BENCH_DB")
            .unwrap_or_else(|_| format!("sqlite://{}/bench.db", dir.path().display()));
        let store = Store::open(&db, Cipher::from_key([7; 32]))
            .await
            .expect("open store");
        store.migrate().await.expect("migrate");

        let setup = Instant::now();
        let accounts = feeds.div_ceil(per_account);
        let now = ferry::store::now_ms();
        for a in 0..accounts {
            let account = store
                .upsert_account(
                    BridgeKind::Rss,
                    &format!("u{a}@bench.example"),
                    &Default::default(),
                )
                .await
                .expect("account");
            for n in a * per_account..((a + 1) * per_account).min(feeds) {
                FeedStore::subscribe(&store, account, &url_of(n), false, now)
                    .await
                    .expect("subscribe");
            }
        }
        println!(
            "poll benchmark: {feeds} feeds on {} hosts, {accounts} accounts × {per_account} \
             feeds, 1 in {change_every} feeds changes per cycle; store {}; setup {:.1} s",
            hosts,
            if db.starts_with("sqlite") {
                "SQLite (temporary file)"
            } else {
                "PostgreSQL"
            },
            setup.elapsed().as_secs_f64()
        );
        if !ticks_known {
            println!("(getconf CLK_TCK failed: assuming 100 clock ticks per second)");
        }

        let (tx, rx) = mpsc::channel(1 << 16);
        let events = Arc::new(Events {
            messages: AtomicU64::new(0),
            followed: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            other: AtomicU64::new(0),
            epoch,
            last_ns: AtomicU64::new(0),
        });
        let drainer = tokio::spawn(drain(rx, Arc::clone(&events)));
        let bench = Bench {
            feeds,
            store: store.clone(),
            server: Arc::clone(&server),
            fetches: Arc::new(Fetches {
                ok: AtomicU64::new(0),
                not_modified: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                epoch,
                last_ns: AtomicU64::new(0),
            }),
            events,
            tx,
            epoch,
            ticks_per_sec,
            peak_reset: reset_peak(),
            postgres: !db.starts_with("sqlite"),
            deadline,
            store_stats: (std::env::var("BENCH_STORE_STATS").as_deref() == Ok("1"))
                .then(Arc::default),
        };

        let mut results = Vec::new();
        let c1 = bench
            .cycle("cycle 1, cold (every feed 200)", concurrencies[0], true, 0)
            .await;
        bench.print(&c1);
        results.push(c1);
        for (k, &c) in concurrencies.iter().enumerate() {
            make_all_due(&db).await;
            // A different set of feeds changes each cycle: one new item, a new ETag.
            let mut changed = 0u64;
            for (n, v) in server.versions.iter().enumerate() {
                if n % change_every == k % change_every {
                    v.fetch_add(1, Ordering::Relaxed);
                    changed += 1;
                }
            }
            let c2 = bench
                .cycle(
                    &format!("cycle 2, steady state ({changed} feeds changed)"),
                    c,
                    false,
                    // Every feed has one subscriber: one message per changed feed.
                    changed,
                )
                .await;
            bench.print(&c2);
            results.push(c2);
        }

        println!();
        println!(
            "| cycle | concurrency | wall | process CPU (of it the bench's HTTP server) | \
             peak RSS |"
        );
        println!("|---|---|---|---|---|");
        for c in &results {
            let server_cpu = c
                .cpu_groups
                .iter()
                .find(|(g, _)| g.starts_with("HTTP server"))
                .map_or(0.0, |(_, v)| *v);
            let db_cpu = c
                .db_cpu_s
                .map(|v| format!(" + PostgreSQL {v:.2} s"))
                .unwrap_or_default();
            println!(
                "| {}{} | {} | {:.2} s | {:.2} s ({server_cpu:.2} s){db_cpu} | {:.0} MB |",
                c.label,
                if c.completed { "" } else { " (INCOMPLETE)" },
                c.concurrency,
                c.wall_s,
                c.cpu_s,
                c.peak_kb as f64 / 1024.0
            );
        }
        println!(
            "process peak RSS since start: {:.0} MB; {} MB of feed bodies served",
            status_kb("VmHWM:") as f64 / 1024.0,
            server.body_bytes.load(Ordering::Relaxed) / 1_000_000
        );

        drop(bench);
        let _ = drainer.await;
        store.close().await;
        let incomplete = results.iter().filter(|c| !c.completed).count();
        assert_eq!(incomplete, 0, "{incomplete} cycle(s) hit the deadline");
    });
    drop(server_rt);
}
