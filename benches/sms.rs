//! Benchmark: the SMS bridge's two rates, webhooks in and texts out, through a real
//! Prosody and ferry with the real SMS bridge, SQLite and one Twilio provider.
//!
//! ferry runs in a child process (as in `benches/e2e.rs`) with a fresh SQLite store in a
//! temporary directory and `[http]` on a free loopback port. Twilio's REST API is played by
//! a small HTTP server in this process: `GET …/Messages.json?PageSize=1` (the credential
//! check) gets 200, `POST …/Messages.json` gets 201 with a unique `SM…` sid, after the
//! stand-in checked the request's Basic auth and its `To`, `From`, `Body` and
//! `StatusCallback` fields. alice logs in through Prosody and registers by claiming
//! +12015550100.
//!
//! Webhooks: N (`BENCH_WEBHOOKS`, 20,000) Twilio inbound webhooks, signed as Twilio signs
//! them (HMAC-SHA1 over the URL and the sorted form fields; ferry checks every one), with the
//! form fields Twilio really sends, are posted by a keep-alive reqwest client:
//! - closed loop, C (`BENCH_CONCURRENCY`, 64) requests in flight, each a distinct
//!   `MessageSid`: the most ferry acknowledges per second, with p50/p99/max latency
//!   (request sent → response read);
//! - the same with one `MessageSid` repeated (duplicates: kept once, acknowledged always);
//! - open loop at a fixed `BENCH_RATE` (2,000/s), distinct sids: the latency at the target
//!   rate, counted from each request's scheduled time (so a stall is not hidden);
//! - forged signatures (403): the HTTP + HMAC ceiling, with no store work.
//!
//! Every distinct text must reach alice over XMPP (counted; the time until the last one
//! arrived is shown), no duplicate may, and at the end `sms_inbound` must hold every text,
//! all handed on, and `/metrics` must agree.
//!
//! Outbound: alice sends M (`BENCH_TEXTS`, 2,000) chat messages to
//! `+12015550123@sms.localhost`; the figure is from the first send until the stand-in has
//! received all M POSTs (a watch channel, no polling). Each must come exactly once with the
//! right fields.
//!
//! Then, with the bed stopped, a breakdown in this process: the webhook's two store calls
//! (`owner_account` + `accept_inbound`) alone against a fresh SQLite store, one at a time
//! and C at a time, and the HMAC alone.
//!
//! CPU is read from /proc for the ferry process, Prosody, and this process (load generator,
//! Twilio stand-in and XMPP client) separately.
//!
//! Run with `cargo bench --bench sms`. Knobs: `BENCH_WEBHOOKS`, `BENCH_CONCURRENCY`,
//! `BENCH_RATE`, `BENCH_TEXTS` (above) and `BENCH_API_DELAY_MS` (0: how long the Twilio
//! stand-in takes to answer each send, to see the outbox against a realistic API latency).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use common::client::{self, Client};
use common::prosody::Prosody;
use ferry::store::{Cipher, Store};
use ferry::xml::Element;
use ferry_bridge_api::{BridgeKind, Credentials};
use ferry_sms::store::{NewInbound, SmsStore};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use tokio::sync::{Semaphore, watch};

const GW: &str = "sms.localhost";
const SECRET: &str = "sms-bench-secret";
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-bench-token";
const ALICE_NUMBER: &str = "+12015550100";
/// Who texts alice.
const FRIEND: &str = "+12015550199";
/// Whom alice texts.
const DEST: &str = "+12015550123";
const NS_CLIENT: &str = "jabber:client";
const WAIT: Duration = Duration::from_secs(60);
/// Prosody at info level: debug logging of tens of thousands of stanzas would dominate its
/// CPU. Appended to the global section, so it overrides the harness's default.
const PROSODY_EXTRA: &str =
    r#"log = { { levels = { min = "info" }, to = "file", filename = "/dev/stdout" } }"#;
/// Most requests the open-loop run keeps in flight.
const OPEN_LOOP_CAP: usize = 1024;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// utime + stime of a process, in seconds (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

// ---------------------------------------------------------------------------------------
// ferry, in the child process.

fn child(component_port: u16, http_port: u16, api_base: &str, dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let cfg = ferry::config::Config::from_str_at(
            &format!(
                r#"[xmpp]
host = "127.0.0.1"
port = {component_port}
allowed = ["localhost"]
[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}/"
[sms]
domain = "{GW}"
secret = "{SECRET}"
default_region = "US"
quota_per_day = 0
[[sms.provider]]
name = "tw"
kind = "twilio"
account_sid = "{SID}"
auth_token = "{TOKEN}"
api_base = "{api_base}"
[[sms.number]]
number = "{ALICE_NUMBER}"
provider = "tw"
owner = "alice@localhost"
"#
            ),
            std::path::Path::new(dir),
        )
        .expect("config");
        let store = Store::open(&cfg.database.url, Cipher::from_key([7; 32]))
            .await
            .expect("store");
        store.migrate().await.expect("migrate");
        let bridges = ferry::bridges::from_config(&cfg, &store).expect("bridges");
        let running = ferry::app::start(&cfg, store, bridges)
            .await
            .expect("ferry starts");
        let gw = running.gateway(BridgeKind::Sms).expect("gateway").clone();
        let mut up = gw.connected.clone();
        let _ = up.wait_for(|v| *v).await;
        println!("linked {}", cfg.database.url);
        // Run until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await;
        running.shutdown();
        let _ = running.wait().await;
    });
}

// ---------------------------------------------------------------------------------------
// Twilio's API, played by a server in this process.

struct StandIn {
    /// Every `POST Messages.json` answered so far.
    posts: watch::Sender<u64>,
    /// How often each bench text `bench text {i}` arrived.
    seen: Mutex<Vec<u32>>,
    /// Texts that were not bench texts but well-formed (the warm-up).
    other: AtomicU64,
    /// Requests with a wrong field or no credentials, and what was wrong with the first.
    bad: AtomicU64,
    first_bad: Mutex<Option<String>>,
    checks: AtomicU64,
    next_sid: AtomicU64,
    auth: String,
    status_url: String,
    /// How long each `POST` takes to answer (Twilio's own latency; 0 by default).
    delay: Duration,
}

impl StandIn {
    fn refuse(&self, why: String) -> axum::response::Response {
        self.bad.fetch_add(1, Ordering::Relaxed);
        self.first_bad
            .lock()
            .expect("lock")
            .get_or_insert_with(|| why.clone());
        self.posts.send_modify(|v| *v += 1);
        (StatusCode::BAD_REQUEST, why).into_response()
    }
}

async fn twilio_check(State(s): State<Arc<StandIn>>) -> impl IntoResponse {
    s.checks.fetch_add(1, Ordering::Relaxed);
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"messages":[],"end":0,"page":0,"page_size":1,"start":0}"#,
    )
}

async fn twilio_send(
    State(s): State<Arc<StandIn>>,
    headers: HeaderMap,
    Form(fields): Form<Vec<(String, String)>>,
) -> axum::response::Response {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(s.auth.as_str())
    {
        return s.refuse("no or wrong Basic credentials".into());
    }
    if field("To") != Some(DEST) || field("From") != Some(ALICE_NUMBER) {
        return s.refuse(format!("wrong To/From: {fields:?}"));
    }
    if field("StatusCallback") != Some(s.status_url.as_str()) {
        return s.refuse(format!("wrong StatusCallback: {fields:?}"));
    }
    let index = field("Body")
        .and_then(|b| b.strip_prefix("bench text "))
        .and_then(|i| i.parse::<usize>().ok());
    match (index, field("Body")) {
        (Some(i), _) => {
            let mut seen = s.seen.lock().expect("lock");
            match seen.get_mut(i) {
                Some(n) => *n += 1,
                None => {
                    drop(seen);
                    return s.refuse(format!("unexpected text number {i}"));
                }
            }
        }
        (None, Some("warm up")) => {
            s.other.fetch_add(1, Ordering::Relaxed);
        }
        (None, body) => return s.refuse(format!("unexpected Body {body:?}")),
    }
    if !s.delay.is_zero() {
        tokio::time::sleep(s.delay).await;
    }
    let sid = s.next_sid.fetch_add(1, Ordering::Relaxed);
    s.posts.send_modify(|v| *v += 1);
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"sid":"SM{sid:032x}","status":"queued"}}"#),
    )
        .into_response()
}

/// Starts the stand-in; its base URL.
async fn stand_in(s: Arc<StandIn>) -> String {
    let path = format!("/2010-04-01/Accounts/{SID}/Messages.json");
    let app = Router::new()
        .route(&path, get(twilio_check).post(twilio_send))
        .with_state(s);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------
// Signed webhooks.

/// Twilio's signature: base64(HMAC-SHA1(token, URL + each POST parameter's name and value,
/// sorted by name)).
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    client::base64(&mac.finalize().into_bytes())
}

/// `application/x-www-form-urlencoded`.
fn form_encode(params: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(768);
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        for (j, s) in [k, v].into_iter().enumerate() {
            if j == 1 {
                out.push('=');
            }
            for b in s.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                        out.push(char::from(b))
                    }
                    b' ' => out.push('+'),
                    _ => {
                        let _ = write!(out, "%{b:02X}");
                    }
                }
            }
        }
    }
    out
}

/// The fields Twilio posts for an inbound SMS.
fn inbound_params<'a>(sid: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("ToCountry", "US"),
        ("ToState", "NJ"),
        ("SmsMessageSid", sid),
        ("NumMedia", "0"),
        ("ToCity", "JERSEY CITY"),
        ("FromZip", "07302"),
        ("SmsSid", sid),
        ("FromState", "NJ"),
        ("SmsStatus", "received"),
        ("FromCity", "JERSEY CITY"),
        ("Body", body),
        ("FromCountry", "US"),
        ("To", ALICE_NUMBER),
        ("ToZip", "07302"),
        ("NumSegments", "1"),
        ("MessageSid", sid),
        ("AccountSid", SID),
        ("From", FRIEND),
        ("ApiVersion", "2010-04-01"),
    ]
}

/// A webhook ready to post: the form body and its signature.
struct Hook {
    body: String,
    sig: String,
}

fn hook(url: &str, sid: &str, text: &str, token: &str) -> Hook {
    let params = inbound_params(sid, text);
    Hook {
        body: form_encode(&params),
        sig: twilio_signature(token, url, &params),
    }
}

/// A message sid of a run: `SM` + 32 hex digits.
fn sid(run: u64, i: usize) -> String {
    format!("SM{run:08x}{i:024x}")
}

// ---------------------------------------------------------------------------------------
// Load.

struct Load {
    wall: Duration,
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, usize>,
    /// Most requests in flight at once (open loop).
    peak: usize,
    /// When the last text reached alice, in seconds after the first request.
    delivered: Option<f64>,
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    fn pct(&self, p: usize) -> f64 {
        let n = self.latencies.len();
        if n == 0 {
            return 0.0;
        }
        self.latencies[(n * p / 100).min(n - 1)].as_secs_f64() * 1e3
    }

    fn max_ms(&self) -> f64 {
        self.latencies
            .last()
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(0.0)
    }

    /// Requests that took longer than `ms`.
    fn over(&self, ms: u64) -> usize {
        let limit = Duration::from_millis(ms);
        self.latencies.len() - self.latencies.partition_point(|&d| d <= limit)
    }

    fn all(&self, status: u16) -> bool {
        self.statuses.get(&status) == Some(&self.latencies.len())
    }
}

async fn post(web: &reqwest::Client, url: &str, h: &Hook) -> u16 {
    let r = web
        .post(url)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("X-Twilio-Signature", &h.sig)
        .body(h.body.clone())
        .send()
        .await
        .expect("ferry answers");
    let status = r.status().as_u16();
    let _ = r.bytes().await.expect("the answer's body");
    status
}

/// `conc` workers post `hooks` one after another, as fast as ferry answers.
async fn closed_loop(web: &reqwest::Client, url: &str, hooks: Arc<Vec<Hook>>, conc: usize) -> Load {
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (web, url, hooks, next) = (web.clone(), url.to_owned(), hooks.clone(), next.clone());
        tasks.spawn(async move {
            let mut lat = Vec::new();
            let mut statuses = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(h) = hooks.get(i) else { break };
                let start = Instant::now();
                let status = post(&web, &url, h).await;
                lat.push(start.elapsed());
                *statuses.entry(status).or_insert(0) += 1;
            }
            (lat, statuses)
        });
    }
    let mut load = Load {
        wall: Duration::ZERO,
        latencies: Vec::with_capacity(hooks.len()),
        statuses: BTreeMap::new(),
        peak: conc,
        delivered: None,
    };
    while let Some(r) = tasks.join_next().await {
        let (lat, statuses) = r.expect("worker");
        load.latencies.extend(lat);
        for (s, n) in statuses {
            *load.statuses.entry(s).or_insert(0) += n;
        }
    }
    load.wall = t0.elapsed();
    load.latencies.sort();
    load
}

/// Posts `hooks` at `rate` per second whatever the answers take; each latency counts from
/// the request's scheduled time.
async fn open_loop(web: &reqwest::Client, url: &str, hooks: Arc<Vec<Hook>>, rate: f64) -> Load {
    let permits = Arc::new(Semaphore::new(OPEN_LOOP_CAP));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut sent = 0;
    while sent < hooks.len() {
        let due = ((t0.elapsed().as_secs_f64() * rate) as usize + 1).min(hooks.len());
        while sent < due {
            let i = sent;
            sent += 1;
            let scheduled = t0 + Duration::from_secs_f64(i as f64 / rate);
            let (web, url, hooks) = (web.clone(), url.to_owned(), hooks.clone());
            let (permits, in_flight, peak) = (permits.clone(), in_flight.clone(), peak.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore");
                let now = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
                peak.fetch_max(now, Ordering::Relaxed);
                let status = post(&web, &url, &hooks[i]).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                (scheduled.elapsed(), status)
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let mut load = Load {
        wall: Duration::ZERO,
        latencies: Vec::with_capacity(hooks.len()),
        statuses: BTreeMap::new(),
        peak: 0,
        delivered: None,
    };
    while let Some(r) = tasks.join_next().await {
        let (lat, status) = r.expect("request task");
        load.latencies.push(lat);
        *load.statuses.entry(status).or_insert(0) += 1;
    }
    load.wall = t0.elapsed();
    load.peak = peak.load(Ordering::Relaxed);
    load.latencies.sort();
    load
}

// ---------------------------------------------------------------------------------------
// The XMPP side.

fn chat_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e: &Element| {
        e.name == "message"
            && e.attr("from") == Some(from)
            && e.attr("type") == Some("chat")
            && e.child("body", NS_CLIENT).is_some()
    }
}

fn body(e: &Element) -> String {
    e.child_text("body", NS_CLIENT).unwrap_or_default()
}

/// Takes `n` texts from FRIEND, each `{prefix}{i}` with distinct `i`, counting them in
/// `progress`; panics on anything else from FRIEND (a duplicate or a stray text). Returns
/// alice and when the last came.
async fn expect_texts(
    mut alice: Client,
    prefix: String,
    n: usize,
    progress: Arc<AtomicUsize>,
) -> (Client, Instant) {
    let friend = format!("{FRIEND}@{GW}");
    let mut seen = vec![false; n];
    for _ in 0..n {
        let m = alice.recv(WAIT, chat_from(&friend)).await;
        let b = body(&m);
        let i = b
            .strip_prefix(prefix.as_str())
            .and_then(|i| i.parse::<usize>().ok())
            .filter(|&i| i < n)
            .unwrap_or_else(|| panic!("unexpected text {b:?} while waiting for {prefix}…"));
        assert!(!seen[i], "{b:?} arrived twice");
        seen[i] = true;
        progress.fetch_add(1, Ordering::Relaxed);
    }
    (alice, Instant::now())
}

// ---------------------------------------------------------------------------------------
// Reporting.

struct Cpu {
    ferry: u32,
    prosody: u32,
    at: [f64; 3],
}

impl Cpu {
    fn now(ferry: u32, prosody: u32) -> Cpu {
        Cpu {
            ferry,
            prosody,
            at: [
                cpu_seconds(ferry),
                cpu_seconds(prosody),
                cpu_seconds(std::process::id()),
            ],
        }
    }

    /// "ferry X µs, Prosody Y µs, bench Z µs per item" since `self`.
    fn per(&self, n: usize) -> String {
        let now = Cpu::now(self.ferry, self.prosody).at;
        let us = |i: usize| (now[i] - self.at[i]) / n as f64 * 1e6;
        format!(
            "CPU per item: ferry {:.0} µs, Prosody {:.0} µs, bench {:.0} µs",
            us(0),
            us(1),
            us(2)
        )
    }
}

fn line(name: &str, load: &Load) -> String {
    format!(
        "{name}: {} requests in {:.2} s = {:.0}/s; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} over 50 ms; statuses {:?}",
        load.latencies.len(),
        load.wall.as_secs_f64(),
        load.rate(),
        load.pct(50),
        load.pct(99),
        load.max_ms(),
        load.over(50),
        load.statuses
    )
}

async fn metric(web: &reqwest::Client, http: &str, needle: &str) -> u64 {
    let text = web
        .get(format!("{http}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(needle))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The breakdown: the webhook's store calls and its HMAC alone.

async fn store_alone(n: usize, conc: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/alone.db", dir.path().display());
    let store = Store::open(&url, Cipher::from_key([9; 32]))
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let creds = Credentials::from([("number".to_owned(), ALICE_NUMBER.to_owned())]);
    store
        .upsert_account(BridgeKind::Sms, "alice@localhost", &creds)
        .await
        .expect("account");
    SmsStore::claim_number(&store, ALICE_NUMBER, "alice@localhost")
        .await
        .expect("claim");
    async fn one(store: &Store, i: usize) {
        let account = store
            .owner_account(ALICE_NUMBER)
            .await
            .expect("owner")
            .expect("claimed");
        let fresh = store
            .accept_inbound(&NewInbound {
                provider: "tw".into(),
                message_id: sid(0xa1, i),
                account,
                sender: FRIEND.into(),
                recipient: ALICE_NUMBER.into(),
                body: format!("alone {i}"),
                media: "[]".into(),
            })
            .await
            .expect("accept");
        assert!(fresh);
    }
    // One at a time.
    let seq = n / 4;
    let t0 = Instant::now();
    for i in 0..seq {
        one(&store, i).await;
    }
    let seq_us = t0.elapsed().as_secs_f64() / seq as f64 * 1e6;
    // `conc` at a time.
    let next = Arc::new(AtomicUsize::new(seq));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= seq + n {
                    break;
                }
                one(&store, i).await;
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    store.close().await;
    (seq_us, rate)
}

// ---------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let port = |k: usize| args[i + k].parse().expect("port");
        child(port(1), port(2), &args[i + 3], &args[i + 4]);
        return;
    }
    let n = env_usize("BENCH_WEBHOOKS", 20_000);
    let conc = env_usize("BENCH_CONCURRENCY", 64);
    let rate = env_usize("BENCH_RATE", 2_000) as f64;
    let m = env_usize("BENCH_TEXTS", 2_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n, conc, rate, m));
}

async fn run(n: usize, conc: usize, rate: f64, m: usize) {
    let mut prosody =
        Prosody::start_with_config(&[(GW, SECRET)], &[("alice", "alice")], PROSODY_EXTRA).await;
    let http_port = common::free_port();
    let http = format!("http://127.0.0.1:{http_port}");
    let (posts, mut posted) = watch::channel(0u64);
    let twilio = Arc::new(StandIn {
        posts,
        seen: Mutex::new(vec![0; m]),
        other: AtomicU64::new(0),
        bad: AtomicU64::new(0),
        first_bad: Mutex::new(None),
        checks: AtomicU64::new(0),
        next_sid: AtomicU64::new(1),
        auth: format!(
            "Basic {}",
            client::base64(format!("{SID}:{TOKEN}").as_bytes())
        ),
        status_url: format!("{http}/sms/tw/status"),
        delay: Duration::from_millis(env_usize("BENCH_API_DELAY_MS", 0) as u64),
    });
    let api_base = stand_in(twilio.clone()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut ferry = Command::new(std::env::current_exe().expect("exe"))
        .arg("--child")
        .arg(prosody.component_port.to_string())
        .arg(http_port.to_string())
        .arg(&api_base)
        .arg(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ferry");
    let mut linked = String::new();
    let mut lines = BufReader::new(ferry.stdout.take().expect("stdout"));
    let _ = tokio::task::block_in_place(|| lines.read_line(&mut linked));
    let db_url = linked
        .trim()
        .strip_prefix("linked ")
        .unwrap_or_else(|| panic!("ferry did not link: {linked:?}"))
        .to_owned();
    let ferry_pid = ferry.id();
    let prosody_pid = prosody.pid().expect("prosody pid");
    let cpu = || Cpu::now(ferry_pid, prosody_pid);
    println!(
        "bed: Prosody pid {prosody_pid}, ferry pid {ferry_pid}, {} core(s); N = {n} webhooks, C = {conc}, open loop at {rate}/s, M = {m} texts",
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );

    // alice registers by claiming her number.
    let mut alice = client::login(prosody.c2s_port, "alice", "alice", "bench").await;
    alice.send_presence().await;
    let r = alice
        .iq(&format!(
            "<iq type='set' id='reg' to='{GW}'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='number'><value>{ALICE_NUMBER}</value></field></x></query></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "registration: {r}");

    let web = reqwest::Client::builder()
        .pool_max_idle_per_host(OPEN_LOOP_CAP)
        .build()
        .expect("http client");
    let url = format!("{http}/sms/tw/inbound");

    // Warm-up: one text each way (creates the contact and its identity, opens connections).
    let warm_sid = sid(0, 0);
    let warm = hook(&url, &warm_sid, "warm 0", TOKEN);
    assert_eq!(post(&web, &url, &warm).await, 200);
    let (a, _) = expect_texts(alice, "warm ".into(), 1, Arc::default()).await;
    alice = a;
    let to = format!("{DEST}@{GW}");
    alice
        .send(&format!(
            "<message type='chat' id='warm' to='{to}'><body>warm up</body></message>"
        ))
        .await;
    tokio::time::timeout(WAIT, posted.wait_for(|v| *v >= 1))
        .await
        .expect("the warm-up text reached the stand-in")
        .expect("stand-in alive");
    let mut summary = Vec::new();

    // 1a. Distinct webhooks, closed loop.
    let hooks: Arc<Vec<Hook>> = Arc::new(
        (0..n)
            .map(|i| hook(&url, &sid(1, i), &format!("closed {i}"), TOKEN))
            .collect(),
    );
    let progress = Arc::new(AtomicUsize::new(0));
    let receiver = tokio::spawn(expect_texts(alice, "closed ".into(), n, progress.clone()));
    let c0 = cpu();
    let t_start = Instant::now();
    let mut load = closed_loop(&web, &url, hooks, conc).await;
    let cpu_acks = c0.per(n);
    let at_last_ack = progress.load(Ordering::Relaxed);
    let (a, last) = receiver.await.expect("receiver");
    alice = a;
    let cpu_all = c0.per(n);
    let delivered_after = last.duration_since(t_start).as_secs_f64();
    load.delivered = Some(delivered_after);
    println!("{}", line("distinct webhooks, closed loop", &load));
    println!(
        "  while acknowledging: {cpu_acks}; {at_last_ack} texts had reached alice at the last ack"
    );
    println!(
        "  all {n} texts reached alice over XMPP {delivered_after:.2} s after the first request ({:.0}/s end to end); until then: {cpu_all}",
        n as f64 / delivered_after
    );
    assert!(load.all(200), "not all 200: {:?}", load.statuses);
    summary.push(("distinct, closed loop C", load));

    // 1b. One webhook repeated, closed loop; then a marker: nothing may come before it.
    let dups: Arc<Vec<Hook>> = Arc::new(
        (0..n)
            .map(|_| Hook {
                body: warm.body.clone(),
                sig: warm.sig.clone(),
            })
            .collect(),
    );
    let c0 = cpu();
    let load = closed_loop(&web, &url, dups, conc).await;
    let cpu_line = c0.per(n);
    println!("{}", line("one webhook repeated, closed loop", &load));
    println!("  {cpu_line}");
    assert!(load.all(200), "not all 200: {:?}", load.statuses);
    assert_eq!(
        post(&web, &url, &hook(&url, &sid(2, 0), "marker 0", TOKEN)).await,
        200
    );
    let (a, _) = expect_texts(alice, "marker ".into(), 1, Arc::default()).await;
    alice = a;
    println!("  no repeat reached alice");
    summary.push(("duplicates, closed loop C", load));

    // 1c. Distinct webhooks at the target rate, open loop.
    let hooks: Arc<Vec<Hook>> = Arc::new(
        (0..n)
            .map(|i| hook(&url, &sid(3, i), &format!("paced {i}"), TOKEN))
            .collect(),
    );
    let progress = Arc::new(AtomicUsize::new(0));
    let receiver = tokio::spawn(expect_texts(alice, "paced ".into(), n, progress.clone()));
    let c0 = cpu();
    let t_start = Instant::now();
    let mut load = open_loop(&web, &url, hooks, rate).await;
    let cpu_acks = c0.per(n);
    let at_last_ack = progress.load(Ordering::Relaxed);
    let (a, last) = receiver.await.expect("receiver");
    alice = a;
    let cpu_all = c0.per(n);
    let delivered_after = last.duration_since(t_start).as_secs_f64();
    load.delivered = Some(delivered_after);
    println!(
        "{} (offered {rate:.0}/s, peak {} in flight)",
        line("distinct webhooks, open loop", &load),
        load.peak
    );
    println!(
        "  while acknowledging: {cpu_acks}; {at_last_ack} texts had reached alice at the last ack"
    );
    println!(
        "  all {n} texts reached alice {delivered_after:.2} s after the first request ({:.0}/s end to end); until then: {cpu_all}",
        n as f64 / delivered_after
    );
    assert!(load.all(200), "not all 200: {:?}", load.statuses);
    summary.push(("distinct, open loop at target rate", load));

    // 1d. Forged signatures: HTTP + HMAC, no store.
    let forged: Arc<Vec<Hook>> = Arc::new(
        (0..n)
            .map(|i| hook(&url, &sid(4, i), &format!("forged {i}"), "not-the-token"))
            .collect(),
    );
    let c0 = cpu();
    let load = closed_loop(&web, &url, forged, conc).await;
    let cpu_line = c0.per(n);
    println!("{}", line("forged webhooks (403), closed loop", &load));
    println!("  {cpu_line}");
    assert!(load.all(403), "not all 403: {:?}", load.statuses);
    summary.push(("forged (403: HTTP + HMAC only)", load));

    // The store and the metrics agree: every distinct text kept once and handed on.
    sqlx::any::install_default_drivers();
    let db = sqlx::AnyPool::connect(&db_url)
        .await
        .expect("open ferry's db");
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, COUNT(delivered_at_ms) AS d FROM sms_inbound WHERE provider = 'tw'",
    )
    .fetch_one(&db)
    .await
    .expect("count");
    use sqlx::Row as _;
    let (kept, handed): (i64, i64) = (row.try_get("n").expect("n"), row.try_get("d").expect("d"));
    db.close().await;
    let expected = 2 * n as i64 + 2; // the warm-up, the marker, and two runs of N
    let ok = metric(&web, &http, "ferry_sms_webhooks_total{outcome=\"ok\"}").await;
    let dup = metric(
        &web,
        &http,
        "ferry_sms_webhooks_total{outcome=\"duplicate\"}",
    )
    .await;
    let forbidden = metric(
        &web,
        &http,
        "ferry_sms_webhooks_total{outcome=\"forbidden\"}",
    )
    .await;
    let xmpp_in = metric(
        &web,
        &http,
        "ferry_messages_total{bridge=\"sms\",direction=\"in\",outcome=\"ok\"}",
    )
    .await;
    println!(
        "store: sms_inbound holds {kept} texts, {handed} handed on (expected {expected}); metrics: webhooks ok {ok}, duplicate {dup}, forbidden {forbidden}; XMPP messages in {xmpp_in}"
    );
    assert_eq!((kept, handed), (expected, expected));
    assert_eq!((ok, dup, forbidden), (expected as u64, n as u64, n as u64));
    assert_eq!(xmpp_in, expected as u64);

    // 2. Outbound: M texts from alice through the outbox to the stand-in.
    let base = *posted.borrow();
    let c0 = cpu();
    let t0 = Instant::now();
    let mut batch = String::with_capacity(64 * 1024);
    for i in 0..m {
        let _ = write!(
            batch,
            "<message type='chat' id='o{i}' to='{to}'><body>bench text {i}</body></message>"
        );
        if batch.len() > 32 * 1024 {
            alice.send(&batch).await;
            batch.clear();
        }
    }
    alice.send(&batch).await;
    let sent_in = t0.elapsed();
    tokio::time::timeout(WAIT * 5, posted.wait_for(|v| *v >= base + m as u64))
        .await
        .expect("every text reached the stand-in")
        .expect("stand-in alive");
    let wall = t0.elapsed();
    let cpu_line = c0.per(m);
    let bad = twilio.bad.load(Ordering::Relaxed);
    let first_bad = twilio.first_bad.lock().expect("lock").clone();
    let seen = twilio.seen.lock().expect("lock").clone();
    let once = seen.iter().filter(|&&c| c == 1).count();
    println!(
        "outbound: {m} texts through the outbox to the stand-in in {:.2} s = {:.0} texts/s (alice's stanzas written in {:.2} s); {cpu_line}",
        wall.as_secs_f64(),
        m as f64 / wall.as_secs_f64(),
        sent_in.as_secs_f64()
    );
    println!(
        "  stand-in: {once} of {m} texts arrived exactly once with To {DEST}, From {ALICE_NUMBER}, Body \"bench text i\", StatusCallback and Basic auth; {bad} malformed; {} warm-up; {} credential check(s)",
        twilio.other.load(Ordering::Relaxed),
        twilio.checks.load(Ordering::Relaxed)
    );
    assert_eq!(bad, 0, "malformed requests, first: {first_bad:?}");
    assert_eq!(once, m, "texts missing or repeated");
    let out_rate = m as f64 / wall.as_secs_f64();

    // Stop the bed.
    alice.close().await;
    drop(ferry.stdin.take());
    let _ = tokio::task::block_in_place(|| ferry.wait());
    prosody.stop().await;

    // Breakdown, on a quiet machine.
    let (seq_us, store_rate) = store_alone(n, conc).await;
    println!(
        "breakdown: owner_account + accept_inbound alone on a fresh SQLite store: {seq_us:.0} µs each one at a time, {store_rate:.0}/s {conc} at a time"
    );
    let params = inbound_params("SM0123456789abcdef0123456789abcdef", "closed 12345");
    let t0 = Instant::now();
    let reps = 100_000;
    let mut keep = 0usize;
    for _ in 0..reps {
        keep += twilio_signature(TOKEN, &url, &params).len();
    }
    let hmac_us = t0.elapsed().as_secs_f64() / reps as f64 * 1e6;
    println!(
        "breakdown: one Twilio signature (HMAC-SHA1 over ~500 bytes): {hmac_us:.2} µs ({keep} bytes)"
    );

    println!("\nsummary (N = {n}, C = {conc}):");
    println!(
        "| run | requests/s | p50 ms | p99 ms | max ms | > 50 ms | statuses | all texts at alice after |"
    );
    for (name, l) in &summary {
        let delivered = l
            .delivered
            .map(|d| format!("{d:.2} s ({:.0}/s)", l.latencies.len() as f64 / d))
            .unwrap_or_default();
        println!(
            "| {name} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {:?} | {delivered} |",
            l.rate(),
            l.pct(50),
            l.pct(99),
            l.max_ms(),
            l.over(50),
            l.statuses
        );
    }
    println!("| outbound (M = {m}), texts/s | {out_rate:.0} | | | | | | |");
    println!(
        "| store alone (owner_account + accept_inbound), C at a time | {store_rate:.0} | | | | | {seq_us:.0} µs one at a time | |"
    );
}
