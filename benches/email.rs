//! Benchmark: the email bridge's three figures (issue 3), in one run.
//!
//! 1. **mime**: raw mail → the XMPP stanza ferry sends, one core, beside Python. Over the
//!    real corpus (`/work/shared/corpus/mail/*.eml`, 88 mails from github.com/mikel/mail;
//!    `BENCH_MAIL_CORPUS` names another folder, and without the shared folder the copy in
//!    `bridges/email/tests/fixtures/mail` is used), each mail goes through
//!    `ferry_email::mime::parse` (default limits), `ferry_email::inbound::to_message` (every
//!    attachment gets a made-up `/media/` link) and the stanza the relay builds
//!    (`ferry::relay::inbound_stanza`: the body, `<subject/>`, `<thread/>`, an XEP-0066
//!    `<x/>` per link, `<markable/>`), serialized with `Element::to_stanza_string`, as it
//!    goes on the component stream. Passes over the corpus repeat for at least `BENCH_MIME_SECS` (3)
//!    seconds after a warm-up pass. Then `benches/email_python.py` does the same corpus with
//!    Python's `email` package (`policy.default`, every part's `get_content()`), run here
//!    with `python3` (`BENCH_PYTHON` names another interpreter), and the ratio is printed.
//!    Not included on ferry's side: the store work per mail (attachments kept for
//!    `/media/`, the identity lookup, the message map) and the hop through
//!    `spawn_blocking`.
//! 2. **outbound**: a real Prosody, the real ferry binary (SQLite in a temporary
//!    directory) and the mail test bed (`tests/common/mail.rs`: Dovecot IMAP + submission,
//!    OpenSMTPD delivering through LMTP into Maildirs). alice registers her mailbox through
//!    the XMPP registration form, then sends M (`BENCH_MAILS`, 1,000) chat messages, each
//!    asking for an XEP-0184 receipt, to `bob\40example.test@email.localhost`. Timed from
//!    her first stanza until all M are files in bob's Maildir (the folder is listed every
//!    10 ms, with a deadline), and until all M receipts are back. ferry also appends each
//!    mail to alice's Sent folder in the background; the time until all are there is shown
//!    too. Every mail must reach bob's INBOX exactly once. Then, without ferry, a probe
//!    sends `BENCH_PROBE_MAILS` (100) mails on one kept submission connection three ways
//!    (body and final dot in two writes as lettre does, with and without `TCP_NODELAY`, and
//!    in one write), to show what the SMTP write pattern costs.
//! 3. **memory**: N (`BENCH_SESSIONS`, 1,000) registered users, each with an IMAP IDLE
//!    session against Dovecot (no TLS, loopback). The accounts are written into a fresh
//!    SQLite store with ferry's own library before ferry starts (no XMPP logins needed:
//!    ferry starts every registered user's session at start-up). ferry's RSS is read from
//!    /proc once with 0 users (the baseline, a separate ferry process on its own store) and
//!    once all N IMAP connections are in IDLE, as Dovecot's process titles show
//!    (`verbose_proctitle`). Reported: (RSS_N − RSS_0) / N, right when the last one is in
//!    IDLE and after `BENCH_SETTLE_SECS` (3) more seconds of sampling, with the
//!    anonymous/private-dirty part from `smaps_rollup`. ferry inherits this process's
//!    environment, so `MALLOC_ARENA_MAX=…` on the command line reaches its allocator.
//!
//! Run with `cargo bench --bench email`; choose parts with arguments or `BENCH_EMAIL`
//! (comma-separated): `cargo bench --bench email -- mime`, `BENCH_EMAIL=outbound,memory`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::client::{self, Client, NS_CLIENT};
use common::mail::{MailOptions, MailServer};
use common::prosody::Prosody;
use ferry_bridge_api::{BridgeKind, FormValues, InboundMessage};
use ferry_email::mime::{self, Limits};
use ferry_email::net::Tls;
use ferry_email::{Mailbox, ServerDefaults, Settings, Timing};

const GW: &str = "email.localhost";
const SECRET: &str = "email-bench-secret";
const ALICE: &str = "alice@example.test";
const ALICE_PW: &str = "alice-mail-pw";
const BOB: &str = "bob@example.test";
const BOB_PW: &str = "bob-mail-pw";
const NS_RECEIPTS: &str = "urn:xmpp:receipts";
const WAIT: Duration = Duration::from_secs(60);
/// How often a Maildir, a log file or Dovecot's processes are looked at.
const POLL: Duration = Duration::from_millis(10);
/// Prosody at info level (debug logging of thousands of stanzas would dominate its CPU).
const PROSODY_EXTRA: &str =
    r#"log = { { levels = { min = "info" }, to = "file", filename = "/dev/stdout" } }"#;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Which parts to run: the words among the arguments, else `BENCH_EMAIL`, else all.
fn wanted() -> Vec<String> {
    const PARTS: [&str; 3] = ["mime", "outbound", "memory"];
    let mut asked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| PARTS.contains(&a.as_str()))
        .collect();
    if asked.is_empty()
        && let Ok(v) = std::env::var("BENCH_EMAIL")
    {
        asked = v
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        for p in &asked {
            assert!(
                PARTS.contains(&p.as_str()),
                "BENCH_EMAIL: unknown part {p:?}"
            );
        }
    }
    if asked.is_empty() {
        PARTS.iter().map(|p| (*p).to_owned()).collect()
    } else {
        asked
    }
}

fn main() {
    let parts = wanted();
    println!(
        "email bench: {} on {} core(s)",
        parts.join(", "),
        std::thread::available_parallelism().map_or(0, |p| p.get())
    );
    let mut summary = Vec::new();
    if parts.iter().any(|p| p == "mime") {
        summary.extend(mime_part());
    }
    if parts.iter().any(|p| p == "outbound") || parts.iter().any(|p| p == "memory") {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        if parts.iter().any(|p| p == "outbound") {
            summary.extend(rt.block_on(outbound_part(env_usize("BENCH_MAILS", 1_000))));
        }
        if parts.iter().any(|p| p == "memory") {
            summary.extend(rt.block_on(memory_part(env_usize("BENCH_SESSIONS", 1_000))));
        }
    }
    println!("\nsummary:");
    println!("| figure | value |");
    println!("|---|---:|");
    for (k, v) in summary {
        println!("| {k} | {v} |");
    }
}

// ---------------------------------------------------------------------------------------
// 1. MIME → stanza, beside Python.

/// A user to deliver to (the stanza's `to`).
const USER: &str = "alice@localhost";

fn corpus_dir() -> PathBuf {
    if let Ok(d) = std::env::var("BENCH_MAIL_CORPUS") {
        return PathBuf::from(d);
    }
    let shared = Path::new("/work/shared/corpus/mail");
    if shared.is_dir() {
        return shared.to_owned();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("bridges/email/tests/fixtures/mail")
}

/// The `.eml` files of `dir`, by name.
fn load_corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".eml"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("read a mail"),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .eml files in {}", dir.display());
    files
}

/// What one mail became, for the sanity line.
#[derive(Default, Clone, Copy)]
struct Made {
    stanza_bytes: usize,
    links: usize,
    unreadable: usize,
}

/// The inbound message for `raw`, as the session makes it: parsed, or the notice that
/// stands for a mail that cannot be read.
fn inbound_message(raw: &[u8], uid: u32, limits: &Limits) -> InboundMessage {
    let fallback_id = format!("imap:1:{uid}");
    match mime::parse(raw, limits) {
        Ok(mail) => {
            // The session publishes each attachment under /media/ and links it.
            let links: Vec<Result<String, String>> = mail
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    Ok(format!(
                        "https://ferry.example.org/media/{uid:08x}{i:024x}/{}",
                        a.name
                    ))
                })
                .collect();
            ferry_email::inbound::to_message(mail, fallback_id, &links, None)
        }
        Err(e) => InboundMessage {
            remote_message_id: fallback_id,
            body: format!(
                "A mail in your mailbox (UID {uid}) could not be read here ({e}); it is still in your mailbox."
            ),
            ..Default::default()
        },
    }
}

/// The stanza the relay sends for `m` (`ferry::relay::inbound_stanza`, as
/// `Relay::deliver_inbound` calls it, without its store lookups: the contact's JID is the
/// escaped address, the thread the bridge's own, no XEP-0461 reply), serialized for the
/// component stream.
fn stanza_for(m: &InboundMessage) -> String {
    let from = match &m.from {
        Some(remote) => format!("{}@{GW}", ferry::jid::escape_node(remote.as_str())),
        None => GW.to_owned(),
    };
    let id: String = format!("in-{}", m.remote_message_id)
        .chars()
        .take(128)
        .collect();
    ferry::relay::inbound_stanza(&from, USER, &id, m, m.thread.as_deref(), None).to_stanza_string()
}

fn one_mail(raw: &[u8], uid: u32, limits: &Limits) -> Made {
    let m = inbound_message(raw, uid, limits);
    let unreadable = usize::from(m.body.starts_with("A mail in your mailbox (UID"));
    let out = stanza_for(&m);
    Made {
        stanza_bytes: std::hint::black_box(out).len(),
        links: m.links.len(),
        unreadable,
    }
}

/// Passes over `corpus` until `secs` have gone by; (messages, seconds, pass times).
fn timed_passes(
    corpus: &[(String, Vec<u8>)],
    secs: f64,
    mut work: impl FnMut(&[u8], u32),
) -> (usize, f64, Vec<f64>) {
    let start = Instant::now();
    let mut passes = Vec::new();
    loop {
        let t0 = Instant::now();
        for (i, (_, raw)) in corpus.iter().enumerate() {
            work(raw, i as u32 + 1);
        }
        passes.push(t0.elapsed().as_secs_f64());
        if start.elapsed().as_secs_f64() >= secs {
            break;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    (passes.len() * corpus.len(), elapsed, passes)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Python's figures: `msgs_per_s`, `mb_per_s`, the whole line, and the version line.
struct Python {
    msgs_per_s: f64,
    mb_per_s: f64,
    line: String,
    version: String,
}

fn run_python(dir: &Path, secs: f64) -> Option<Python> {
    let python = std::env::var("BENCH_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/email_python.py");
    let out = match Command::new(&python)
        .arg(&script)
        .arg(dir)
        .arg(secs.to_string())
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            println!("python: {python} exited with {}", o.status);
            return None;
        }
        Err(e) => {
            println!("python: cannot run {python}: {e}");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("python messages="))?;
    let field = |k: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .and_then(|v| v.parse().ok())
    };
    Some(Python {
        msgs_per_s: field("msgs_per_s")?,
        mb_per_s: field("mb_per_s")?,
        line: line.to_owned(),
        version: text
            .lines()
            .find_map(|l| l.strip_prefix("python version="))
            .unwrap_or("?")
            .to_owned(),
    })
}

fn mime_part() -> Vec<(String, String)> {
    let dir = corpus_dir();
    let corpus = load_corpus(&dir);
    let secs = env_f64("BENCH_MIME_SECS", 3.0);
    let limits = Limits::default();
    let bytes: usize = corpus.iter().map(|(_, r)| r.len()).sum();
    println!(
        "\n1. MIME → stanza: {} mails, {:.1} KB, from {}",
        corpus.len(),
        bytes as f64 / 1e3,
        dir.display()
    );

    // Warm-up, and what the corpus turns into.
    let mut made = Made::default();
    for (i, (_, raw)) in corpus.iter().enumerate() {
        let m = one_mail(raw, i as u32 + 1, &limits);
        made.stanza_bytes += m.stanza_bytes;
        made.links += m.links;
        made.unreadable += m.unreadable;
    }
    println!(
        "  one pass makes {} stanzas, {:.1} KB of XML, {} attachment links; {} mail(s) unreadable (a notice instead)",
        corpus.len(),
        made.stanza_bytes as f64 / 1e3,
        made.links,
        made.unreadable
    );

    let (n, elapsed, mut passes) = timed_passes(&corpus, secs, |raw, uid| {
        std::hint::black_box(one_mail(raw, uid, &limits));
    });
    let rate = n as f64 / elapsed;
    let mb = bytes as f64 * passes.len() as f64 / elapsed / 1e6;
    let med = median(&mut passes);
    println!(
        "  ferry: {n} mails in {elapsed:.2} s ({} passes) = {rate:.0} mails/s, {mb:.1} MB/s; median pass {:.2} ms = {:.1} µs per mail",
        passes.len(),
        med * 1e3,
        med * 1e6 / corpus.len() as f64
    );

    // Breakdown: the parse alone, and the slowest mails.
    let (pn, pel, mut ppasses) = timed_passes(&corpus, secs / 3.0, |raw, _| {
        let _ = std::hint::black_box(mime::parse(raw, &limits));
    });
    let pmed = median(&mut ppasses);
    println!(
        "  of which mime::parse alone: {:.0} mails/s; median pass {:.2} ms ({:.0} % of the whole)",
        pn as f64 / pel,
        pmed * 1e3,
        pmed / med * 100.0
    );
    let mut per_file: Vec<(f64, &str, usize)> = corpus
        .iter()
        .enumerate()
        .map(|(i, (name, raw))| {
            let reps = 50;
            let t0 = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(one_mail(raw, i as u32 + 1, &limits));
            }
            (
                t0.elapsed().as_secs_f64() / reps as f64,
                name.as_str(),
                raw.len(),
            )
        })
        .collect();
    per_file.sort_by(|a, b| b.0.total_cmp(&a.0));
    let total: f64 = per_file.iter().map(|f| f.0).sum();
    println!("  slowest mails (share of a pass):");
    for (t, name, len) in per_file.iter().take(6) {
        println!(
            "    {:>7.1} µs {:>5.1} % {:>7} B  {name}",
            t * 1e6,
            t / total * 100.0,
            len
        );
    }

    let mut summary = vec![
        (
            "ferry MIME → stanza, mails/s (one core)".to_owned(),
            format!("{rate:.0}"),
        ),
        ("ferry MIME → stanza, MB/s".to_owned(), format!("{mb:.1}")),
    ];
    match run_python(&dir, secs) {
        Some(py) => {
            println!("  {}", py.line);
            let ratio = rate / py.msgs_per_s;
            println!(
                "  Python {}: {:.0} mails/s, {:.2} MB/s; ferry / Python = {ratio:.1}× (target ≥ 50×: {})",
                py.version,
                py.msgs_per_s,
                py.mb_per_s,
                if ratio >= 50.0 { "met" } else { "NOT met" }
            );
            summary.push((
                format!("Python {} email, mails/s", py.version),
                format!("{:.0}", py.msgs_per_s),
            ));
            summary.push(("ferry / Python".to_owned(), format!("{ratio:.1}×")));
        }
        None => println!("  Python: no figure"),
    }
    summary
}

// ---------------------------------------------------------------------------------------
// Processes: CPU, memory, logs.

/// /proc/PID/stat fields after the command name.
fn stat_fields(pid: u32) -> Vec<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// utime + stime of a process, in seconds (ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> f64 {
    let f = stat_fields(pid);
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// CPU of a whole process group: every live member's utime + stime plus what the children
/// it reaped used (cutime + cstime), in seconds.
fn group_cpu_seconds(pgid: Option<u32>) -> f64 {
    let Some(pgid) = pgid else { return 0.0 };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    let mut ticks = 0.0;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let f = stat_fields(pid);
        if f.get(2).and_then(|g| g.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        for i in 11..=14 {
            ticks += f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        }
    }
    ticks / 100.0
}

/// A `kB` figure from a /proc file of `Key:   123 kB` lines.
fn proc_kb(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Memory of a process, in KiB.
#[derive(Clone, Copy, Debug, Default)]
struct Mem {
    rss: u64,
    anon: u64,
    private_dirty: u64,
    threads: u64,
}

fn mem_of(pid: u32) -> Mem {
    let status = format!("/proc/{pid}/status");
    let rollup = format!("/proc/{pid}/smaps_rollup");
    Mem {
        rss: proc_kb(&status, "VmRSS"),
        anon: proc_kb(&rollup, "Anonymous"),
        private_dirty: proc_kb(&rollup, "Private_Dirty"),
        threads: std::fs::read_to_string(&status)
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
    }
}

/// Established TCP connections of process `pid` to `port` on the far side.
fn connections_to(pid: u32, port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let inodes: HashSet<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    let mut n = 0;
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "01" {
                continue;
            }
            let remote_port = f[2]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if remote_port == Some(port) && inodes.contains(f[9]) {
                n += 1;
            }
        }
    }
    n
}

/// The ferry binary with `config`, its log (stdout and stderr, `RUST_LOG=info`) in `log`.
fn spawn_ferry(config: &Path, log: &Path) -> Child {
    let out = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env_remove("FERRY_CONFIG")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("start ferry")
}

/// SIGTERM, then waits (with a deadline, then SIGKILL) for ferry to exit.
async fn stop_ferry(mut ferry: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &ferry.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if let Ok(Some(_)) = ferry.try_wait() {
            return;
        }
        if Instant::now() >= deadline {
            println!("  ferry did not stop within 40 s of SIGTERM; killing it");
            let _ = ferry.kill();
            let _ = ferry.wait();
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Lines of ferry's log holding `needle`.
fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

/// Waits until ferry's log holds `needle` at least `n` times; panics with the log after
/// `within`, or when ferry exits first.
async fn wait_log(ferry: &mut Child, log: &Path, needle: &str, n: usize, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        if log_count(log, needle) >= n {
            return;
        }
        let exited = ferry.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() >= deadline {
            panic!(
                "ferry's log did not show {needle:?} ×{n} ({exited:?}):\n{}",
                tail(log, 60)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn config_text(prosody: &Prosody, mail: &MailServer, http_port: u16) -> String {
    format!(
        r#"[xmpp]
host = "127.0.0.1"
port = {component_port}
allowed = ["localhost"]
[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}/"
[email]
domain = "{GW}"
secret = "{SECRET}"
imap_host = "127.0.0.1"
imap_port = {imap}
imap_tls = "none"
smtp_host = "127.0.0.1"
smtp_port = {smtp}
smtp_tls = "none"
[database]
url = "sqlite://ferry.db"
[secrets]
key_file = "ferry.key"
"#,
        component_port = prosody.component_port,
        imap = mail.imap_port(),
        smtp = mail.submission_port(),
    )
}

// ---------------------------------------------------------------------------------------
// 2. Outbound: XMPP → the outbox → SMTP submission → bob's Maildir.

fn register_iq(email: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='reg' to='{GW}'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>\
         <field var='email'><value>{email}</value></field>\
         <field var='name'><value>Alice Example</value></field>\
         <field var='password'><value>{password}</value></field></x></query></iq>"
    )
}

/// Waits for `m` receipts (or errors) for ids `o0` … `o{m-1}`; returns when the last came
/// and the errors.
async fn receipts(alice: &mut Client, m: usize) -> (Instant, Vec<String>) {
    let mut seen = vec![false; m];
    let mut got = 0;
    let mut errors = Vec::new();
    let index = |id: Option<&str>| {
        id.and_then(|i| i.strip_prefix('o'))
            .and_then(|i| i.parse::<usize>().ok())
    };
    while got < m {
        let e = alice
            .recv(WAIT * 2, |e| {
                e.name == "message"
                    && (e.child("received", NS_RECEIPTS).is_some()
                        || e.attr("type") == Some("error") && index(e.attr("id")).is_some())
            })
            .await;
        let i = match e.child("received", NS_RECEIPTS) {
            Some(r) => index(r.attr("id")),
            None => {
                errors.push(e.to_string());
                index(e.attr("id"))
            }
        };
        if let Some(i) = i
            && i < m
            && !seen[i]
        {
            seen[i] = true;
            got += 1;
        }
    }
    (Instant::now(), errors)
}

/// Waits until `user`'s `folder` holds `n` messages; when it saw them.
async fn wait_count(
    mail: &MailServer,
    user: &str,
    folder: &str,
    n: usize,
    within: Duration,
) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        let have = mail.message_count(user, folder);
        if have >= n {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{user}'s {folder} holds {have} of {n} after {within:?}\n{}",
            mail.logs()
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn outbound_part(m: usize) -> Vec<(String, String)> {
    println!("\n2. Outbound: {m} chat messages from alice through the outbox to bob's Maildir");
    let mut prosody =
        Prosody::start_with_config(&[(GW, SECRET)], &[("alice", "alice")], PROSODY_EXTRA).await;
    let mail = MailServer::start(&[(ALICE, ALICE_PW), (BOB, BOB_PW)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, config_text(&prosody, &mail, common::free_port())).expect("config");
    let log = dir.path().join("ferry.log");
    let mut ferry = spawn_ferry(&config, &log);
    wait_log(&mut ferry, &log, "component link up", 1, WAIT).await;
    let ferry_pid = ferry.id();
    let prosody_pid = prosody.pid().expect("prosody pid");

    let mut alice = client::login(prosody.c2s_port, "alice", "alice", "bench").await;
    alice.send_presence().await;
    let r = alice.iq(&register_iq(ALICE, ALICE_PW)).await;
    assert_eq!(r.attr("type"), Some("result"), "registration: {r}");
    alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("from") == Some(GW)
                && e.attr("type").is_none()
                && e.child_text("status", NS_CLIENT)
                    .is_some_and(|s| s.contains(ALICE))
        })
        .await;
    let bob = format!("bob\\40example.test@{GW}");

    // Warm-up: one mail end to end (the contact, the SMTP connection, the Sent connection).
    alice
        .send(&format!(
            "<message type='chat' id='warm' to='{bob}'><body>warm up</body><request xmlns='{NS_RECEIPTS}'/></message>"
        ))
        .await;
    alice
        .recv(WAIT, |e| {
            e.child("received", NS_RECEIPTS)
                .is_some_and(|r| r.attr("id") == Some("warm"))
        })
        .await;
    wait_count(&mail, BOB, "INBOX", 1, WAIT).await;
    wait_count(&mail, ALICE, "Sent", 1, WAIT).await;

    let cpu = || {
        (
            cpu_seconds(ferry_pid),
            cpu_seconds(prosody_pid),
            group_cpu_seconds(mail.dovecot_pgid()),
            group_cpu_seconds(mail.smtpd_pgid()),
        )
    };
    let c0 = cpu();
    let t0 = Instant::now();
    let mut batch = String::with_capacity(64 * 1024);
    for i in 0..m {
        let _ = write!(
            batch,
            "<message type='chat' id='o{i}' to='{bob}'><body>bench mail {i}</body><request xmlns='{NS_RECEIPTS}'/></message>"
        );
        if batch.len() > 32 * 1024 {
            alice.send(&batch).await;
            batch.clear();
        }
    }
    alice.send(&batch).await;
    let written = t0.elapsed();
    // Receipts come back through alice's client while bob's Maildir fills.
    let within = WAIT * 10;
    let ((receipts_at, errors), inbox_at) = tokio::join!(
        receipts(&mut alice, m),
        wait_count(&mail, BOB, "INBOX", m + 1, within)
    );
    let c1 = cpu();
    let sent_at = wait_count(&mail, ALICE, "Sent", m + 1, within).await;
    let inbox = inbox_at.duration_since(t0).as_secs_f64();
    let receipts = receipts_at.duration_since(t0).as_secs_f64();
    let sent = sent_at.duration_since(t0).as_secs_f64();
    let per = |a: f64, b: f64| (b - a) / m as f64 * 1e6;
    let (ferry_us, prosody_us, dovecot_us, smtpd_us) = (
        per(c0.0, c1.0),
        per(c0.1, c1.1),
        per(c0.2, c1.2),
        per(c0.3, c1.3),
    );
    println!(
        "  alice's {m} stanzas written in {:.3} s; all {m} in bob's INBOX after {inbox:.2} s = {:.0} mails/s; all receipts after {receipts:.2} s = {:.0}/s; all in alice's Sent after {sent:.2} s",
        written.as_secs_f64(),
        m as f64 / inbox,
        m as f64 / receipts
    );
    println!(
        "  CPU per mail until then: ferry {ferry_us:.0} µs, Prosody {prosody_us:.0} µs, Dovecot (all its processes) {dovecot_us:.0} µs, OpenSMTPD {smtpd_us:.0} µs"
    );
    if !errors.is_empty() {
        println!(
            "  {} error(s) instead of receipts, first: {}",
            errors.len(),
            errors[0]
        );
    }

    // Each exactly once in bob's INBOX.
    let mut count: BTreeMap<usize, usize> = BTreeMap::new();
    let mut other = 0;
    let got = mail.mailbox_messages(BOB, "INBOX");
    for raw in &got {
        let text = mime::parse(raw, &Limits::default())
            .map(|p| p.text)
            .unwrap_or_default();
        match text
            .trim()
            .strip_prefix("bench mail ")
            .and_then(|i| i.parse::<usize>().ok())
        {
            Some(i) if i < m => *count.entry(i).or_default() += 1,
            _ => other += 1,
        }
    }
    let once = count.values().filter(|&&c| c == 1).count();
    let twice = count.values().filter(|&&c| c > 1).count();
    println!(
        "  bob's INBOX: {} mails; {once} of {m} bench mails exactly once, {twice} more than once, {} missing; {other} other (the warm-up)",
        got.len(),
        m - count.len()
    );
    assert_eq!(once, m, "bench mails missing or repeated");
    assert!(errors.is_empty(), "errors instead of receipts");

    alice.close().await;
    stop_ferry(ferry).await;
    prosody.stop().await;

    // Breakdown: the same submission server without ferry, one kept connection, one mail
    // after the other (as one user's session sends), written three ways.
    let sample = got
        .iter()
        .find(|raw| String::from_utf8_lossy(raw).contains("bench mail 1"))
        .cloned()
        .unwrap_or_default();
    let k = env_usize("BENCH_PROBE_MAILS", 100);
    let mut probes = Vec::new();
    for way in [Way::LettreNagle, Way::LettreNoDelay, Way::OneWrite] {
        let times = smtp_probe(mail.submission_port(), &sample, way, k).await;
        let p50 = pct_ms(&times, 50);
        let rate = k as f64 / times.iter().sum::<Duration>().as_secs_f64();
        println!(
            "  submission alone, {k} mails on one connection, {}: {rate:.0} mails/s, p50 {p50:.2} ms, p99 {:.2} ms per transaction (MAIL, RCPT, DATA, body)",
            way.label(),
            pct_ms(&times, 99)
        );
        probes.push((way, rate, p50));
    }
    wait_count(&mail, BOB, "INBOX", m + 1 + 3 * k, within).await;
    drop(mail);
    let mut summary = vec![
        (
            format!("outbound mails/s, {m} into bob's INBOX"),
            format!("{:.0}", m as f64 / inbox),
        ),
        (
            "outbound, all receipts back after".to_owned(),
            format!("{receipts:.2} s ({:.0}/s)", m as f64 / receipts),
        ),
        (
            "outbound, all in alice's Sent after".to_owned(),
            format!("{sent:.2} s"),
        ),
        (
            "outbound CPU per mail: ferry / Prosody / Dovecot / OpenSMTPD".to_owned(),
            format!("{ferry_us:.0} / {prosody_us:.0} / {dovecot_us:.0} / {smtpd_us:.0} µs"),
        ),
    ];
    for (way, rate, p50) in probes {
        summary.push((
            format!("submission alone, {}", way.label()),
            format!("{rate:.0} mails/s (p50 {p50:.2} ms)"),
        ));
    }
    summary
}

/// How a probe writes each mail to the submission server.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    /// As lettre 0.11 does: the body in one write, then `\r\n.\r\n` in another, on a
    /// socket with Nagle's algorithm on (lettre never sets `TCP_NODELAY`).
    LettreNagle,
    /// The same two writes with `TCP_NODELAY`.
    LettreNoDelay,
    /// Body and final dot in one write, Nagle on.
    OneWrite,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::LettreNagle => "body and final dot in two writes (as lettre), Nagle on",
            Way::LettreNoDelay => "two writes, TCP_NODELAY",
            Way::OneWrite => "one write, Nagle on",
        }
    }
}

type Conn = tokio::io::BufStream<tokio::net::TcpStream>;

/// Reads one (possibly multi-line) SMTP reply; its code.
async fn smtp_reply(s: &mut Conn) -> u16 {
    use tokio::io::AsyncBufReadExt;
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, s.read_line(&mut line))
            .await
            .expect("an SMTP reply in time")
            .expect("read");
        assert!(n > 0, "the submission server closed the connection");
        if line.as_bytes().get(3) != Some(&b'-') {
            return line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
        }
    }
}

async fn smtp_write(s: &mut Conn, bytes: &[u8]) {
    use tokio::io::AsyncWriteExt;
    s.write_all(bytes).await.expect("write");
    s.flush().await.expect("flush");
}

async fn smtp_command(s: &mut Conn, line: &str, want: u16) {
    smtp_write(s, format!("{line}\r\n").as_bytes()).await;
    let code = smtp_reply(s).await;
    assert_eq!(code, want, "{line}");
}

/// Sends `k` copies of `sample` from alice to bob through Dovecot's submission service
/// on one connection; the time of each transaction (MAIL FROM to the reply to the body),
/// sorted.
async fn smtp_probe(port: u16, sample: &[u8], way: Way, k: usize) -> Vec<Duration> {
    let tcp = tokio::net::TcpStream::connect((common::mail::HOST, port))
        .await
        .expect("connect to submission");
    tcp.set_nodelay(way == Way::LettreNoDelay).expect("nodelay");
    let mut s = tokio::io::BufStream::new(tcp);
    assert_eq!(smtp_reply(&mut s).await, 220);
    smtp_command(&mut s, "EHLO example.test", 250).await;
    let token = client::base64(format!("\0{ALICE}\0{ALICE_PW}").as_bytes());
    smtp_command(&mut s, &format!("AUTH PLAIN {token}"), 235).await;
    // CRLF lines, dot-stuffed, without the last line end (lettre's framing), and without
    // the fields delivery added (OpenSMTPD refuses a mail that names its recipient in
    // Delivered-To: "Loop detected").
    let mut body = Vec::with_capacity(sample.len() + 64);
    let text = String::from_utf8_lossy(sample);
    let (mut in_header, mut skipping) = (true, false);
    let mut first = true;
    for line in text.trim_end().split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if in_header {
            if line.is_empty() {
                in_header = false;
            } else if line.starts_with([' ', '\t']) {
                if skipping {
                    continue;
                }
            } else {
                let name = line.split(':').next().unwrap_or_default();
                skipping = ["return-path", "delivered-to", "received"]
                    .iter()
                    .any(|n| name.eq_ignore_ascii_case(n));
                if skipping {
                    continue;
                }
            }
        }
        if !first {
            body.extend_from_slice(b"\r\n");
        }
        first = false;
        if line.starts_with('.') {
            body.push(b'.');
        }
        body.extend_from_slice(line.as_bytes());
    }
    let mut times = Vec::with_capacity(k);
    for _ in 0..k {
        let t0 = Instant::now();
        smtp_command(&mut s, &format!("MAIL FROM:<{ALICE}>"), 250).await;
        smtp_command(&mut s, &format!("RCPT TO:<{BOB}>"), 250).await;
        smtp_command(&mut s, "DATA", 354).await;
        if way == Way::OneWrite {
            let mut all = body.clone();
            all.extend_from_slice(b"\r\n.\r\n");
            smtp_write(&mut s, &all).await;
        } else {
            smtp_write(&mut s, &body).await;
            smtp_write(&mut s, b"\r\n.\r\n").await;
        }
        assert_eq!(smtp_reply(&mut s).await, 250, "the mail was not accepted");
        times.push(t0.elapsed());
    }
    smtp_command(&mut s, "QUIT", 221).await;
    times.sort();
    times
}

fn pct_ms(sorted: &[Duration], p: usize) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    sorted[(n * p / 100).min(n - 1)].as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------
// 3. Memory per IMAP IDLE session.

/// What one ferry process looked like with its sessions in IDLE.
struct Idle {
    /// When the last session was in IDLE (or the link was up, with no users).
    ready: Mem,
    /// Every sample of the settle window, the last one last.
    settled: Vec<Mem>,
    /// From ferry's start until every session was in IDLE.
    took: Duration,
    connections: usize,
    failing: usize,
}

/// Starts ferry on a fresh store holding `users` (address, password) as registered email
/// users `u…@localhost`, waits until each has its IMAP connection in IDLE, samples its
/// memory, and stops it.
async fn ferry_with_sessions(
    prosody: &Prosody,
    mail: &MailServer,
    users: &[(String, String)],
    settle: Duration,
) -> Idle {
    let n = users.len();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("ferry.toml");
    std::fs::write(&config, config_text(prosody, mail, common::free_port())).expect("config");
    // The accounts, written with ferry's own store and key before it starts.
    let cfg = ferry::config::Config::load(&config).expect("config loads");
    let store = ferry::app::open_store(&cfg).await.expect("store");
    let settings = Settings {
        imap: ServerDefaults {
            host: Some(mail.host().into()),
            port: mail.imap_port(),
            tls: Tls::None,
        },
        smtp: ServerDefaults {
            host: Some(mail.host().into()),
            port: mail.submission_port(),
            tls: Tls::None,
        },
        mailbox: "INBOX".into(),
        max_message_bytes: 26_214_400,
        public_url: None,
        allow_private_links: false,
        timing: Timing::default(),
    };
    for (address, password) in users {
        let mut values = FormValues::new();
        values.insert("email".into(), address.clone());
        values.insert("password".into(), password.clone());
        let creds = Mailbox::from_values(&values, &settings)
            .expect("a mailbox")
            .credentials();
        let local = address.split('@').next().unwrap_or_default();
        store
            .upsert_account(BridgeKind::Email, &format!("{local}@localhost"), &creds)
            .await
            .expect("account");
    }
    store.close().await;

    let log = dir.path().join("ferry.log");
    let started = Instant::now();
    let mut ferry = spawn_ferry(&config, &log);
    let pid = ferry.id();
    wait_log(&mut ferry, &log, "component link up", 1, WAIT).await;
    wait_log(
        &mut ferry,
        &log,
        &format!("gateway started with {n} registered user(s)"),
        1,
        WAIT,
    )
    .await;
    // Every session in IDLE: Dovecot's imap processes say so, and ferry holds that many
    // connections to the IMAP port.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut last_report = Instant::now();
    loop {
        let idle = mail.imap_idle_count();
        let conns = connections_to(pid, mail.imap_port());
        if idle >= n && conns >= n {
            break;
        }
        if let Ok(Some(status)) = ferry.try_wait() {
            panic!(
                "ferry exited ({status}):
{}",
                tail(&log, 60)
            );
        }
        assert!(
            Instant::now() < deadline,
            "after 300 s: {idle} of {n} IMAP connections in IDLE, ferry holds {conns}
{}
{}",
            tail(&log, 40),
            mail.dovecot_log()
        );
        if last_report.elapsed() > Duration::from_secs(5) {
            println!("  … {idle} of {n} in IDLE, ferry holds {conns} IMAP connections");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    let ready = mem_of(pid);
    // Sampled over the settle window: what ferry keeps once the logins are over.
    let mut settled = Vec::new();
    let until = Instant::now() + settle;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        settled.push(mem_of(pid));
    }
    settled.push(mem_of(pid));
    let connections = connections_to(pid, mail.imap_port());
    let failing = log_count(&log, "mailbox failing");
    let idle_after = mail.imap_idle_count();
    assert!(
        idle_after >= n,
        "only {idle_after} of {n} sessions still in IDLE after the settle window"
    );
    stop_ferry(ferry).await;
    Idle {
        ready,
        settled,
        took,
        connections,
        failing,
    }
}

fn show(label: &str, m: &Mem) -> String {
    format!(
        "{label}: RSS {} KiB (anonymous {} KiB, private dirty {} KiB), {} threads",
        m.rss, m.anon, m.private_dirty, m.threads
    )
}

async fn memory_part(n: usize) -> Vec<(String, String)> {
    println!(
        "
3. Memory: {n} users, each with an IMAP IDLE session"
    );
    let settle = Duration::from_secs_f64(env_f64("BENCH_SETTLE_SECS", 3.0));
    let users: Vec<(String, String)> = (1..=n)
        .map(|i| {
            (
                format!("u{i:04}@{}", common::mail::DOMAIN),
                format!("pw-{i:04}"),
            )
        })
        .collect();
    let refs: Vec<(&str, &str)> = users
        .iter()
        .map(|(a, p)| (a.as_str(), p.as_str()))
        .collect();
    let mut prosody = Prosody::start_with_config(&[(GW, SECRET)], &[], PROSODY_EXTRA).await;
    let mail = MailServer::start_with(
        &refs,
        MailOptions {
            max_imap_connections: Some(n + 10),
        },
    )
    .await;
    if let Ok(a) = std::env::var("MALLOC_ARENA_MAX") {
        println!("  (ferry runs with MALLOC_ARENA_MAX={a})");
    }

    let base = ferry_with_sessions(&prosody, &mail, &[], settle).await;
    let base_last = *base.settled.last().expect("samples");
    println!("  {}", show("0 users, linked", &base.ready));
    println!("  {}", show("0 users, after the settle window", &base_last));

    let full = ferry_with_sessions(&prosody, &mail, &users, settle).await;
    let full_last = *full.settled.last().expect("samples");
    let max_rss = full.settled.iter().map(|m| m.rss).max().unwrap_or(0);
    let min_rss = full.settled.iter().map(|m| m.rss).min().unwrap_or(0);
    println!(
        "  {n} sessions in IDLE {:.2} s after ferry started; ferry holds {} IMAP connections; {} \"mailbox failing\" line(s) in its log",
        full.took.as_secs_f64(),
        full.connections,
        full.failing
    );
    println!(
        "  {}",
        show(&format!("{n} users, all in IDLE"), &full.ready)
    );
    println!(
        "  {} (RSS over the window {min_rss}–{max_rss} KiB)",
        show(
            &format!("{n} users, after {:.0} s", settle.as_secs_f64()),
            &full_last
        )
    );
    let per = |a: u64, b: u64| (a as f64 - b as f64) / n.max(1) as f64;
    let at_ready = per(full.ready.rss, base.ready.rss);
    let settled = per(full_last.rss, base_last.rss);
    let anon = per(full_last.anon, base_last.anon);
    let dirty = per(full_last.private_dirty, base_last.private_dirty);
    println!(
        "  per session: {at_ready:.1} KiB RSS when the last entered IDLE, {settled:.1} KiB after settling (anonymous {anon:.1} KiB, private dirty {dirty:.1} KiB); target < 64 KiB: {}",
        if settled < 64.0 { "met" } else { "NOT met" }
    );
    prosody.stop().await;
    drop(mail);
    vec![
        (
            format!("RSS per IDLE session ({n} users), settled"),
            format!("{settled:.1} KiB"),
        ),
        (
            "RSS per IDLE session, when the last entered IDLE".to_owned(),
            format!("{at_ready:.1} KiB"),
        ),
        (
            "ferry RSS, 0 users → N users (settled)".to_owned(),
            format!("{} → {} KiB", base_last.rss, full_last.rss),
        ),
        (
            format!("time until all {n} sessions in IDLE"),
            format!("{:.2} s", full.took.as_secs_f64()),
        ),
    ]
}
