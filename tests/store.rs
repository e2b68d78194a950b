//! Integration tests of ferry's durable store (`ferry::store`). Every scenario runs twice,
//! with the same body: against SQLite (a fresh temporary file) and against PostgreSQL (a
//! fresh `ferry_test_<hex>` database on `FERRY_TEST_PG_URL`, dropped afterwards).
//!
//! PostgreSQL being unreachable fails the PostgreSQL half, unless `FERRY_SKIP_PG=1`.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ferry::store::{
    Backend, Cipher, Direction, NewOutbox, OutboxRow, OutboxState, SentRow, Store, StoreError,
    now_ms,
};
use ferry_bridge_api::{AccountId, BridgeKind, Credentials};
use sqlx::{AnyPool, Connection};
use tokio::task::JoinSet;

const KEY: [u8; 32] = [0x5a; 32];
const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// One scratch database, and how to reach it.
struct TestDb {
    /// What every store and raw pool of this test connects to.
    url: String,
    /// Which backend `url` names, checked against what the store reports.
    backend: Backend,
    /// Keeps the SQLite file's directory alive for the test.
    _dir: Option<tempfile::TempDir>,
    /// Drops the PostgreSQL database when the test ends, even by panic.
    _pg: Option<PgDatabase>,
}

struct PgDatabase {
    /// Where the database was created from, and is dropped from.
    admin_url: String,
    /// `ferry_test_<hex>`.
    name: String,
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Best effort, on a thread of its own: we may be inside (or after) a runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url).await {
                    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await;
                    let _ = conn.close().await;
                }
            });
        })
        .join();
    }
}

/// `url` without its password, for messages.
fn redacted(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let authority_end = url[start..].find('/').map_or(url.len(), |i| start + i);
    match url[start..authority_end].rfind('@') {
        Some(at) => match url[start..start + at].find(':') {
            Some(colon) => format!("{}***{}", &url[..start + colon + 1], &url[start + at..]),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

/// `url` with its database name replaced by `db`.
fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    format!("{}/{db}{query}", &base[..path_start])
}

impl TestDb {
    fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        // The file does not exist yet: Store::open must create it.
        let url = format!("sqlite://{}", dir.path().join("ferry.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            _dir: Some(dir),
            _pg: None,
        }
    }

    /// A fresh PostgreSQL database, or `None` when PostgreSQL is down and
    /// `FERRY_SKIP_PG=1`.
    async fn postgres() -> Option<TestDb> {
        let admin_url =
            std::env::var("FERRY_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
        let connect = tokio::time::timeout(
            Duration::from_secs(10),
            sqlx::PgConnection::connect(&admin_url),
        )
        .await;
        let mut admin = match connect {
            Ok(Ok(conn)) => conn,
            failure => {
                let why = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                let admin_url = redacted(&admin_url);
                if std::env::var("FERRY_SKIP_PG").as_deref() == Ok("1") {
                    println!("skipping: postgresql unreachable at {admin_url} ({why})");
                    return None;
                }
                panic!(
                    "postgresql unreachable at {admin_url} ({why}); start it, point \
                     FERRY_TEST_PG_URL at one, or set FERRY_SKIP_PG=1"
                );
            }
        };
        let name = format!("ferry_test_{:016x}", rand::random::<u64>());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let _ = admin.close().await;
        Some(TestDb {
            url: with_database(&admin_url, &name),
            backend: Backend::Postgres,
            _dir: None,
            _pg: Some(PgDatabase { admin_url, name }),
        })
    }

    /// A new store (its own pool, like another ferry process), not migrated.
    async fn store(&self) -> Store {
        self.store_with(Cipher::from_key(KEY)).await
    }

    async fn store_with(&self, cipher: Cipher) -> Store {
        let store = Store::open(&self.url, cipher).await.expect("open store");
        assert_eq!(store.backend(), self.backend);
        store
    }

    async fn migrated(&self) -> Store {
        let store = self.store().await;
        store.migrate().await.expect("migrate");
        store
    }

    /// Plain SQL access, for inspecting and tampering behind the store's back.
    async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPool::connect(&self.url).await.expect("raw pool")
    }
}

/// Runs each named scenario once on SQLite and once on PostgreSQL.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    let db = super::TestDb::sqlite();
                    super::$name(&db).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    if let Some(db) = super::TestDb::postgres().await {
                        super::$name(&db).await;
                    }
                }
            }
        )*
    };
}

on_both_backends!(
    migrations_are_idempotent,
    concurrent_migrations_apply_once,
    upgrading_keeps_outbox_rows_ids_and_mappings,
    accounts_upsert_and_lookup,
    remove_account_cascades,
    credentials_are_bound_to_their_row,
    identities_are_unique_both_ways,
    concurrent_ensure_identity_agrees,
    contacts_round_trip,
    message_map_round_trip,
    sent_rows_are_mappings,
    large_batches_keep_every_row_apart,
    inbound_dedupe_under_concurrency,
    outbox_lifecycle,
    concurrent_claimers_never_share_a_row,
    kv_round_trip,
    feed_store_lifecycle,
    feed_settings_and_held_entries,
    concurrent_feed_claimers_never_share_a_feed,
    sms_store_lifecycle,
    email_store_lifecycle,
);

async fn email_store_lifecycle(db: &TestDb) {
    use ferry::store::Direction;
    use ferry_bridge_api::Checkpoint;
    use ferry_email::store::{Cursor, EmailStore};
    let s = db.migrated().await;
    let alice = s
        .upsert_account(
            BridgeKind::Email,
            "alice@example.org",
            &creds(&[("email", "a@x.org")]),
        )
        .await
        .expect("alice");
    let key = Cursor::key(alice, "INBOX");
    assert_eq!(s.checkpoint("email", &key).await.expect("read"), None);
    let c1 = Cursor {
        validity: 7,
        uid: 41,
    };
    s.set_checkpoint("email", &key, &c1.encode())
        .await
        .expect("set");
    assert_eq!(
        s.checkpoint("email", &key)
            .await
            .expect("read")
            .as_deref()
            .and_then(Cursor::decode),
        Some(c1)
    );

    // A delivered mail and its read position are one write: the mark and the position
    // move together, and a repeat still moves the position.
    let cp = |uid| Cursor { validity: 7, uid }.checkpoint(alice, "INBOX");
    assert!(
        s.mark_inbound_with(alice, "m1@x", Some(&cp(42)))
            .await
            .expect("mark")
    );
    assert_eq!(
        s.checkpoint("email", &key).await.expect("read").as_deref(),
        Some("7:42")
    );
    assert!(
        !s.mark_inbound_with(alice, "m1@x", Some(&cp(43)))
            .await
            .expect("repeat")
    );
    assert_eq!(
        s.checkpoint("email", &key).await.expect("read").as_deref(),
        Some("7:43")
    );
    // Without a checkpoint it is the plain mark.
    assert!(
        s.mark_inbound_with(alice, "m2@x", None)
            .await
            .expect("mark")
    );
    assert!(!s.mark_inbound(alice, "m2@x").await.expect("repeat"));
    // Concurrent deliveries of one mail: one wins, the position is one of theirs.
    let mut tasks = Vec::new();
    for uid in 100..116u32 {
        let s = s.clone();
        let cp = Checkpoint {
            scope: "email".into(),
            key: key.clone(),
            value: format!("7:{uid}"),
        };
        tasks.push(tokio::spawn(async move {
            s.mark_inbound_with(alice, "m3@x", Some(&cp)).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.expect("task").expect("mark"));
    }
    assert_eq!(wins, 1);
    let last = s
        .checkpoint("email", &key)
        .await
        .expect("read")
        .and_then(|v| Cursor::decode(&v));
    assert!(
        last.is_some_and(|c| (100..116).contains(&c.uid)),
        "{last:?}"
    );

    // Threads: the latest message of a thread, either way.
    s.map_message(alice, Direction::In, "in-1", "root@x", Some("root@x"))
        .await
        .expect("map");
    s.map_message(alice, Direction::Out, "out-1", "r1@x", Some("root@x"))
        .await
        .expect("map");
    s.map_message(alice, Direction::In, "in-9", "other@x", Some("other@x"))
        .await
        .expect("map");
    let latest = s
        .latest_in_thread(alice, "root@x")
        .await
        .expect("latest")
        .expect("one");
    assert_eq!(latest.remote_message_id, "r1@x");
    assert_eq!(
        s.latest_in_thread(alice, "none").await.expect("latest"),
        None
    );

    // Attachments for /media/, through the bridge's trait.
    let token = EmailStore::put_media(&s, "a.pdf", "application/pdf", b"%PDF-1".to_vec())
        .await
        .expect("media");
    let item = s.media(&token).await.expect("read").expect("kept");
    assert_eq!(
        (item.name.as_str(), item.data.as_slice()),
        ("a.pdf", &b"%PDF-1"[..])
    );
    assert_eq!(
        EmailStore::prune_media(&s, i64::MAX).await.expect("prune"),
        1
    );
    assert_eq!(s.media(&token).await.expect("read"), None);

    // Leases a dead process left are released at start (SQLite).
    let row = s
        .enqueue(&message(alice, "b@x.org", "hi"))
        .await
        .expect("enqueue");
    let claimed = s
        .claim_due(BridgeKind::Sms, i64::MAX / 4, 120_000, 10)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(
        s.claim_due(BridgeKind::Sms, i64::MAX / 4, 120_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(s.release_leases().await.expect("release"), 1);
    let again = s
        .claim_due(BridgeKind::Sms, i64::MAX / 4, 120_000, 10)
        .await
        .expect("claim");
    assert_eq!(again.iter().map(|r| r.id).collect::<Vec<_>>(), vec![row]);
}

async fn sms_store_lifecycle(db: &TestDb) {
    use ferry_sms::store::{ClaimOutcome, NewInbound, NewPart, SmsStore, TextCounts};
    let s = db.migrated().await;
    let creds = Credentials::from([("number".to_owned(), "+12015550100".to_owned())]);
    let alice = s
        .upsert_account(BridgeKind::Sms, "alice@example.org", &creds)
        .await
        .expect("alice");

    // Claims: one holder per number, one number per user; an admin may reassign.
    assert_eq!(
        s.claim_number("+12015550100", "alice@example.org")
            .await
            .expect("claim"),
        ClaimOutcome::Claimed
    );
    assert_eq!(
        s.claim_number("+12015550100", "bob@example.org")
            .await
            .expect("claim"),
        ClaimOutcome::TakenBy("alice@example.org".into())
    );
    assert_eq!(
        s.owner_account("+12015550100").await.expect("owner"),
        Some(alice)
    );
    assert_eq!(s.owner_account("+12015550101").await.expect("owner"), None);
    s.claim_number("+12015550101", "alice@example.org")
        .await
        .expect("move");
    let claims = s.claims().await.expect("claims");
    assert_eq!(claims.len(), 1, "{claims:?}");
    assert_eq!(claims[0].number, "+12015550101");
    s.assign_number("+12015550100", "alice@example.org")
        .await
        .expect("assign");
    assert_eq!(
        s.owner_account("+12015550100").await.expect("owner"),
        Some(alice)
    );
    assert!(s.release_number("+12015550100").await.expect("free"));
    assert!(!s.release_number("+12015550100").await.expect("free again"));
    s.claim_number("+12015550100", "alice@example.org")
        .await
        .expect("claim back");

    // Opt-outs.
    assert!(
        !s.opted_out("+12015550100", "+12015550123")
            .await
            .expect("q")
    );
    s.set_opt_out("+12015550100", "+12015550123", true)
        .await
        .expect("stop");
    s.set_opt_out("+12015550100", "+12015550123", true)
        .await
        .expect("stop twice");
    assert!(
        s.opted_out("+12015550100", "+12015550123")
            .await
            .expect("q")
    );
    s.set_opt_out("+12015550100", "+12015550123", false)
        .await
        .expect("start");
    assert!(
        !s.opted_out("+12015550100", "+12015550123")
            .await
            .expect("q")
    );

    // Inbound texts: of 40 concurrent copies, one is kept; it is pending until delivered.
    let text = NewInbound {
        provider: "tw".into(),
        message_id: "SM1".into(),
        account: alice,
        sender: "+12015550123".into(),
        recipient: "+12015550100".into(),
        body: "hello".into(),
        media: "[]".into(),
    };
    let mut tasks = JoinSet::new();
    for _ in 0..40 {
        let (s, t) = (s.clone(), text.clone());
        tasks.spawn(async move { s.accept_inbound(&t).await });
    }
    let mut kept = 0;
    while let Some(r) = tasks.join_next().await {
        if r.expect("task").expect("accept") {
            kept += 1;
        }
    }
    assert_eq!(kept, 1);
    let pending = s.pending_inbound(10).await.expect("pending");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].text, text);
    s.inbound_delivered(pending[0].id).await.expect("delivered");
    assert!(s.pending_inbound(10).await.expect("pending").is_empty());
    assert!(!s.accept_inbound(&text).await.expect("still a repeat"));

    // Parts of a long text, out of order and repeated, join once complete.
    let part = |i: u32, body: &str| NewPart {
        provider: "vonage".into(),
        sender: "+447700900001".into(),
        reference: "ref-9".into(),
        index: i,
        total: 3,
        body: body.into(),
    };
    assert_eq!(s.put_part(&part(2, "b")).await.expect("p2"), None);
    assert_eq!(s.put_part(&part(2, "b")).await.expect("p2 again"), None);
    assert_eq!(s.put_part(&part(1, "a")).await.expect("p1"), None);
    assert_eq!(
        s.put_part(&part(3, "c")).await.expect("p3").as_deref(),
        Some("abc")
    );

    // The quota counts the account's recent outbox rows, and those since a mark.
    let counts = |since: i64, since_mark: i64| TextCounts { since, since_mark };
    assert_eq!(
        s.texts_since(alice, 0, i64::MAX).await.expect("count"),
        counts(0, 0)
    );
    let before = now_ms();
    let row = NewOutbox {
        bridge: BridgeKind::Sms,
        account: alice,
        recipient: "+12015550123".into(),
        payload: "{}".into(),
        from_jid: "alice@example.org/phone".into(),
        stanza_id: Some("m1".into()),
        want_receipt: true,
    };
    let id = s.enqueue(&row).await.expect("enqueue");
    assert_eq!(
        s.texts_since(alice, 0, i64::MAX).await.expect("count"),
        counts(1, 0)
    );
    assert_eq!(
        s.texts_since(alice, 0, before).await.expect("count"),
        counts(1, 1)
    );
    assert_eq!(
        s.texts_since(alice, now_ms() + 60_000, 0)
            .await
            .expect("count"),
        counts(0, 0)
    );
    assert_eq!(
        s.texts_since(AccountId(alice.0 + 1_000), 0, 0)
            .await
            .expect("count"),
        counts(0, 0)
    );
    // A report can name ferry's own reference before the provider's id is settled.
    assert_eq!(
        s.account_for_sent(&format!("sms-{id}"))
            .await
            .expect("by ref"),
        Some(alice)
    );
    assert!(s.mark_sent(id, "SMabc").await.expect("sent"));
    assert_eq!(
        s.account_for_sent("SMabc").await.expect("by sid"),
        Some(alice)
    );
    assert_eq!(s.account_for_sent("SMnope").await.expect("unknown"), None);

    // Media round trip.
    let bytes = vec![0u8, 1, 2, 255, 254];
    let token = s
        .put_media("mms-1.png", "image/png", &bytes)
        .await
        .expect("put");
    assert_eq!(token.len(), 48);
    let m = s.media(&token).await.expect("get").expect("kept");
    assert_eq!(
        (m.name.as_str(), m.content_type.as_str()),
        ("mms-1.png", "image/png")
    );
    assert_eq!(m.data, bytes);
    assert_eq!(s.media("0".repeat(48).as_str()).await.expect("get"), None);
    s.prune(now_ms() + 1_000).await.expect("prune");
    assert!(
        s.media(&token).await.expect("get").is_some(),
        "media outlives texts"
    );

    // Unregistering releases the claim.
    s.release_numbers_of("alice@example.org")
        .await
        .expect("release");
    assert_eq!(s.owner_account("+12015550100").await.expect("owner"), None);
}

async fn feed_store_lifecycle(db: &TestDb) {
    use ferry_rss::engine::FeedStore;
    let s = db.migrated().await;
    let alice = s
        .upsert_account(BridgeKind::Rss, "alice@example.org", &Credentials::new())
        .await
        .expect("alice");
    let bob = s
        .upsert_account(BridgeKind::Rss, "bob@example.org", &Credentials::new())
        .await
        .expect("bob");
    let feed = "https://example.org/feed.xml";
    assert!(s.feed(feed).await.expect("feed").is_none());
    s.subscribe(alice, feed, false, 1_000)
        .await
        .expect("subscribe");
    s.subscribe(bob, feed, true, 1_000)
        .await
        .expect("subscribe");
    let rec = s.feed(feed).await.expect("feed").expect("row created");
    assert_eq!(rec.next_fetch_ms, 1_000, "a new feed is due at once");
    assert_eq!(
        s.pending_feeds(10).await.expect("pending"),
        vec![feed.to_owned()]
    );
    let subs = s.subscribers(feed).await.expect("subscribers");
    assert_eq!(subs.len(), 2);
    assert!(subs.iter().all(|x| x.pending));
    assert_eq!(subs.iter().filter(|x| x.headline).count(), 1);

    // Not due yet; then due and claimed once.
    assert!(
        s.claim_due_feeds(999, 5_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let claimed = s.claim_due_feeds(1_000, 5_000, 10).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    assert!(
        s.claim_due_feeds(2_000, 6_000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "leased"
    );
    assert!(
        s.claim(feed, 2_000, 6_000)
            .await
            .expect("claim one")
            .is_none(),
        "leased"
    );
    assert_eq!(s.next_due_ms().await.expect("next"), Some(5_000));

    // Saving records keys and releases the lease; only unseen keys come back as fresh.
    let mut rec = claimed[0].clone();
    rec.title = Some("Example".into());
    rec.etag = Some("\"abc\"".into());
    rec.next_fetch_ms = 60_000;
    rec.last_ok_ms = Some(2_000);
    let keys: Vec<String> = (0..450).map(|i| format!("id:{i}")).collect();
    let fresh = s.save(&rec, &keys, 2_000).await.expect("save");
    assert_eq!(fresh.len(), 450);
    let mut more = keys[400..].to_vec();
    more.push("id:new".into());
    let fresh = s.save(&rec, &more, 3_000).await.expect("save again");
    assert_eq!(
        fresh.into_iter().collect::<Vec<_>>(),
        vec!["id:new".to_owned()]
    );
    let back = s.feed(feed).await.expect("feed").expect("row");
    assert_eq!(back.title.as_deref(), Some("Example"));
    assert_eq!(back.etag.as_deref(), Some("\"abc\""));
    assert_eq!(s.next_due_ms().await.expect("next"), Some(60_000));
    assert!(
        s.claim(feed, 3_000, 9_000)
            .await
            .expect("claim one")
            .is_some(),
        "lease released"
    );

    // Confirming, delivery settings, listing and unsubscribing.
    s.confirm(alice, feed).await.expect("confirm");
    let subs = s.subscribers(feed).await.expect("subscribers");
    assert!(
        !subs
            .iter()
            .find(|x| x.account == alice)
            .expect("alice")
            .pending
    );
    assert_eq!(s.delivery(alice).await.expect("delivery"), None);
    s.set_delivery(alice, true).await.expect("set delivery");
    assert_eq!(s.delivery(alice).await.expect("delivery"), Some(true));
    assert!(
        s.subscribers(feed)
            .await
            .expect("subs")
            .iter()
            .all(|x| x.headline)
    );
    assert_eq!(s.subscriptions(alice).await.expect("list").len(), 1);
    assert!(s.unsubscribe(alice, feed).await.expect("unsubscribe"));
    assert!(!s.unsubscribe(alice, feed).await.expect("again"));
    assert!(s.subscriptions(alice).await.expect("list").is_empty());

    // Unregistering removes the subscription; a feed nobody follows is never due.
    assert!(
        s.remove_account(BridgeKind::Rss, "bob@example.org")
            .await
            .expect("remove")
    );
    assert!(s.subscribers(feed).await.expect("subs").is_empty());
    assert!(
        s.claim_due_feeds(i64::MAX / 2, i64::MAX / 2, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(s.next_due_ms().await.expect("next"), None);
    assert_eq!(s.prune().await.expect("prune"), 1);
    assert!(s.feed(feed).await.expect("feed").is_none());
}

/// A subscription's own delivery beats the user's default (also when they subscribe
/// again), quiet hours reach the subscribers, and entries held for a subscription come
/// back in order, are forgotten once released, and go with the subscription.
async fn feed_settings_and_held_entries(db: &TestDb) {
    use ferry_rss::engine::{FeedStore, QuietHours, StoredEntry};
    let s = db.migrated().await;
    let alice = s
        .upsert_account(BridgeKind::Rss, "alice@example.org", &Credentials::new())
        .await
        .expect("alice");
    let bob = s
        .upsert_account(BridgeKind::Rss, "bob@example.org", &Credentials::new())
        .await
        .expect("bob");
    let (a, b) = ("https://a.example/feed", "https://b.example/feed");
    for feed in [a, b] {
        s.subscribe(alice, feed, false, 1_000)
            .await
            .expect("subscribe");
    }
    s.subscribe(bob, a, false, 1_000).await.expect("subscribe");
    let headline_of = async |account: AccountId, feed: &str| {
        s.subscribers(feed)
            .await
            .expect("subscribers")
            .into_iter()
            .find(|x| x.account == account)
            .expect("subscribed")
            .headline
    };

    // A's own delivery: headline, whatever the user's default says.
    assert!(
        s.set_feed_delivery(alice, a, Some(true), true)
            .await
            .expect("own")
    );
    assert!(
        !s.set_feed_delivery(alice, "https://c.example/feed", Some(true), true)
            .await
            .expect("not followed"),
        "no subscription, nothing set"
    );
    assert_eq!(
        s.feed_deliveries(alice).await.expect("list"),
        vec![(a.to_owned(), true)]
    );
    assert!(s.feed_deliveries(bob).await.expect("list").is_empty());
    assert!(headline_of(alice, a).await);
    assert!(!headline_of(bob, a).await, "bob's subscription is his own");
    s.set_delivery(alice, false).await.expect("default chat");
    assert!(headline_of(alice, a).await, "the feed's own delivery stays");
    assert!(!headline_of(alice, b).await);
    s.set_delivery(alice, true).await.expect("default headline");
    assert!(headline_of(alice, b).await, "the default moves the others");
    s.set_feed_delivery(alice, a, Some(false), false)
        .await
        .expect("own chat");
    assert!(!headline_of(alice, a).await);
    // Subscribing again (pending again) keeps the feed's own delivery.
    s.subscribe(alice, a, true, 2_000).await.expect("again");
    assert!(!headline_of(alice, a).await, "still its own chat");
    assert_eq!(
        s.feed_deliveries(alice).await.expect("list"),
        vec![(a.to_owned(), false)]
    );
    // Back to the default.
    s.set_feed_delivery(alice, a, None, true)
        .await
        .expect("default");
    assert!(headline_of(alice, a).await);
    assert!(s.feed_deliveries(alice).await.expect("list").is_empty());
    s.subscribe(alice, a, false, 3_000).await.expect("again");
    assert!(!headline_of(alice, a).await, "the default decides again");

    // Quiet hours: per user, seen by every subscription of theirs.
    assert_eq!(s.quiet(alice).await.expect("quiet"), None);
    let night = QuietHours::parse("22:00-07:00").expect("parse");
    s.set_quiet(alice, Some(night)).await.expect("set quiet");
    assert_eq!(s.quiet(alice).await.expect("quiet"), Some(night));
    let quiet_of = |subs: Vec<ferry_rss::engine::Subscriber>, who: AccountId| {
        subs.into_iter()
            .find(|x| x.account == who)
            .expect("subscribed")
            .quiet
    };
    assert_eq!(
        quiet_of(s.subscribers(a).await.expect("subs"), alice),
        Some(night)
    );
    assert_eq!(quiet_of(s.subscribers(a).await.expect("subs"), bob), None);

    // Held entries: in order, per subscription, forgotten once released.
    let entry = |key: &str| StoredEntry {
        key: key.to_owned(),
        title: Some(format!("Title {key}")),
        link: Some(format!("https://a.example/{key}")),
        body: format!("Body {key}"),
    };
    assert!(s.held_subscriptions().await.expect("none").is_empty());
    s.hold(alice, a, &[entry("1"), entry("2")], 5_000)
        .await
        .expect("hold");
    s.hold(alice, a, &[entry("3")], 6_000).await.expect("hold");
    s.hold(bob, a, &[entry("1")], 5_000).await.expect("hold");
    s.hold(alice, "https://c.example/feed", &[entry("x")], 5_000)
        .await
        .expect("nothing held for a feed not followed");
    let held = s.held_subscriptions().await.expect("held subs");
    assert_eq!(held.len(), 2, "{held:?}");
    let (feed, sub) = &held[0];
    assert_eq!((feed.as_str(), sub.account), (a, alice.min(bob)));
    let alices = held
        .iter()
        .find(|(_, x)| x.account == alice)
        .expect("alice's");
    assert_eq!(alices.1.quiet, Some(night));
    let got = s.held(alice, a, 10).await.expect("held");
    assert_eq!(
        got.iter().map(|(_, e)| e.clone()).collect::<Vec<_>>(),
        vec![entry("1"), entry("2"), entry("3")]
    );
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "ids keep the order"
    );
    assert_eq!(s.held(alice, a, 2).await.expect("held").len(), 2);
    // Released up to the second: the third stays.
    s.release(alice, a, got[1].0).await.expect("release");
    assert_eq!(
        s.held(alice, a, 10).await.expect("held"),
        vec![got[2].clone()]
    );
    assert_eq!(s.held(bob, a, 10).await.expect("bob's").len(), 1);
    // They go with the subscription (and the account).
    assert!(s.unsubscribe(alice, a).await.expect("unsubscribe"));
    assert!(s.held(alice, a, 10).await.expect("held").is_empty());
    assert!(
        s.remove_account(BridgeKind::Rss, "bob@example.org")
            .await
            .expect("remove")
    );
    assert!(s.held_subscriptions().await.expect("held").is_empty());

    s.set_quiet(alice, None).await.expect("off");
    assert_eq!(s.quiet(alice).await.expect("quiet"), None);
    assert_eq!(quiet_of(s.subscribers(b).await.expect("subs"), alice), None);
}

async fn concurrent_feed_claimers_never_share_a_feed(db: &TestDb) {
    use ferry_rss::engine::FeedStore;
    let s = db.migrated().await;
    let a = s
        .upsert_account(BridgeKind::Rss, "a@example.org", &Credentials::new())
        .await
        .expect("account");
    for i in 0..200 {
        s.subscribe(a, &format!("https://f{i}.example/"), false, 0)
            .await
            .expect("subscribe");
    }
    let mut tasks = JoinSet::new();
    for _ in 0..4 {
        let s = db.migrated().await;
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = s.claim_due_feeds(10, 100_000, 7).await.expect("claim");
                if got.is_empty() {
                    return mine;
                }
                mine.extend(got.into_iter().map(|r| r.feed));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("task"));
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(n, 200, "every feed claimed");
    assert_eq!(all.len(), 200, "no feed claimed twice");
}

fn creds(pairs: &[(&str, &str)]) -> Credentials {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn message(account: AccountId, recipient: &str, body: &str) -> NewOutbox {
    NewOutbox {
        bridge: BridgeKind::Sms,
        account,
        recipient: recipient.to_owned(),
        payload: format!(r#"{{"body":"{body}"}}"#),
        from_jid: "alice@example.org/phone".to_owned(),
        stanza_id: Some(format!("stanza-{body}")),
        want_receipt: true,
    }
}

/// The outbox row `id`, which must exist.
async fn stored(s: &Store, id: i64) -> OutboxRow {
    s.outbox_row(id)
        .await
        .expect("read the row")
        .unwrap_or_else(|| panic!("outbox row {id} is missing"))
}

async fn count(raw: &AnyPool, sql: &'static str, id: i64) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(raw)
        .await
        .expect("count")
}

// ---- scenarios -------------------------------------------------------------------------

async fn migrations_are_idempotent(db: &TestDb) {
    let store = db.store().await;
    assert_eq!(
        store.migrate().await.expect("first migrate"),
        vec![
            "0001_init".to_owned(),
            "0002_feeds".to_owned(),
            "0003_sms".to_owned(),
            "0004_email".to_owned(),
            "0005_lean_indexes".to_owned(),
            "0006_feed_settings".to_owned()
        ]
    );
    assert!(store.migrate().await.expect("second migrate").is_empty());
    // Another process finds the schema current as well.
    let other = db.store().await;
    assert!(other.migrate().await.expect("other migrate").is_empty());
    let raw = db.raw().await;
    let recorded: Vec<(i64, String)> =
        sqlx::query_as("SELECT version, name FROM ferry_migrations ORDER BY version")
            .fetch_all(&raw)
            .await
            .expect("read ferry_migrations");
    assert_eq!(
        recorded,
        vec![
            (1, "0001_init".to_owned()),
            (2, "0002_feeds".to_owned()),
            (3, "0003_sms".to_owned()),
            (4, "0004_email".to_owned()),
            (5, "0005_lean_indexes".to_owned()),
            (6, "0006_feed_settings".to_owned())
        ]
    );
}

/// The schema as ferry left it before migration 0005 (which rebuilds the SQLite outbox).
const BEFORE_0005: [(&str, &str, &str); 4] = [
    (
        "0001_init",
        include_str!("../migrations/sqlite/0001_init.sql"),
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        "0002_feeds",
        include_str!("../migrations/sqlite/0002_feeds.sql"),
        include_str!("../migrations/postgres/0002_feeds.sql"),
    ),
    (
        "0003_sms",
        include_str!("../migrations/sqlite/0003_sms.sql"),
        include_str!("../migrations/postgres/0003_sms.sql"),
    ),
    (
        "0004_email",
        include_str!("../migrations/sqlite/0004_email.sql"),
        include_str!("../migrations/postgres/0004_email.sql"),
    ),
];

/// A database migrated by an older ferry keeps its outbox through the upgrade: rows, their
/// states, the id counter (an id is never handed out twice, even after the newest row was
/// deleted) and the mappings the older ferry kept in message_map.
async fn upgrading_keeps_outbox_rows_ids_and_mappings(db: &TestDb) {
    // Opening creates the database (it migrates nothing yet).
    let s = db.store().await;
    let raw = db.raw().await;
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS ferry_migrations (
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)",
    )
    .execute(&raw)
    .await
    .expect("ferry_migrations");
    for (version, (name, sqlite, postgres)) in (1i64..).zip(BEFORE_0005) {
        let sql = match db.backend {
            Backend::Sqlite => sqlite,
            Backend::Postgres => postgres,
        };
        sqlx::raw_sql(sql).execute(&raw).await.expect(name);
        sqlx::query(
            "INSERT INTO ferry_migrations (version, name, applied_at_ms) VALUES ($1, $2, 0)",
        )
        .bind(version)
        .bind(name)
        .execute(&raw)
        .await
        .expect("record");
    }
    let account: i64 = sqlx::query_scalar(
        "INSERT INTO accounts (bridge, jid, created_at_ms, updated_at_ms)
         VALUES ('email', 'alice@example.org', 0, 0) RETURNING id",
    )
    .fetch_one(&raw)
    .await
    .expect("account");
    let mut ids = Vec::new();
    for (n, state) in ["pending", "sent", "failed"].into_iter().enumerate() {
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO outbox (bridge, account_id, recipient, payload, from_jid, stanza_id,
                 state, next_attempt_at_ms, created_at_ms, updated_at_ms)
             VALUES ('email', $1, 'carol@example.net', $2, 'alice@example.org/pc', $3, $4,
                 0, 0, 0)
             RETURNING id",
        )
        .bind(account)
        .bind(format!(r#"{{"body":"old {n}"}}"#))
        .bind(format!("old-{n}"))
        .bind(state)
        .fetch_one(&raw)
        .await
        .expect("old row");
        ids.push(id);
    }
    sqlx::query(
        "INSERT INTO message_map (account_id, direction, xmpp_id, remote_message_id, thread,
             created_at_ms)
         VALUES ($1, 'out', 'old-1', '<old-1@mail>', 'old-thread', 0)",
    )
    .bind(account)
    .execute(&raw)
    .await
    .expect("old mapping");
    // The newest row goes away before the upgrade: its id must still not come back.
    let newest = ids[2];
    sqlx::query("DELETE FROM outbox WHERE id = $1")
        .bind(newest)
        .execute(&raw)
        .await
        .expect("delete");

    assert_eq!(
        s.migrate().await.expect("upgrade"),
        vec![
            "0005_lean_indexes".to_owned(),
            "0006_feed_settings".to_owned()
        ]
    );
    let pending = stored(&s, ids[0]).await;
    assert_eq!(pending.state, OutboxState::Pending);
    assert_eq!(pending.payload, r#"{"body":"old 0"}"#);
    assert_eq!(pending.stanza_id.as_deref(), Some("old-0"));
    let sent = stored(&s, ids[1]).await;
    assert_eq!(sent.state, OutboxState::Sent);
    let fresh = s
        .enqueue(&message(AccountId(account), "carol@example.net", "new"))
        .await
        .expect("enqueue after the upgrade");
    assert!(
        fresh > newest,
        "id {fresh} handed out again (newest was {newest})"
    );
    let mapped = s
        .remote_for_xmpp(AccountId(account), "old-1")
        .await
        .expect("lookup")
        .expect("the old mapping is still found");
    assert_eq!(mapped.remote_message_id, "<old-1@mail>");
    assert_eq!(mapped.thread.as_deref(), Some("old-thread"));
}

async fn concurrent_migrations_apply_once(db: &TestDb) {
    let mut stores = Vec::new();
    for _ in 0..4 {
        stores.push(db.store().await);
    }
    let mut tasks = JoinSet::new();
    for store in stores {
        tasks.spawn(async move { store.migrate().await });
    }
    let mut applied = Vec::new();
    while let Some(result) = tasks.join_next().await {
        applied.extend(result.expect("task").expect("concurrent migrate"));
    }
    applied.sort();
    assert_eq!(
        applied,
        vec![
            "0001_init".to_owned(),
            "0002_feeds".to_owned(),
            "0003_sms".to_owned(),
            "0004_email".to_owned(),
            "0005_lean_indexes".to_owned(),
            "0006_feed_settings".to_owned()
        ]
    );
    let store = db.store().await;
    assert!(store.migrate().await.expect("migrate after").is_empty());
    store
        .upsert_account(BridgeKind::Email, "a@example.org", &Credentials::new())
        .await
        .expect("schema usable");
}

async fn accounts_upsert_and_lookup(db: &TestDb) {
    let s = db.migrated().await;
    let first = creds(&[("imap_host", "mail.example.org"), ("password", "hunter2")]);
    let id = s
        .upsert_account(BridgeKind::Email, "Alice@Example.ORG", &first)
        .await
        .expect("upsert");
    let alice = s
        .account(BridgeKind::Email, "alice@example.org")
        .await
        .expect("lookup")
        .expect("present");
    assert_eq!(alice.id, id);
    assert_eq!(alice.bridge, BridgeKind::Email);
    assert_eq!(alice.jid, "alice@example.org");
    assert_eq!(alice.credentials, first);
    assert!(alice.created_at_ms > 0);
    assert!(
        !format!("{alice:?}").contains("hunter2"),
        "debug leaks secret"
    );

    // Replacing credentials keeps the id.
    let second = creds(&[("password", "correct horse")]);
    let again = s
        .upsert_account(BridgeKind::Email, "alice@example.org", &second)
        .await
        .expect("re-upsert");
    assert_eq!(again, id);
    let by_id = s.account_by_id(id).await.expect("by id").expect("present");
    assert_eq!(by_id.credentials, second);
    assert_eq!(by_id.created_at_ms, alice.created_at_ms);

    // The same user on another bridge is another account; no credentials round-trip too.
    let rss = s
        .upsert_account(BridgeKind::Rss, "alice@example.org", &Credentials::new())
        .await
        .expect("rss upsert");
    assert_ne!(rss, id);
    let bob = s
        .upsert_account(BridgeKind::Email, "bob@example.org", &creds(&[("p", "b")]))
        .await
        .expect("bob");

    assert_eq!(s.count_accounts(BridgeKind::Email).await.expect("count"), 2);
    assert_eq!(s.count_accounts(BridgeKind::Rss).await.expect("count"), 1);
    assert_eq!(s.count_accounts(BridgeKind::Sms).await.expect("count"), 0);
    let emails = s.accounts(BridgeKind::Email).await.expect("list");
    assert_eq!(
        emails.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![id, bob]
    );
    let feeds = s.accounts(BridgeKind::Rss).await.expect("list");
    assert_eq!(feeds.len(), 1);
    assert!(feeds[0].credentials.is_empty());

    assert!(
        s.account(BridgeKind::Email, "nobody@example.org")
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(
        s.account_by_id(AccountId(i64::MAX))
            .await
            .expect("lookup")
            .is_none()
    );
}

async fn remove_account_cascades(db: &TestDb) {
    let s = db.migrated().await;
    let raw = db.raw().await;
    let alice = s
        .upsert_account(BridgeKind::Sms, "alice@example.org", &creds(&[("n", "1")]))
        .await
        .expect("alice");
    let bob = s
        .upsert_account(BridgeKind::Sms, "bob@example.org", &creds(&[("n", "2")]))
        .await
        .expect("bob");
    let carol = s
        .ensure_identity(BridgeKind::Sms, "+12015550123", "+12015550123", None, true)
        .await
        .expect("identity");
    for account in [alice, bob] {
        assert!(
            s.introduce_contact(account, carol.id)
                .await
                .expect("introduce")
        );
        s.map_message(account, Direction::Out, "x1", "SM1", Some("t1"))
            .await
            .expect("map");
        assert!(s.mark_inbound(account, "SM2").await.expect("mark"));
        s.enqueue(&message(account, "+12015550123", "hi"))
            .await
            .expect("enqueue");
    }
    let alice_row = s
        .enqueue(&message(alice, "+12015550123", "again"))
        .await
        .expect("enqueue");
    s.retry_later(alice_row, now_ms() + 60_000, "later")
        .await
        .expect("retry");

    assert!(
        s.remove_account(BridgeKind::Sms, "ALICE@example.org")
            .await
            .expect("remove")
    );
    assert!(
        s.account(BridgeKind::Sms, "alice@example.org")
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(s.account_by_id(alice).await.expect("by id").is_none());
    assert!(s.contacts(alice).await.expect("contacts").is_empty());
    assert!(
        s.xmpp_for_remote(alice, "SM1")
            .await
            .expect("map")
            .is_none()
    );
    assert!(s.outbox_row(alice_row).await.expect("row").is_none());
    for sql in [
        "SELECT COUNT(*) FROM accounts WHERE id = $1",
        "SELECT COUNT(*) FROM contacts WHERE account_id = $1",
        "SELECT COUNT(*) FROM message_map WHERE account_id = $1",
        "SELECT COUNT(*) FROM inbound_seen WHERE account_id = $1",
        "SELECT COUNT(*) FROM outbox WHERE account_id = $1",
    ] {
        assert_eq!(count(&raw, sql, alice.0).await, 0, "{sql}");
    }

    // Bob and the shared identity are untouched.
    assert_eq!(
        s.contacts(bob).await.expect("contacts"),
        vec![carol.clone()]
    );
    assert!(s.xmpp_for_remote(bob, "SM1").await.expect("map").is_some());
    assert!(!s.mark_inbound(bob, "SM2").await.expect("mark"));
    assert_eq!(s.outbox_depth(BridgeKind::Sms).await.expect("depth"), 1);
    assert_eq!(
        s.identity_by_remote(BridgeKind::Sms, "+12015550123")
            .await
            .expect("identity"),
        Some(carol)
    );

    assert!(
        !s.remove_account(BridgeKind::Sms, "alice@example.org")
            .await
            .expect("remove again")
    );
    assert_eq!(s.count_accounts(BridgeKind::Sms).await.expect("count"), 1);
    // A new registration never reuses the old id.
    let fresh = s
        .upsert_account(BridgeKind::Sms, "alice@example.org", &Credentials::new())
        .await
        .expect("re-register");
    assert_ne!(fresh, alice);
}

async fn credentials_are_bound_to_their_row(db: &TestDb) {
    let s = db.migrated().await;
    let raw = db.raw().await;
    let alice = s
        .upsert_account(
            BridgeKind::Email,
            "alice@example.org",
            &creds(&[("password", "alice-secret")]),
        )
        .await
        .expect("alice");
    let bob = s
        .upsert_account(
            BridgeKind::Email,
            "bob@example.org",
            &creds(&[("password", "bob-secret")]),
        )
        .await
        .expect("bob");

    // At rest: versioned, and no plaintext.
    let blob: Vec<u8> = sqlx::query_scalar("SELECT credentials FROM accounts WHERE id = $1")
        .bind(alice.0)
        .fetch_one(&raw)
        .await
        .expect("blob");
    assert_eq!(blob[0], ferry::store::BLOB_VERSION);
    assert!(!blob.windows(12).any(|w| w == b"alice-secret"));

    // A key that is not ours opens nothing.
    let stranger = db.store_with(Cipher::from_key([1; 32])).await;
    assert!(matches!(
        stranger
            .account(BridgeKind::Email, "alice@example.org")
            .await,
        Err(StoreError::Crypto)
    ));

    // Alice's ciphertext copied onto Bob's row does not open there.
    sqlx::query(
        "UPDATE accounts SET credentials = (SELECT credentials FROM accounts WHERE id = $1)
         WHERE id = $2",
    )
    .bind(alice.0)
    .bind(bob.0)
    .execute(&raw)
    .await
    .expect("tamper");
    assert!(matches!(
        s.account(BridgeKind::Email, "bob@example.org").await,
        Err(StoreError::Crypto)
    ));
    assert!(matches!(
        s.account_by_id(bob).await,
        Err(StoreError::Crypto)
    ));
    assert_eq!(
        s.account(BridgeKind::Email, "alice@example.org")
            .await
            .expect("alice still opens")
            .expect("present")
            .credentials,
        creds(&[("password", "alice-secret")])
    );
    // Listing skips the unreadable account rather than failing everyone.
    let listed = s.accounts(BridgeKind::Email).await.expect("list");
    assert_eq!(listed.iter().map(|a| a.id).collect::<Vec<_>>(), vec![alice]);
    // Re-registering repairs it.
    s.upsert_account(
        BridgeKind::Email,
        "bob@example.org",
        &creds(&[("password", "new")]),
    )
    .await
    .expect("repair");
    assert_eq!(s.accounts(BridgeKind::Email).await.expect("list").len(), 2);
}

async fn identities_are_unique_both_ways(db: &TestDb) {
    let s = db.migrated().await;
    let a = s
        .ensure_identity(
            BridgeKind::Rss,
            "https://a.example/feed",
            "News",
            Some("A News"),
            false,
        )
        .await
        .expect("a");
    assert_eq!(a.localpart, "news");
    assert_eq!(a.display.as_deref(), Some("A News"));
    assert_eq!(a.bridge, BridgeKind::Rss);
    let a_again = s
        .ensure_identity(
            BridgeKind::Rss,
            "https://a.example/feed",
            "other",
            None,
            false,
        )
        .await
        .expect("a again");
    assert_eq!(a_again, a);

    let b = s
        .ensure_identity(
            BridgeKind::Rss,
            "https://b.example/feed",
            "news",
            None,
            false,
        )
        .await
        .expect("b");
    assert_eq!(b.localpart, "news-2");
    assert_eq!(b.display, None);
    let c = s
        .ensure_identity(
            BridgeKind::Rss,
            "https://c.example/feed",
            "news",
            None,
            false,
        )
        .await
        .expect("c");
    assert_eq!(c.localpart, "news-3");
    assert_ne!(b.id, c.id);

    assert_eq!(
        s.identity_by_localpart(BridgeKind::Rss, "NEWS-2")
            .await
            .expect("by localpart"),
        Some(b.clone())
    );
    assert_eq!(
        s.identity_by_remote(BridgeKind::Rss, "https://c.example/feed")
            .await
            .expect("by remote"),
        Some(c.clone())
    );
    assert!(
        s.identity_by_remote(BridgeKind::Rss, "https://z.example/feed")
            .await
            .expect("by remote")
            .is_none()
    );

    // A display name fills in later, once.
    let b_named = s
        .ensure_identity(
            BridgeKind::Rss,
            "https://b.example/feed",
            "news",
            Some("B"),
            false,
        )
        .await
        .expect("b named");
    assert_eq!(b_named.display.as_deref(), Some("B"));
    assert_eq!(b_named.localpart, "news-2");

    // Bridges have separate namespaces.
    let email = s
        .ensure_identity(BridgeKind::Email, "news@example.org", "news", None, true)
        .await
        .expect("email");
    assert_eq!(email.localpart, "news");
    // A derived localpart that belongs to someone else is a conflict, not a suffix.
    assert!(matches!(
        s.ensure_identity(BridgeKind::Email, "NEWS@example.org", "news", None, true)
            .await,
        Err(StoreError::Conflict(_))
    ));

    // The constraints hold even for writes that bypass the store.
    let raw = db.raw().await;
    for (remote, localpart) in [("https://a.example/feed", "fresh"), ("https://new", "news")] {
        let dup = sqlx::query(
            "INSERT INTO identities (bridge, remote_id, localpart, created_at_ms)
             VALUES ('rss', $1, $2, 0)",
        )
        .bind(remote)
        .bind(localpart)
        .execute(&raw)
        .await;
        assert!(dup.is_err(), "duplicate ({remote}, {localpart}) accepted");
    }
}

async fn concurrent_ensure_identity_agrees(db: &TestDb) {
    let s = db.migrated().await;
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let s = s.clone();
        tasks.spawn(async move {
            s.ensure_identity(BridgeKind::Sms, "+12015550100", "+12015550100", None, true)
                .await
        });
    }
    let mut ids = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        ids.insert(result.expect("task").expect("ensure").id);
    }
    assert_eq!(ids.len(), 1, "one foreign id, one row");

    // Different foreign ids racing for one preferred localpart all get one of their own.
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let s = s.clone();
        tasks.spawn(async move {
            s.ensure_identity(
                BridgeKind::Rss,
                &format!("https://feeds.example/{i}"),
                "feed",
                None,
                false,
            )
            .await
        });
    }
    let mut localparts = BTreeSet::new();
    while let Some(result) = tasks.join_next().await {
        localparts.insert(result.expect("task").expect("ensure").localpart);
    }
    let expected: BTreeSet<String> = std::iter::once("feed".to_owned())
        .chain((2..=10).map(|n| format!("feed-{n}")))
        .collect();
    assert_eq!(localparts, expected);
}

async fn contacts_round_trip(db: &TestDb) {
    let s = db.migrated().await;
    let account = s
        .upsert_account(BridgeKind::Email, "alice@example.org", &Credentials::new())
        .await
        .expect("account");
    let x = s
        .ensure_identity(BridgeKind::Email, "x@example.net", "x", None, true)
        .await
        .expect("x");
    let y = s
        .ensure_identity(BridgeKind::Email, "y@example.net", "y", Some("Y"), true)
        .await
        .expect("y");
    assert!(s.introduce_contact(account, x.id).await.expect("introduce"));
    assert!(!s.introduce_contact(account, x.id).await.expect("again"));
    assert!(s.introduce_contact(account, y.id).await.expect("introduce"));
    let mut contacts = s.contacts(account).await.expect("contacts");
    contacts.sort_by_key(|i| i.id);
    assert_eq!(contacts, vec![x.clone(), y.clone()]);
    assert!(s.remove_contact(account, x.id).await.expect("remove"));
    assert!(!s.remove_contact(account, x.id).await.expect("remove again"));
    assert_eq!(s.contacts(account).await.expect("contacts"), vec![y]);
    // Introducing an identity that does not exist is refused by the foreign key.
    assert!(s.introduce_contact(account, i64::MAX).await.is_err());
}

/// A migrated store with two email users, alice and bob.
async fn alice_and_bob(db: &TestDb) -> (Store, AccountId, AccountId) {
    let s = db.migrated().await;
    let alice = s
        .upsert_account(BridgeKind::Email, "alice@example.org", &Credentials::new())
        .await
        .expect("alice");
    let bob = s
        .upsert_account(BridgeKind::Email, "bob@example.org", &Credentials::new())
        .await
        .expect("bob");
    (s, alice, bob)
}

async fn message_map_round_trip(db: &TestDb) {
    let (s, alice, bob) = alice_and_bob(db).await;
    s.map_message(alice, Direction::Out, "stanza-1", "<r1@mail>", Some("thr"))
        .await
        .expect("map out");
    s.map_message(alice, Direction::In, "ferry-2", "<r2@mail>", None)
        .await
        .expect("map in");

    let out = s
        .remote_for_xmpp(alice, "stanza-1")
        .await
        .expect("lookup")
        .expect("present");
    assert_eq!(out.account, alice);
    assert_eq!(out.direction, Direction::Out);
    assert_eq!(out.remote_message_id, "<r1@mail>");
    assert_eq!(out.thread.as_deref(), Some("thr"));
    let inbound = s
        .xmpp_for_remote(alice, "<r2@mail>")
        .await
        .expect("lookup")
        .expect("present");
    assert_eq!(inbound.direction, Direction::In);
    assert_eq!(inbound.xmpp_id, "ferry-2");
    assert_eq!(inbound.thread, None);

    // Per account.
    assert!(
        s.remote_for_xmpp(bob, "stanza-1")
            .await
            .expect("lookup")
            .is_none()
    );
    // Mapping a foreign id again replaces the pair.
    s.map_message(alice, Direction::Out, "stanza-9", "<r1@mail>", None)
        .await
        .expect("remap");
    assert_eq!(
        s.xmpp_for_remote(alice, "<r1@mail>")
            .await
            .expect("lookup")
            .expect("present")
            .xmpp_id,
        "stanza-9"
    );
    assert_eq!(
        s.prune_message_map(now_ms() + 1_000).await.expect("prune"),
        2
    );
    assert!(
        s.xmpp_for_remote(alice, "<r2@mail>")
            .await
            .expect("lookup")
            .is_none()
    );
}

/// A settled outbox row maps its stanza id to the foreign id (and thread) without a
/// message_map row of its own; pending rows and rows without a stanza id map nothing.
async fn sent_rows_are_mappings(db: &TestDb) {
    let (s, alice, bob) = alice_and_bob(db).await;
    let mut anonymous = message(alice, "carol@example.net", "two");
    anonymous.stanza_id = None;
    let rows = s
        .enqueue_claimed(
            vec![
                message(alice, "carol@example.net", "one"),
                anonymous,
                message(alice, "carol@example.net", "three"),
            ],
            60_000,
        )
        .await
        .expect("enqueue");
    let sent = |i: usize, remote: &str, thread: Option<&str>| SentRow {
        id: rows[i].id,
        account: alice,
        remote_message_id: remote.to_owned(),
        thread: thread.map(str::to_owned),
    };
    s.complete_sent(vec![
        sent(0, "<a@mail>", Some("t1")),
        sent(1, "<b@mail>", None),
    ])
    .await
    .expect("settle");
    assert_eq!(stored(&s, rows[0].id).await.state, OutboxState::Sent);

    let out = s
        .remote_for_xmpp(alice, "stanza-one")
        .await
        .expect("lookup")
        .expect("a sent row is a mapping");
    assert_eq!(out.direction, Direction::Out);
    assert_eq!(out.account, alice);
    assert_eq!(out.remote_message_id, "<a@mail>");
    assert_eq!(out.thread.as_deref(), Some("t1"));
    assert_eq!(
        s.xmpp_for_remote(alice, "<a@mail>")
            .await
            .expect("lookup")
            .expect("present")
            .xmpp_id,
        "stanza-one"
    );
    assert_eq!(
        s.latest_in_thread(alice, "t1")
            .await
            .expect("lookup")
            .expect("present")
            .remote_message_id,
        "<a@mail>"
    );
    // Without a stanza id there is nothing to map; a pending row maps nothing yet; and
    // mappings are per account.
    for (who, remote) in [(alice, "<b@mail>"), (bob, "<a@mail>")] {
        let found = s.xmpp_for_remote(who, remote).await.expect("lookup");
        assert!(found.is_none(), "{remote}: {found:?}");
    }
    for (who, xmpp) in [(alice, "stanza-three"), (bob, "stanza-one")] {
        let found = s.remote_for_xmpp(who, xmpp).await.expect("lookup");
        assert!(found.is_none(), "{xmpp}: {found:?}");
    }

    // A later mail in the thread is the thread's latest message.
    s.map_message(alice, Direction::In, "ferry-7", "<c@mail>", Some("t1"))
        .await
        .expect("map in");
    let latest = s
        .latest_in_thread(alice, "t1")
        .await
        .expect("lookup")
        .expect("present");
    assert_eq!(latest.direction, Direction::In);
    assert_eq!(latest.remote_message_id, "<c@mail>");
}

/// Batches of every size are stored and settled row by row: each message gets its own id
/// (consecutive within a batch, never reused across batches) and its own row, and each
/// settled row its own foreign id and thread. (The SQLite lane writes a batch with
/// multi-row statements in chunks of 32, 8 and 1 rows; 45 rows use all three.)
async fn large_batches_keep_every_row_apart(db: &TestDb) {
    let (s, alice, _) = alice_and_bob(db).await;
    let first = s
        .enqueue_claimed(vec![message(alice, "+12015550100", "before")], 60_000)
        .await
        .expect("enqueue one");
    let msgs: Vec<NewOutbox> = (0..45)
        .map(|i| {
            let mut m = message(alice, &format!("+120155501{i:02}"), &format!("b{i}"));
            if i % 3 == 0 {
                m.stanza_id = None;
                m.want_receipt = false;
            }
            m
        })
        .collect();
    let rows = s
        .enqueue_claimed(msgs.clone(), 60_000)
        .await
        .expect("enqueue batch");
    assert_eq!(rows.len(), 45);
    for (i, (row, msg)) in rows.iter().zip(&msgs).enumerate() {
        let expected_id = first[0].id + 1 + i as i64;
        assert_eq!(row.id, expected_id, "row {i}");
        let stored = stored(&s, row.id).await;
        assert_eq!(stored.recipient, msg.recipient, "row {i}");
        assert_eq!(stored.payload, msg.payload, "row {i}");
        assert_eq!(stored.stanza_id, msg.stanza_id, "row {i}");
        assert_eq!(stored.want_receipt, msg.want_receipt, "row {i}");
        assert_eq!(stored.state, OutboxState::Pending, "row {i}");
        assert_eq!(stored.attempts, 1, "row {i}");
    }
    let sent: Vec<SentRow> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| SentRow {
            id: r.id,
            account: alice,
            remote_message_id: format!("<{i}@mail>"),
            thread: (i % 2 == 1).then(|| format!("t{i}")),
        })
        .collect();
    s.complete_sent(sent.clone()).await.expect("settle");
    for (i, d) in sent.iter().enumerate() {
        let stored = stored(&s, d.id).await;
        assert_eq!(stored.state, OutboxState::Sent, "row {i}");
        assert_eq!(
            stored.remote_message_id.as_deref(),
            Some(d.remote_message_id.as_str())
        );
        if let Some(sid) = &rows[i].stanza_id {
            let m = s
                .remote_for_xmpp(alice, sid)
                .await
                .expect("lookup")
                .expect("a mapping");
            assert_eq!(m.remote_message_id, d.remote_message_id, "row {i}");
            assert_eq!(m.thread, d.thread, "row {i}");
        }
    }
    // The row stored before the batch is untouched.
    let before = stored(&s, first[0].id).await;
    assert_eq!(before.state, OutboxState::Pending);
    assert_eq!(before.recipient, "+12015550100");
}

async fn inbound_dedupe_under_concurrency(db: &TestDb) {
    let s = db.migrated().await;
    let alice = s
        .upsert_account(BridgeKind::Email, "alice@example.org", &Credentials::new())
        .await
        .expect("alice");
    let bob = s
        .upsert_account(BridgeKind::Email, "bob@example.org", &Credentials::new())
        .await
        .expect("bob");
    let mut tasks = JoinSet::new();
    for _ in 0..50 {
        let s = s.clone();
        tasks.spawn(async move { s.mark_inbound(alice, "<uid-1@mail>").await });
    }
    let mut firsts = 0;
    while let Some(result) = tasks.join_next().await {
        if result.expect("task").expect("mark") {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
    assert!(!s.mark_inbound(alice, "<uid-1@mail>").await.expect("mark"));
    assert!(
        s.mark_inbound(bob, "<uid-1@mail>")
            .await
            .expect("per account")
    );
    assert!(
        s.unmark_inbound(alice, "<uid-1@mail>")
            .await
            .expect("unmark")
    );
    assert!(s.mark_inbound(alice, "<uid-1@mail>").await.expect("again"));
    assert_eq!(
        s.prune_inbound_seen(now_ms() + 1_000).await.expect("prune"),
        2
    );
}

async fn outbox_lifecycle(db: &TestDb) {
    let s = db.migrated().await;
    let acc = s
        .upsert_account(BridgeKind::Sms, "alice@example.org", &Credentials::new())
        .await
        .expect("account");
    let id1 = s
        .enqueue(&message(acc, "+12015550101", "one"))
        .await
        .expect("enqueue");
    let mut no_receipt = message(acc, "+12015550102", "two");
    no_receipt.want_receipt = false;
    no_receipt.stanza_id = None;
    let batch = s
        .enqueue_batch(&[no_receipt, message(acc, "+12015550103", "three")])
        .await
        .expect("batch");
    assert_eq!(batch.len(), 2);
    let (id2, id3) = (batch[0], batch[1]);
    assert!(id1 < id2 && id2 < id3);
    assert!(s.enqueue_batch(&[]).await.expect("empty batch").is_empty());

    assert_eq!(s.outbox_depth(BridgeKind::Sms).await.expect("depth"), 3);
    assert_eq!(s.outbox_depth(BridgeKind::Email).await.expect("depth"), 0);
    let t = now_ms();
    assert!(
        s.next_due_at(BridgeKind::Sms)
            .await
            .expect("due")
            .expect("some")
            <= t
    );
    assert_eq!(s.next_due_at(BridgeKind::Email).await.expect("due"), None);

    let row = stored(&s, id1).await;
    assert_eq!(row.state, OutboxState::Pending);
    assert_eq!(row.attempts, 0);
    assert_eq!(row.account, acc);
    assert_eq!(row.bridge, BridgeKind::Sms);
    assert_eq!(row.recipient, "+12015550101");
    assert_eq!(row.payload, r#"{"body":"one"}"#);
    assert_eq!(row.from_jid, "alice@example.org/phone");
    assert_eq!(row.stanza_id.as_deref(), Some("stanza-one"));
    assert!(row.want_receipt);
    assert_eq!(row.locked_until_ms, 0);
    let row2 = stored(&s, id2).await;
    assert!(!row2.want_receipt);
    assert_eq!(row2.stanza_id, None);

    // Claim in order, honouring the limit; leased rows are not claimed twice.
    assert!(
        s.claim_due(BridgeKind::Sms, t, 30_000, 0)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        s.claim_due(BridgeKind::Email, t, 30_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let first = s
        .claim_due(BridgeKind::Sms, t, 30_000, 2)
        .await
        .expect("claim");
    assert_eq!(
        first.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![id1, id2]
    );
    for r in &first {
        assert_eq!(r.attempts, 1);
        assert_eq!(r.locked_until_ms, t + 30_000);
        assert_eq!(r.state, OutboxState::Pending);
    }
    let rest = s
        .claim_due(BridgeKind::Sms, t, 30_000, 10)
        .await
        .expect("claim");
    assert_eq!(rest.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id3]);
    assert!(
        s.claim_due(BridgeKind::Sms, t + 29_999, 30_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    assert_eq!(
        s.next_due_at(BridgeKind::Sms).await.expect("due"),
        Some(t + 30_000)
    );
    // Leased rows still count as pending.
    assert_eq!(s.outbox_depth(BridgeKind::Sms).await.expect("depth"), 3);

    // The claimer "crashed": once the lease runs out the rows come back.
    let t2 = t + 30_000;
    let reclaimed = s
        .claim_due(BridgeKind::Sms, t2, 30_000, 10)
        .await
        .expect("reclaim");
    assert_eq!(
        reclaimed.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![id1, id2, id3]
    );
    assert!(reclaimed.iter().all(|r| r.attempts == 2));

    // Retry later: released at once, due again at the given time.
    assert!(
        s.retry_later(id1, t + 100_000, "provider said 503")
            .await
            .expect("retry")
    );
    let r1 = stored(&s, id1).await;
    assert_eq!(r1.locked_until_ms, 0);
    assert_eq!(r1.next_attempt_at_ms, t + 100_000);
    assert_eq!(r1.last_error.as_deref(), Some("provider said 503"));

    // Settle the others.
    assert!(s.mark_sent(id2, "SM-two").await.expect("sent"));
    assert!(
        s.mark_failed(id3, "not a mobile number")
            .await
            .expect("failed")
    );
    let r2 = stored(&s, id2).await;
    assert_eq!(r2.state, OutboxState::Sent);
    assert_eq!(r2.remote_message_id.as_deref(), Some("SM-two"));
    assert_eq!(r2.locked_until_ms, 0);
    let r3 = stored(&s, id3).await;
    assert_eq!(r3.state, OutboxState::Failed);
    assert_eq!(r3.last_error.as_deref(), Some("not a mobile number"));
    assert_eq!(
        s.outbox_by_remote(acc, "SM-two")
            .await
            .expect("by remote")
            .map(|r| r.id),
        Some(id2)
    );
    // Settled rows are not retried or claimed again.
    assert!(!s.retry_later(id2, t, "x").await.expect("retry sent"));
    assert_eq!(s.outbox_depth(BridgeKind::Sms).await.expect("depth"), 1);
    assert_eq!(
        s.next_due_at(BridgeKind::Sms).await.expect("due"),
        Some(t + 100_000)
    );
    assert!(
        s.claim_due(BridgeKind::Sms, t + 99_999, 30_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
    let last = s
        .claim_due(BridgeKind::Sms, t + 100_000, 30_000, 10)
        .await
        .expect("claim");
    assert_eq!(last.iter().map(|r| r.id).collect::<Vec<_>>(), vec![id1]);
    assert_eq!(last[0].attempts, 3);
    assert!(s.mark_sent(id1, "SM-one").await.expect("sent"));
    assert_eq!(s.outbox_depth(BridgeKind::Sms).await.expect("depth"), 0);
    assert_eq!(s.next_due_at(BridgeKind::Sms).await.expect("due"), None);

    assert!(!s.mark_sent(i64::MAX, "nope").await.expect("missing row"));
    assert!(!s.mark_failed(i64::MAX, "nope").await.expect("missing row"));
    assert_eq!(s.prune_outbox(now_ms() + 1_000).await.expect("prune"), 3);
    assert!(s.outbox_row(id1).await.expect("row").is_none());
}

async fn concurrent_claimers_never_share_a_row(db: &TestDb) {
    let first = db.migrated().await;
    // A second pool on the same database stands in for a second ferry process.
    let second = db.store().await;
    let acc = first
        .upsert_account(BridgeKind::Sms, "alice@example.org", &Credentials::new())
        .await
        .expect("account");
    let msgs: Vec<NewOutbox> = (0..120)
        .map(|i| message(acc, "+12015550101", &i.to_string()))
        .collect();
    let ids = first.enqueue_batch(&msgs).await.expect("batch");
    let t = now_ms();
    let mut tasks = JoinSet::new();
    for store in [first.clone(), first.clone(), second.clone(), second.clone()] {
        tasks.spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_due(BridgeKind::Sms, t, 60_000, 7)
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|r| r.id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(result) = tasks.join_next().await {
        all.extend(result.expect("task"));
    }
    let unique: BTreeSet<i64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "a row was claimed twice");
    assert_eq!(unique, ids.into_iter().collect::<BTreeSet<_>>());
    assert!(
        second
            .claim_due(BridgeKind::Sms, t, 60_000, 10)
            .await
            .expect("claim")
            .is_empty()
    );
}

async fn kv_round_trip(db: &TestDb) {
    let s = db.migrated().await;
    assert_eq!(s.kv_get("email", "uidvalidity").await.expect("get"), None);
    s.kv_set("email", "uidvalidity", "42").await.expect("set");
    s.kv_set("rss", "uidvalidity", "other").await.expect("set");
    assert_eq!(
        s.kv_get("email", "uidvalidity")
            .await
            .expect("get")
            .as_deref(),
        Some("42")
    );
    s.kv_set("email", "uidvalidity", "43")
        .await
        .expect("overwrite");
    assert_eq!(
        s.kv_get("email", "uidvalidity")
            .await
            .expect("get")
            .as_deref(),
        Some("43")
    );
    assert!(s.kv_delete("email", "uidvalidity").await.expect("delete"));
    assert!(
        !s.kv_delete("email", "uidvalidity")
            .await
            .expect("delete again")
    );
    assert_eq!(s.kv_get("email", "uidvalidity").await.expect("get"), None);
    assert_eq!(
        s.kv_get("rss", "uidvalidity")
            .await
            .expect("get")
            .as_deref(),
        Some("other")
    );
}

// ---- backend-independent ---------------------------------------------------------------

#[tokio::test]
async fn sqlite_in_memory_works() {
    let s = Store::open("sqlite::memory:", Cipher::from_key(KEY))
        .await
        .expect("open");
    assert_eq!(s.migrate().await.expect("migrate").len(), 6);
    let id = s
        .upsert_account(BridgeKind::Rss, "a@example.org", &creds(&[("k", "v")]))
        .await
        .expect("upsert");
    // Everything goes through one connection, which must keep the schema and data.
    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let s = s.clone();
        tasks.spawn(async move { s.mark_inbound(id, &format!("m{i}")).await });
    }
    while let Some(result) = tasks.join_next().await {
        assert!(result.expect("task").expect("mark"));
    }
    assert_eq!(
        s.account_by_id(id)
            .await
            .expect("lookup")
            .expect("present")
            .credentials,
        creds(&[("k", "v")])
    );
}

#[tokio::test]
async fn sqlite_file_is_created_with_pragmas() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sub.db");
    let url = format!("sqlite://{}", path.display());
    let s = Store::open(&url, Cipher::from_key(KEY))
        .await
        .expect("open");
    s.migrate().await.expect("migrate");
    assert!(path.exists());
    // WAL persists in the file; a plain connection sees it.
    sqlx::any::install_default_drivers();
    let raw = AnyPool::connect(&url).await.expect("raw");
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&raw)
        .await
        .expect("journal_mode");
    assert_eq!(mode.to_lowercase(), "wal");
}

#[tokio::test]
async fn unsupported_url_is_refused() {
    assert!(matches!(
        Store::open("mysql://root@localhost/ferry", Cipher::from_key(KEY)).await,
        Err(StoreError::UnsupportedUrl(_))
    ));
}

#[test]
fn key_file_is_created_private_and_reused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ferry.key");
    let created = Cipher::load_or_create(&path).expect("create");
    let meta = std::fs::metadata(&path).expect("stat");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(meta.len(), 32);
    let bytes = std::fs::read(&path).expect("read");

    let reused = Cipher::load_or_create(&path).expect("reuse");
    assert_eq!(std::fs::read(&path).expect("read"), bytes, "key rewritten");
    let blob = created.encrypt(b"s3cret", b"aad");
    assert_eq!(reused.decrypt(&blob, b"aad").expect("same key"), b"s3cret");
    assert!(matches!(
        reused.decrypt(&blob, b"other aad"),
        Err(StoreError::Crypto)
    ));
    // No temporary files are left behind.
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);

    // Group/world-readable still loads (with a warning in the log).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let loose = Cipher::load_or_create(&path).expect("loose perms");
    assert_eq!(loose.decrypt(&blob, b"aad").expect("same key"), b"s3cret");
}

#[test]
fn key_file_of_wrong_length_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    for len in [0usize, 31, 33, 64] {
        let path = dir.path().join(format!("k{len}"));
        std::fs::write(&path, vec![7u8; len]).expect("write");
        assert!(
            matches!(Cipher::load_or_create(&path), Err(StoreError::Key(_))),
            "{len} bytes accepted"
        );
        assert_eq!(
            std::fs::read(&path).expect("read").len(),
            len,
            "file touched"
        );
    }
    let missing_dir = dir.path().join("no/such/dir/ferry.key");
    assert!(matches!(
        Cipher::load_or_create(&missing_dir),
        Err(StoreError::Key(_))
    ));
}

#[test]
fn key_file_created_concurrently_is_one_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("ferry.key");
    let ciphers: Vec<Cipher> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| Cipher::load_or_create(&path)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread").expect("load"))
            .collect()
    });
    let blob = ciphers[0].encrypt(b"x", b"");
    for c in &ciphers {
        assert_eq!(c.decrypt(&blob, b"").expect("same key"), b"x");
    }
    assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
}

#[test]
fn cipher_debug_hides_the_key() {
    let c = Cipher::from_key([0xab; 32]);
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("171") && !shown.to_lowercase().contains("ab, "),
        "{shown}"
    );
    assert!(!format!("{c:#?}").contains("171"));
}

#[test]
fn test_database_urls() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
        "postgres://postgres@127.0.0.1:5432/x"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "x"),
        "postgres://u:p@h/x?sslmode=disable"
    );
    assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    assert_eq!(
        redacted("postgres://u:secret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(redacted(DEFAULT_PG_URL), DEFAULT_PG_URL);
}
