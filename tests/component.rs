//! The XEP-0114 link against a scripted server on loopback: handshake, a refused secret
//! (fatal), `conflict` (retried), hostile input closed with the right stream error, and a
//! silent server noticed by the keepalive.

use std::time::Duration;

use ferry::component::{self, LinkConfig, LinkError, handshake_digest};
use ferry::metrics::Metrics;
use ferry::xml::{Element, Limits, NS_COMPONENT, StreamEvent, StreamReader};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

const SECRET: &str = "s3cret";
const DOMAIN: &str = "gw.localhost";

/// One accepted connection, past the client's stream header.
struct Peer {
    reader: StreamReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

async fn accept(listener: &TcpListener) -> Peer {
    let (sock, _) = timeout(Duration::from_secs(20), listener.accept())
        .await
        .expect("ferry connects within 20 s")
        .expect("accept");
    let (r, w) = sock.into_split();
    let mut reader = StreamReader::new(r, Limits::default());
    match reader.next().await {
        Ok(StreamEvent::Open(h)) => assert_eq!(h.attr("to"), Some(DOMAIN)),
        other => panic!("expected a stream header, got {other:?}"),
    }
    Peer { reader, writer: w }
}

impl Peer {
    async fn write(&mut self, s: &str) {
        self.writer.write_all(s.as_bytes()).await.expect("write");
    }

    /// Sends our header and checks the client's handshake; answers success or `reply`.
    async fn handshake(&mut self, id: &str, reply: Option<&str>) -> bool {
        self.write(&format!("<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='{DOMAIN}' id='{id}'>")).await;
        let hs = match self.reader.next().await {
            Ok(StreamEvent::Stanza(e)) => e,
            other => panic!("expected <handshake>, got {other:?}"),
        };
        let ok = hs.text() == handshake_digest(id, SECRET);
        match reply {
            Some(r) => self.write(r).await,
            None if ok => self.write("<handshake/>").await,
            None => self.write("<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>").await,
        }
        ok
    }

    /// Reads until the stream ends; returns the stream error condition ferry sent, if any.
    async fn stream_error(&mut self) -> Option<String> {
        loop {
            match timeout(Duration::from_secs(10), self.reader.next())
                .await
                .expect("ferry closes within 10 s")
            {
                Ok(StreamEvent::Stanza(e)) if e.name == "error" => {
                    return e
                        .elements()
                        .find(|c| c.name != "text")
                        .map(|c| c.name.to_string());
                }
                Ok(StreamEvent::Stanza(_)) => continue,
                _ => return None,
            }
        }
    }
}

struct Client {
    inbound: mpsc::Receiver<Element>,
    link: component::Link,
    task: tokio::task::JoinHandle<Result<(), LinkError>>,
    shutdown: watch::Sender<bool>,
}

fn start(port: u16, secret: &str, tweak: impl FnOnce(&mut LinkConfig)) -> Client {
    let mut cfg = LinkConfig::new("127.0.0.1", port, DOMAIN, secret, "rss");
    cfg.max_backoff = Duration::from_millis(200);
    tweak(&mut cfg);
    let (in_tx, inbound) = mpsc::channel(16);
    let (shutdown, rx) = watch::channel(false);
    let (link, task) = component::spawn(cfg, in_tx, Metrics::default(), rx);
    Client {
        inbound,
        link,
        task,
        shutdown,
    }
}

async fn wait_connected(c: &mut Client, up: bool) {
    timeout(
        Duration::from_secs(20),
        c.link.connected.wait_for(|v| *v == up),
    )
    .await
    .expect("link state within 20 s")
    .expect("link alive");
}

#[tokio::test]
async fn handshake_then_stanzas_both_ways_then_graceful_close() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut c = start(port, SECRET, |_| {});
    let mut peer = accept(&listener).await;
    assert!(peer.handshake("abc123", None).await, "digest matches");
    wait_connected(&mut c, true).await;

    peer.write("<message from='a@localhost/r' to='x@gw.localhost'><body>hi</body></message>")
        .await;
    let got = timeout(Duration::from_secs(10), c.inbound.recv())
        .await
        .expect("stanza within 10 s")
        .expect("open");
    assert_eq!(got.child_text("body", NS_COMPONENT).as_deref(), Some("hi"));

    c.link
        .outgoing
        .send(Element::new("presence", NS_COMPONENT).with_attr("to", "a@localhost"))
        .await;
    match timeout(Duration::from_secs(10), peer.reader.next()).await {
        Ok(Ok(StreamEvent::Stanza(e))) => assert_eq!(e.attr("to"), Some("a@localhost")),
        other => panic!("expected presence, got {other:?}"),
    }

    c.shutdown.send_replace(true);
    // A polite close: </stream:stream>, then the task ends cleanly.
    match timeout(Duration::from_secs(10), peer.reader.next()).await {
        Ok(Ok(StreamEvent::Close)) => {}
        other => panic!("expected stream close, got {other:?}"),
    }
    drop(peer);
    let res = timeout(Duration::from_secs(10), c.task)
        .await
        .expect("ends")
        .expect("join");
    assert!(res.is_ok());
}

#[tokio::test]
async fn a_refused_secret_is_fatal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let c = start(port, "wrong-secret", |_| {});
    let mut peer = accept(&listener).await;
    assert!(!peer.handshake("id1", None).await);
    let res = timeout(Duration::from_secs(10), c.task)
        .await
        .expect("ends")
        .expect("join");
    match res {
        Err(LinkError::Fatal(why)) => assert!(why.contains("secret"), "{why}"),
        Ok(()) => panic!("a refused secret must be fatal"),
    }
}

#[tokio::test]
async fn conflict_is_retried() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut c = start(port, SECRET, |_| {});
    let mut peer = accept(&listener).await;
    peer.handshake("id1", Some("<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>")).await;
    drop(peer);
    // ferry comes back and this time is let in.
    let mut peer = accept(&listener).await;
    assert!(peer.handshake("id2", None).await);
    wait_connected(&mut c, true).await;
}

async fn hostile(payload: &str) -> Option<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut c = start(port, SECRET, |_| {});
    let mut peer = accept(&listener).await;
    assert!(peer.handshake("h1", None).await);
    wait_connected(&mut c, true).await;
    let _ = peer.writer.write_all(payload.as_bytes()).await;
    let cond = peer.stream_error().await;
    drop(peer);
    // The link goes down, then ferry reconnects: it did not crash.
    let mut again = accept(&listener).await;
    assert!(again.handshake("h2", None).await);
    wait_connected(&mut c, true).await;
    cond
}

#[tokio::test]
async fn doctype_is_closed_with_restricted_xml() {
    let cond = hostile("<!DOCTYPE x [<!ENTITY lol 'lol'>]><message/>").await;
    assert_eq!(cond.as_deref(), Some("restricted-xml"));
}

#[tokio::test]
async fn oversized_stanza_is_closed_with_policy_violation() {
    let big = format!(
        "<message from='a@localhost' to='gw.localhost'><body>{}</body></message>",
        "x".repeat(600 * 1024)
    );
    let cond = hostile(&big).await;
    assert_eq!(cond.as_deref(), Some("policy-violation"));
}

#[tokio::test]
async fn deep_nesting_is_closed_with_policy_violation() {
    let cond = hostile(&format!("<message>{}", "<a>".repeat(5000))).await;
    assert_eq!(cond.as_deref(), Some("policy-violation"));
}

#[tokio::test]
async fn garbage_is_closed_with_not_well_formed() {
    let cond = hostile("<message><body></message>").await;
    assert_eq!(cond.as_deref(), Some("not-well-formed"));
}

#[tokio::test]
async fn a_silent_server_is_noticed_and_the_link_comes_back() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut c = start(port, SECRET, |cfg| {
        cfg.ping_after = Duration::from_secs(1);
        cfg.dead_after = Duration::from_secs(3);
    });
    let mut peer = accept(&listener).await;
    assert!(peer.handshake("k1", None).await);
    wait_connected(&mut c, true).await;
    // The keepalive ping arrives; we never answer it.
    match timeout(Duration::from_secs(15), peer.reader.next()).await {
        Ok(Ok(StreamEvent::Stanza(e))) => {
            assert!(e.child("ping", "urn:xmpp:ping").is_some(), "{e}")
        }
        other => panic!("expected a keepalive ping, got {other:?}"),
    }
    wait_connected(&mut c, false).await;
    let _keep = peer;
    let mut again = accept(&listener).await;
    assert!(again.handshake("k2", None).await);
    wait_connected(&mut c, true).await;
}

#[tokio::test]
async fn connection_refused_is_retried_until_the_server_appears() {
    // Reserve a port, close it, start ferry against it, then open it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut c = start(port, SECRET, |_| {});
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("rebind");
    let mut peer = accept(&listener).await;
    assert!(peer.handshake("r1", None).await);
    wait_connected(&mut c, true).await;
}
