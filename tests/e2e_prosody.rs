//! End to end through a real Prosody: ferry (with the fake bridge behind a real component
//! link) attached to a Prosody the test starts, and real XMPP clients logging in over c2s.
//! Covers discovery, registration, the gateway prompt, access rules, an unknown IQ, a
//! message with its receipt, the IQ barrier, `/healthz`, and Prosody restarted under ferry.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::client::{self, Client, condition};
use common::prosody::Prosody;
use ferry::app::{self, BridgeSpec, Running};
use ferry::config::Config;
use ferry::store::{Cipher, Store};
use ferry_bridge_api::BridgeKind;
use ferry_bridge_api::fake::FakeBridge;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GW: &str = "fake.localhost";
const SECRET: &str = "component-secret";

struct Bed {
    prosody: Prosody,
    ferry: Running,
    fake: FakeBridge,
    _dir: tempfile::TempDir,
}

async fn bed() -> Bed {
    let prosody = Prosody::start(&[(GW, SECRET)], &[("alice", "alice"), ("bob", "bob")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = bed_config(&prosody, dir.path());
    let fake = FakeBridge::new(BridgeKind::Rss, true);
    let ferry = start(&cfg, open_store(&cfg).await, &fake).await;
    let bed = Bed {
        prosody,
        ferry,
        fake,
        _dir: dir,
    };
    bed.wait_linked(Duration::from_secs(20)).await;
    bed
}

/// The bed's config: alice may use the gateway and is its admin; HTTP on a free port.
fn bed_config(prosody: &Prosody, dir: &std::path::Path) -> Config {
    Config::from_str_at(
        &format!(
            "[xmpp]\nhost = \"127.0.0.1\"\nport = {}\nallowed = [\"alice@localhost\"]\nadmins = [\"alice@localhost\"]\n[http]\nlisten = \"127.0.0.1:0\"\npublic_url = \"http://gw.example/ferry/\"\n[rss]\ndomain = \"{GW}\"\nsecret = \"{SECRET}\"\n",
            prosody.component_port
        ),
        dir,
    )
    .expect("config")
}

async fn open_store(cfg: &Config) -> Store {
    let store = Store::open(&cfg.database.url, Cipher::from_key([3; 32]))
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    store
}

/// Starts ferry with `fake` as the gateway's bridge.
async fn start(cfg: &Config, store: Store, fake: &FakeBridge) -> Running {
    app::start(
        cfg,
        store,
        vec![BridgeSpec {
            domain: GW.into(),
            secret: SECRET.into(),
            bridge: Arc::new(fake.clone()),
        }],
    )
    .await
    .expect("ferry starts")
}

/// Registers with the password the fake accepts.
async fn register(c: &mut Client) {
    let r = c
        .iq(&format!(
            "<iq type='set' id='r1' to='{GW}'>{}</iq>",
            REGISTER_FORM.replace("PASSWORD", "pw")
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
}

impl Bed {
    async fn wait_linked(&self, within: Duration) {
        let gw = self.ferry.gateway(BridgeKind::Rss).expect("gateway");
        let mut up = gw.connected.clone();
        tokio::time::timeout(within, up.wait_for(|v| *v))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "ferry not linked within {within:?}:\n{}",
                    self.prosody.log()
                )
            })
            .expect("link task alive");
    }

    /// Logs in and becomes available (Prosody delivers subscription requests only to
    /// available resources).
    async fn login(&self, user: &str) -> Client {
        let c = client::login(self.prosody.c2s_port, user, user, "test").await;
        c.send_presence().await;
        c
    }

    async fn http_get(&self, path: &str) -> (u16, String) {
        let addr = self.ferry.http_addr.expect("http");
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
        let mut buf = String::new();
        s.read_to_string(&mut buf).await.expect("read");
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = buf.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        (status, body)
    }
}

const REGISTER_FORM: &str = "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='email'><value>alice@mail.example</value></field><field var='password'><value>PASSWORD</value></field></x></query>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_register_prompt_and_message_with_receipt() {
    let bed = bed().await;
    let mut alice = bed.login("alice").await;

    // Discovery.
    let r = alice.iq(&format!("<iq type='get' id='d1' to='{GW}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let q = r
        .child("query", "http://jabber.org/protocol/disco#info")
        .expect("query");
    assert!(
        q.elements()
            .any(|e| e.name == "identity" && e.attr("category") == Some("headline"))
    );
    assert!(
        q.elements()
            .any(|e| e.attr("var") == Some("jabber:iq:register"))
    );

    // Registration: a refused login, then a good one.
    let r = alice
        .iq(&format!(
            "<iq type='set' id='r0' to='{GW}'>{}</iq>",
            REGISTER_FORM.replace("PASSWORD", "wrong")
        ))
        .await;
    assert_eq!(condition(&r).as_deref(), Some("not-authorized"), "{r}");
    register(&mut alice).await;
    let sub = alice
        .recv(Duration::from_secs(10), |e| {
            e.name == "presence"
                && e.attr("type") == Some("subscribe")
                && e.attr("from") == Some(GW)
        })
        .await;
    assert!(
        sub.attr("to")
            .is_some_and(|t| t.starts_with("alice@localhost"))
    );

    // The gateway prompt maps an address to a JID.
    let r = alice.iq(&format!("<iq type='set' id='g1' to='{GW}'><query xmlns='jabber:iq:gateway'><prompt>bob.smith</prompt></query></iq>")).await;
    let contact = r
        .child("query", "jabber:iq:gateway")
        .and_then(|q| q.child_text("jid", "jabber:iq:gateway"))
        .expect("jid");
    assert_eq!(contact, format!("bob.smith@{GW}"));

    // A message with a receipt request goes through the outbox; the receipt comes back.
    alice
        .send(&format!("<message type='chat' id='hello-1' to='{contact}'><body>hello through Prosody</body><request xmlns='urn:xmpp:receipts'/></message>"))
        .await;
    let receipt = alice
        .recv(Duration::from_secs(10), |e| {
            e.child("received", "urn:xmpp:receipts").is_some()
        })
        .await;
    assert_eq!(receipt.attr("from"), Some(contact.as_str()));
    assert_eq!(
        receipt
            .child("received", "urn:xmpp:receipts")
            .and_then(|r| r.attr("id")),
        Some("hello-1")
    );
    assert!(
        bed.fake
            .sent()
            .iter()
            .any(|(_, to, m)| to.as_str() == "bob.smith" && m.body == "hello through Prosody")
    );

    // An IQ ferry does not handle.
    let r = alice
        .iq(&format!(
            "<iq type='get' id='u1' to='{GW}'><query xmlns='urn:example:unknown'/></iq>"
        ))
        .await;
    assert_eq!(condition(&r).as_deref(), Some("service-unavailable"));

    // Health and metrics.
    let (status, body) = bed.http_get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    // Also under public_url's path, for a proxy that passes it on.
    let (status, body) = bed.http_get("/ferry/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = bed.http_get("/elsewhere/healthz").await;
    assert_eq!(status, 404);
    let (status, body) = bed.http_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("ferry_component_connected{bridge=\"rss\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("ferry_messages_total{bridge=\"rss\",direction=\"out\",outcome=\"ok\"} 1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_outside_allowed_are_forbidden() {
    let bed = bed().await;
    let mut bob = bed.login("bob").await;
    let r = bob
        .iq(&format!(
            "<iq type='get' id='r1' to='{GW}'><query xmlns='jabber:iq:register'/></iq>"
        ))
        .await;
    assert_eq!(condition(&r).as_deref(), Some("forbidden"), "{r}");
    bob.send(&format!(
        "<message type='chat' id='m1' to='x@{GW}'><body>hi</body></message>"
    ))
    .await;
    let m = bob
        .recv(Duration::from_secs(10), |e| e.name == "message")
        .await;
    assert_eq!(condition(&m).as_deref(), Some("forbidden"));
    // disco#info answers anyone.
    let r = bob.iq(&format!("<iq type='get' id='d1' to='{GW}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_ping_proves_earlier_messages_are_stored() {
    let bed = bed().await;
    let mut alice = bed.login("alice").await;
    register(&mut alice).await;
    // Take the session down so nothing is delivered: rows must stay in the outbox.
    let gw = bed.ferry.gateway(BridgeKind::Rss).expect("gateway");
    let account = bed
        .ferry
        .store
        .account(BridgeKind::Rss, "alice@localhost")
        .await
        .expect("store")
        .expect("registered")
        .id;
    gw.stop_session(account);
    for i in 0..50 {
        alice
            .send(&format!(
                "<message type='chat' id='b{i}' to='carol@{GW}'><body>n{i}</body></message>"
            ))
            .await;
    }
    let r = alice
        .iq(&format!(
            "<iq type='get' id='barrier' to='{GW}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let depth = bed
        .ferry
        .store
        .outbox_depth(BridgeKind::Rss)
        .await
        .expect("depth");
    assert_eq!(depth, 50, "every message before the ping is in the outbox");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ferry_comes_back_after_prosody_restarts() {
    let mut bed = bed().await;
    let gw = bed.ferry.gateway(BridgeKind::Rss).expect("gateway").clone();
    let mut up = gw.connected.clone();
    bed.prosody.stop().await;
    tokio::time::timeout(Duration::from_secs(60), up.wait_for(|v| !*v))
        .await
        .expect("ferry notices the server went away")
        .expect("alive");
    let (status, body) = bed.http_get("/healthz").await;
    assert_eq!(status, 503);
    assert!(body.contains("down"), "{body}");

    bed.prosody.restart().await;
    let back = Instant::now();
    bed.wait_linked(Duration::from_secs(20)).await;
    assert!(back.elapsed() < Duration::from_secs(20));
    let mut alice = bed.login("alice").await;
    let r = alice
        .iq(&format!(
            "<iq type='get' id='p1' to='{GW}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));

    // Graceful shutdown ends every task promptly and cleanly.
    let Bed { ferry, prosody, .. } = bed;
    ferry.shutdown();
    tokio::time::timeout(Duration::from_secs(10), ferry.wait())
        .await
        .expect("ferry stops within 10 s")
        .expect("a clean stop");
    drop(prosody);
}

/// What a bridge hands over the moment it starts serving (texts kept while ferry was down)
/// reaches a registered user: every registered user's session exists before any bridge
/// serves, so the relay does not drop the event as one for an unknown session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_bridge_hands_over_at_start_reach_registered_users() {
    let prosody = Prosody::start(&[(GW, SECRET)], &[("alice", "alice")]).await;
    let mut alice = client::login(prosody.c2s_port, "alice", "alice", "test").await;
    alice.send_presence().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = bed_config(&prosody, dir.path());
    let store = open_store(&cfg).await;
    let account = store
        .upsert_account(BridgeKind::Rss, "alice@localhost", &Default::default())
        .await
        .expect("registered before start");
    let fake = FakeBridge::new(BridgeKind::Rss, true);
    fake.emit_at_serve(
        account,
        ferry_bridge_api::RemoteEvent::Message(ferry_bridge_api::InboundMessage {
            from: Some(ferry_bridge_api::RemoteId("carol".into())),
            remote_message_id: "kept-1".into(),
            body: "kept while ferry was down".into(),
            ..Default::default()
        }),
    );
    let ferry = start(&cfg, store, &fake).await;
    let from = format!("carol@{GW}");
    let msg = alice
        .recv(Duration::from_secs(20), |e| {
            e.name == "message" && e.attr("from").is_some_and(|f| f.starts_with(&from))
        })
        .await;
    assert_eq!(client::body(&msg), "kept while ferry was down");
    ferry.shutdown();
    let _ = ferry.wait().await;
}

/// A graceful stop finishes the sends in flight while the stream is still open, so their
/// receipts reach the user before ferry closes its streams (SPEC §1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_delivers_the_receipts_of_sends_in_flight() {
    let bed = bed().await;
    let mut alice = bed.login("alice").await;
    register(&mut alice).await;
    let contact = format!("slow.bob@{GW}");
    alice
        .send(&format!("<message type='chat' id='late-1' to='{contact}'><body>sent while stopping</body><request xmlns='urn:xmpp:receipts'/></message>"))
        .await;
    assert!(
        bed.fake.wait_begun(1, Duration::from_secs(10)).await,
        "the send began"
    );
    let Bed {
        ferry,
        prosody,
        fake,
        ..
    } = bed;
    ferry.shutdown();
    let receipt = alice
        .recv(Duration::from_secs(10), |e| {
            e.child("received", "urn:xmpp:receipts").is_some()
        })
        .await;
    assert_eq!(receipt.attr("from"), Some(contact.as_str()));
    assert!(
        fake.sent()
            .iter()
            .any(|(_, to, _)| to.as_str() == "slow.bob")
    );
    tokio::time::timeout(Duration::from_secs(10), ferry.wait())
        .await
        .expect("ferry stops within 10 s")
        .expect("a clean stop");
    drop(prosody);
}
