//! Benchmark: the full path through a real Prosody, with ferry's and Prosody's CPU per
//! message measured in the same run.
//!
//! A client sends N chat messages (each asking for an XEP-0184 receipt) to a contact of a
//! ferry gateway; ferry runs in a child process with the fake bridge, stores each message
//! in its SQLite outbox, hands it to the bridge and sends the receipt back. The run ends when
//! every receipt has arrived. CPU is read from /proc for the ferry and Prosody processes
//! only (the client's own CPU is not counted); ferry's is taken again after it has stopped
//! (it reports it), so that the outbox journal's last rows, which it moves into SQLite at
//! shutdown, count too. Run with `cargo bench --bench e2e`;
//! `BENCH_MESSAGES` sets N; `BENCH_IDS=random` gives the messages random-looking ids, as
//! real clients do, instead of `m0`, `m1`, …; `BENCH_CHILD_WRAPPER` runs ferry under a tool
//! (`valgrind --tool=dhat`, to count allocations per message).

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/ids.rs"]
mod ids;
#[path = "support/proc.rs"]
mod proc_stat;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::prosody::Prosody;
use ferry_bridge_api::BridgeKind;
use ferry_bridge_api::fake::FakeBridge;
use proc_stat::{context_switches, cpu_by_thread, cpu_seconds, file_calls};

const GW: &str = "bench.localhost";
const SECRET: &str = "bench-secret";

/// The child: ferry with the fake bridge, attached to the given component port.
fn child(port: u16, dir: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let cfg = ferry::config::Config::from_str_at(
            &format!(
                "[xmpp]\nport = {port}\nallowed = [\"localhost\"]\n[rss]\ndomain = \"{GW}\"\nsecret = \"{SECRET}\"\n"
            ),
            std::path::Path::new(dir),
        )
        .expect("config");
        let store = ferry::app::open_store(&cfg).await.expect("store");
        let running = ferry::app::start(
            &cfg,
            store,
            vec![ferry::app::BridgeSpec {
                domain: GW.into(),
                secret: SECRET.into(),
                bridge: Arc::new(FakeBridge::sink(BridgeKind::Rss, false)),
            }],
        )
        .await
        .expect("start");
        let gw = running.gateway(BridgeKind::Rss).expect("gw").clone();
        let mut up = gw.connected.clone();
        let _ = up.wait_for(|v| *v).await;
        println!("linked");
        // Run until the parent closes our stdin.
        let _ = tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            let _ = std::io::stdin().read_line(&mut s);
        })
        .await;
        running.shutdown();
        let _ = running.wait().await;
        // The parent can no longer read a process that has exited: this process's CPU
        // through its shutdown (which moves the outbox journal's last rows into SQLite).
        println!("cpu {}", proc_stat::cpu_seconds_of("/proc/self/stat"));
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let port = args[i + 1].parse().expect("port");
        child(port, &args[i + 2]);
        return;
    }
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let prosody = Prosody::start(&[(GW, SECRET)], &[("alice", "alice")]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        // BENCH_CHILD_WRAPPER runs ferry's process under a tool (`valgrind --tool=dhat`).
        let exe = std::env::current_exe().expect("exe");
        let wrapper = std::env::var("BENCH_CHILD_WRAPPER").unwrap_or_default();
        let mut words = wrapper.split_whitespace();
        let mut ferry = match words.next() {
            Some(tool) => {
                let mut c = Command::new(tool);
                c.args(words).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let mut ferry = ferry
            .arg("--child")
            .arg(prosody.component_port.to_string())
            .arg(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ferry");
        let mut line = String::new();
        let stdout = ferry.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout);
        let _ = tokio::task::block_in_place(|| lines.read_line(&mut line));
        assert_eq!(line.trim(), "linked", "ferry did not link");
        let ferry_pid = ferry.id();
        let prosody_pid = prosody.pid().expect("prosody pid");

        let mut alice = common::client::login(prosody.c2s_port, "alice", "alice", "bench").await;
        alice.send_presence().await;
        // Warm up: one message end to end (creates the account, session and identity).
        alice.send(&format!("<message type='chat' id='w' to='bob@{GW}'><body>warm</body><request xmlns='urn:xmpp:receipts'/></message>")).await;
        alice
            .recv(Duration::from_secs(20), |e| e.child("received", "urn:xmpp:receipts").is_some())
            .await;

        let threads0 = cpu_by_thread(ferry_pid);
        let switches0 = context_switches(ferry_pid);
        let calls0 = file_calls(ferry_pid);
        let (f0, p0, t0) = (cpu_seconds(ferry_pid), cpu_seconds(prosody_pid), Instant::now());
        let mut batch = String::with_capacity(64 * 1024);
        let random = ids::random_ids();
        for i in 0..n {
            let id = ids::id("m", i as u64, random);
            batch.push_str(&format!("<message type='chat' id='{id}' to='bob@{GW}'><body>benchmark message {i}</body><request xmlns='urn:xmpp:receipts'/></message>"));
            if batch.len() > 32 * 1024 {
                alice.send(&batch).await;
                batch.clear();
            }
        }
        alice.send(&batch).await;
        for _ in 0..n {
            alice
                .recv(Duration::from_secs(60), |e| e.child("received", "urn:xmpp:receipts").is_some())
                .await;
        }
        let wall = t0.elapsed().as_secs_f64();
        let (f1, p1) = (cpu_seconds(ferry_pid), cpu_seconds(prosody_pid));
        let threads1 = cpu_by_thread(ferry_pid);
        let switches = context_switches(ferry_pid).saturating_sub(switches0);
        let calls1 = file_calls(ferry_pid);
        // Settled rows wait in the outbox journal until a move's worth has gathered: up to
        // one move's rows are still there at the last receipt, and their insert into
        // SQLite is ferry's work too. ferry stops and reports its CPU through its
        // shutdown, which moves them; the ratio is taken from that figure.
        drop(ferry.stdin.take());
        let mut f_end = None;
        loop {
            line.clear();
            match tokio::task::block_in_place(|| lines.read_line(&mut line)) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if let Some(v) = line.trim().strip_prefix("cpu ") {
                        f_end = v.parse::<f64>().ok();
                    }
                }
            }
        }
        let _ = ferry.wait();
        let ferry_at_last_us = (f1 - f0) / n as f64 * 1e6;
        let f_end = f_end.expect("ferry reports its CPU when it stops");
        let ferry_us = (f_end - f0) / n as f64 * 1e6;
        let prosody_us = (p1 - p0) / n as f64 * 1e6;
        println!("{n} messages with receipts in {wall:.2}s = {:.0} messages/s", n as f64 / wall);
        println!(
            "ferry CPU: {:.2}s = {ferry_us:.1} µs/message (through its shutdown; {ferry_at_last_us:.1} at the last receipt)",
            f_end - f0
        );
        println!("Prosody CPU: {:.2}s = {prosody_us:.1} µs/message (two stanzas routed per message: the message and its receipt)", p1 - p0);
        println!("ferry/Prosody CPU ratio: {:.3}", ferry_us / prosody_us);
        println!(
            "ferry context switches: {switches} = {:.1} per 100 messages",
            switches as f64 * 100.0 / n as f64
        );
        println!(
            "ferry file reads and writes (not sockets): {:.1} and {:.1} per 100 messages",
            calls1.0.saturating_sub(calls0.0) as f64 * 100.0 / n as f64,
            calls1.1.saturating_sub(calls0.1) as f64 * 100.0 / n as f64
        );
        println!("ferry's threads, up to the last receipt:");
        for (name, cpu) in &threads1 {
            let before = threads0.get(name).copied().unwrap_or(0.0);
            let us = (cpu - before) / n as f64 * 1e6;
            if us >= 0.05 {
                println!("  ferry thread {name}: {us:.1} µs/message");
            }
        }
    });
}
