//! Benchmark: the durable outbox's hot path on the default SQLite store, without XMPP.
//!
//! One task stores messages in batches the way the router does (`enqueue_claimed`), a
//! second settles each stored batch the way the outbox worker does once the bridge took it
//! (`complete_sent`), so the two share the SQLite lane's group commits as they do in a
//! running gateway. Prints the CPU per message of the whole process and of the SQLite
//! thread. Run with `cargo bench --bench store` (`BENCH_MESSAGES=N`, default 60,000;
//! `BENCH_BATCH=N` messages a batch, default 32; `BENCH_IDS=random` for stanza and foreign
//! ids spread like real clients' and providers' random ones instead of nearly sequential).

#[path = "support/ids.rs"]
mod ids;
#[path = "support/proc.rs"]
mod proc_stat;

use std::time::Instant;

use ferry::store::{Cipher, NewOutbox, SentRow, Store};
use ferry_bridge_api::{AccountId, BridgeKind};
use ids::{id, random_ids};
use proc_stat::{cpu_by_thread, cpu_seconds};

/// CPU seconds of this process's SQLite lane thread.
fn lane_cpu() -> f64 {
    cpu_by_thread(std::process::id())
        .get("ferry-sqlite")
        .copied()
        .unwrap_or(0.0)
}

fn message(account: AccountId, i: usize, random: bool) -> NewOutbox {
    NewOutbox {
        bridge: BridgeKind::Email,
        account,
        recipient: "bob@example.com".into(),
        payload: format!(
            "{{\"body\":\"benchmark message {i}\",\"contact\":\"bob\\\\40example.com@email.localhost\"}}"
        ),
        from_jid: "alice@localhost/bench".into(),
        stanza_id: Some(id("m", i as u64, random)),
        want_receipt: true,
    }
}

fn main() {
    let n: usize = std::env::var("BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    let batch: usize = std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32)
        .max(1);
    let random = random_ids();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
        let store = Store::open(&url, Cipher::from_key([7; 32]))
            .await
            .expect("open");
        store.migrate().await.expect("migrate");
        let account = store
            .upsert_account(BridgeKind::Email, "alice@localhost", &Default::default())
            .await
            .expect("account");
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<SentRow>>(4);
        let settler = {
            let store = store.clone();
            tokio::spawn(async move {
                let mut settled = 0usize;
                while let Some(rows) = rx.recv().await {
                    settled += rows.len();
                    store.complete_sent(rows).await.expect("settle");
                }
                settled
            })
        };
        let (cpu0, lane0, t0) = (cpu_seconds(std::process::id()), lane_cpu(), Instant::now());
        let mut i = 0;
        while i < n {
            let msgs: Vec<NewOutbox> = (i..(i + batch).min(n))
                .map(|k| message(account, k, random))
                .collect();
            i += msgs.len();
            let rows = store.enqueue_claimed(msgs, 120_000).await.expect("store");
            let sent = rows
                .into_iter()
                .map(|r| SentRow {
                    id: r.id,
                    account: r.account,
                    remote_message_id: format!("<{}@example.com>", id("r", r.id as u64, random)),
                    thread: None,
                })
                .collect();
            tx.send(sent).await.expect("settler");
        }
        drop(tx);
        let settled = settler.await.expect("settler task");
        assert_eq!(settled, n, "every stored message was settled");
        let wall = t0.elapsed().as_secs_f64();
        let cpu = cpu_seconds(std::process::id()) - cpu0;
        let lane = lane_cpu() - lane0;
        println!(
            "{n} messages stored and settled in batches of {batch}: {wall:.2}s = {:.0} messages/s",
            n as f64 / wall
        );
        println!(
            "CPU per message: {:.1} µs (SQLite thread {:.1} µs)",
            cpu / n as f64 * 1e6,
            lane / n as f64 * 1e6
        );
        store.close().await;
    });
}
