//! Integration tests of the outbox journal (`src/store/journal.rs`), which a store on a
//! SQLite file writes messages to before SQLite: a crash of the process loses none, a
//! store that starts moves what a dead one left into the database, a live one's rows are
//! left alone, ids are never reused, and a graceful close leaves no journal behind.

use std::path::Path;

use ferry::store::{Cipher, NewOutbox, OutboxState, SentRow, Store, now_ms};
use ferry_bridge_api::{AccountId, BridgeKind, Credentials};
use sqlx::AnyPool;

const KEY: [u8; 32] = [0x5a; 32];

async fn open(dir: &Path) -> Store {
    let url = format!("sqlite://{}", dir.join("ferry.db").display());
    let s = Store::open(&url, Cipher::from_key(KEY))
        .await
        .expect("open");
    s.migrate().await.expect("migrate");
    s
}

async fn raw(dir: &Path) -> AnyPool {
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}", dir.join("ferry.db").display());
    AnyPool::connect(&url).await.expect("raw pool")
}

async fn raw_count(dir: &Path, sql: &'static str) -> i64 {
    let pool = raw(dir).await;
    let n = sqlx::query_scalar(sql)
        .fetch_one(&pool)
        .await
        .expect("count");
    pool.close().await;
    n
}

/// The journal segments in `dir`.
fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".journal"))
        .count()
}

fn message(account: AccountId, n: usize, payload_len: usize) -> NewOutbox {
    NewOutbox {
        bridge: BridgeKind::Email,
        account,
        recipient: format!("bob{n}@example.net"),
        payload: format!(r#"{{"body":"{n} {}"}}"#, "x".repeat(payload_len)),
        from_jid: "alice@example.org/phone".to_owned(),
        stanza_id: Some(format!("m{n}")),
        want_receipt: true,
    }
}

async fn alice(s: &Store) -> AccountId {
    s.upsert_account(BridgeKind::Email, "alice@example.org", &Credentials::new())
        .await
        .expect("alice")
}

fn sent(id: i64, account: AccountId, remote: &str) -> SentRow {
    SentRow {
        id,
        account,
        remote_message_id: remote.to_owned(),
        thread: Some("t1".to_owned()),
    }
}

#[tokio::test]
async fn a_crash_loses_no_stored_message_and_a_live_store_s_rows_are_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path()).await;
    let a = alice(&first).await;
    let rows = first
        .enqueue_claimed((0..3).map(|n| message(a, n, 10)).collect(), 120_000)
        .await
        .expect("stored");
    first
        .complete_sent(vec![sent(rows[0].id, a, "<r0@mail>")])
        .await
        .expect("settled");
    // Nothing of it is in SQLite yet: the journal holds it.
    assert_eq!(
        raw_count(dir.path(), "SELECT COUNT(*) FROM outbox").await,
        0
    );
    assert_eq!(segments(dir.path()), 1);

    // A second store starting while the first lives leaves the first's rows alone.
    let second = open(dir.path()).await;
    assert_eq!(
        raw_count(dir.path(), "SELECT COUNT(*) FROM outbox").await,
        0
    );
    drop(second);

    // The first dies without closing anything; the next store to start finds its rows:
    // the settled one as sent, with its mapping, the others due at once.
    drop(first);
    let third = open(dir.path()).await;
    assert_eq!(segments(dir.path()), 0, "the dead store's journal is gone");
    let r0 = third
        .outbox_row(rows[0].id)
        .await
        .expect("read")
        .expect("row 0");
    assert_eq!(r0.state, OutboxState::Sent);
    assert_eq!(r0.remote_message_id.as_deref(), Some("<r0@mail>"));
    let mapped = third
        .latest_in_thread(a, "t1")
        .await
        .expect("lookup")
        .expect("the settled row is a mapping");
    assert_eq!(mapped.remote_message_id, "<r0@mail>");
    let due = third
        .claim_due(BridgeKind::Email, now_ms(), 60_000, 10)
        .await
        .expect("claim");
    let mut ids: Vec<i64> = due.iter().map(|r| r.id).collect();
    ids.sort();
    assert_eq!(ids, vec![rows[1].id, rows[2].id]);
    for r in &due {
        let before = rows.iter().find(|b| b.id == r.id).expect("a stored row");
        assert_eq!(
            (&r.payload, &r.stanza_id),
            (&before.payload, &before.stanza_id)
        );
    }
    assert!(due.iter().all(|r| r.attempts == 2), "{due:?}");
    third.close().await;
}

#[tokio::test]
async fn ids_are_never_reused_by_the_journal_or_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path()).await;
    let a = alice(&s).await;
    let plain = s.enqueue(&message(a, 0, 1)).await.expect("plain insert");
    let journal = s
        .enqueue_claimed((1..4).map(|n| message(a, n, 1)).collect(), 60_000)
        .await
        .expect("stored");
    let after = s.enqueue(&message(a, 4, 1)).await.expect("plain insert");
    assert!(journal.iter().all(|r| r.id > plain), "{plain} {journal:?}");
    assert!(journal.iter().all(|r| r.id < after), "{after} {journal:?}");
    let ids: std::collections::BTreeSet<i64> = journal.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), 3);
    s.close().await;

    // A store started later hands out ids above everything before it.
    let s = open(dir.path()).await;
    let later = s
        .enqueue_claimed(vec![message(a, 5, 1)], 60_000)
        .await
        .expect("stored");
    assert!(later[0].id > after);
    s.close().await;
}

#[tokio::test]
async fn a_row_whose_lease_ended_is_claimed_and_a_close_leaves_no_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path()).await;
    let a = alice(&s).await;
    let rows = s
        .enqueue_claimed(vec![message(a, 0, 1)], 0)
        .await
        .expect("stored");
    assert_eq!(s.outbox_depth(BridgeKind::Email).await.expect("depth"), 1);
    assert!(
        s.next_due_at(BridgeKind::Email)
            .await
            .expect("next due")
            .is_some_and(|at| at <= now_ms())
    );
    let due = s
        .claim_due(BridgeKind::Email, now_ms(), 60_000, 10)
        .await
        .expect("claim");
    assert_eq!(
        due.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![rows[0].id]
    );

    let more = s
        .enqueue_claimed(vec![message(a, 1, 1)], 60_000)
        .await
        .expect("stored");
    s.complete_sent(vec![sent(more[0].id, a, "<r1@mail>")])
        .await
        .expect("settled");
    s.close().await;
    assert_eq!(segments(dir.path()), 0);
    assert_eq!(
        raw_count(
            dir.path(),
            "SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND remote_message_id = '<r1@mail>'"
        )
        .await,
        1
    );
}

#[tokio::test]
async fn a_full_segment_is_moved_into_the_database_and_deleted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path()).await;
    let a = alice(&s).await;
    // 8 MiB fill a segment: 100 messages of 100 KiB each fill it once.
    let mut ids = Vec::new();
    for n in 0..100 {
        let rows = s
            .enqueue_claimed(vec![message(a, n, 100 * 1024)], 60_000)
            .await
            .expect("stored");
        ids.push(rows[0].id);
    }
    assert_eq!(segments(dir.path()), 1, "the full segment is deleted");
    let in_table = raw_count(dir.path(), "SELECT COUNT(*) FROM outbox").await;
    assert!(
        (80..100).contains(&in_table),
        "{in_table} rows in the table"
    );
    // The rest are in the new segment; a crash now loses none of them.
    drop(s);
    let s = open(dir.path()).await;
    assert_eq!(
        raw_count(dir.path(), "SELECT COUNT(*) FROM outbox").await,
        100
    );
    assert_eq!(segments(dir.path()), 0);
    s.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_right_after_a_flush_leaves_no_journal_and_every_row_settled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path()).await;
    let a = alice(&s).await;
    // More settled rows than one move (2,048): a move into the table starts on its own,
    // and the close comes while it is on its way. 2,100 rows also take every statement
    // size a move has (64, 8 and 1 rows).
    let rows = s
        .enqueue_claimed((0..2_100).map(|n| message(a, n, 10)).collect(), 60_000)
        .await
        .expect("stored");
    s.complete_sent(
        rows.iter()
            .map(|r| sent(r.id, a, &format!("<r{}@mail>", r.id)))
            .collect(),
    )
    .await
    .expect("settled");
    s.close().await;
    assert_eq!(segments(dir.path()), 0);
    assert_eq!(
        raw_count(
            dir.path(),
            "SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND remote_message_id IS NOT NULL"
        )
        .await,
        2_100
    );
}

#[tokio::test]
async fn rows_of_an_account_deleted_meanwhile_are_left_out_and_the_others_moved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = open(dir.path()).await;
    let a = alice(&s).await;
    let b = s
        .upsert_account(BridgeKind::Email, "bob@example.org", &Credentials::new())
        .await
        .expect("bob");
    // Interleaved, so that both accounts' rows share the statements that move them.
    let rows = s
        .enqueue_claimed(
            (0..10)
                .map(|n| message(if n % 2 == 0 { a } else { b }, n, 10))
                .collect(),
            60_000,
        )
        .await
        .expect("stored");
    // Bob's account goes behind the store's back while his rows are in the journal
    // (a removal through the store would move them into the table first).
    let pool = raw(dir.path()).await;
    sqlx::query("DELETE FROM accounts WHERE id = $1")
        .bind(b.0)
        .execute(&pool)
        .await
        .expect("delete bob");
    pool.close().await;
    s.complete_sent(
        rows.iter()
            .map(|r| sent(r.id, r.account, &format!("<r{}@mail>", r.id)))
            .collect(),
    )
    .await
    .expect("settled");
    s.sync_outbox().await.expect("moved");
    assert_eq!(
        raw_count(
            dir.path(),
            "SELECT COUNT(*) FROM outbox WHERE state = 'sent'"
        )
        .await,
        5
    );
    for r in &rows {
        let stored = s.outbox_row(r.id).await.expect("read");
        assert_eq!(
            stored.is_some(),
            r.account == a,
            "row {} of {:?}",
            r.id,
            r.account
        );
    }
    s.close().await;
    assert_eq!(segments(dir.path()), 0);
}
