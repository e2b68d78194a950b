//! Proves the test bed itself: a real Prosody starts on free ports, real clients log in and
//! talk through it, a raw XEP-0114 component authenticates on its component port, and the
//! server restarts with its accounts intact.

mod common;

use std::time::Duration;

use common::client::{NS_DISCO_INFO, NS_DISCO_ITEMS, login, next_id, try_login};
use common::prosody::Prosody;
use ferry::xml::{
    Element, Limits, NS_COMPONENT, NS_STREAM, NS_STREAM_ERRORS, StreamEvent, StreamReader,
};
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);
const GATEWAY: &str = "email.localhost";
const SECRET: &str = "gw-secret";

async fn start() -> Prosody {
    Prosody::start(
        &[(GATEWAY, SECRET)],
        &[("alice", "alice-pw"), ("bob", "bob pw & <ünïcode>")],
    )
    .await
}

fn is_message_with_id(id: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e| e.name == "message" && e.attr("id") == Some(id)
}

#[tokio::test]
async fn two_users_chat_and_disco_the_server() {
    let prosody = start().await;
    let mut alice = login(prosody.c2s_port, "alice", "alice-pw", "desk").await;
    let mut bob = login(prosody.c2s_port, "bob", "bob pw & <ünïcode>", "phone").await;
    assert_eq!(alice.jid, "alice@localhost/desk");
    assert_eq!(bob.jid, "bob@localhost/phone");
    alice.send_presence().await;
    bob.send_presence().await;

    let id = next_id();
    alice
        .send(&format!(
            "<message to='bob@localhost' type='chat' id='{id}'><body>hello bob</body></message>"
        ))
        .await;
    let m = bob.recv(WAIT, is_message_with_id(&id)).await;
    assert_eq!(m.attr("from"), Some(alice.jid.as_str()));
    assert_eq!(m.child_text("body", &m.ns).as_deref(), Some("hello bob"));

    // The same through send_el, with a stanza built in the component namespace.
    let id2 = next_id();
    let el = Element::new("message", NS_COMPONENT)
        .with_attr("to", alice.jid.as_str())
        .with_attr("type", "chat")
        .with_attr("id", id2.as_str())
        .with_child(Element::text_child("body", NS_COMPONENT, "hi alice"));
    bob.send_el(&el).await;
    let m = alice.recv(WAIT, is_message_with_id(&id2)).await;
    assert_eq!(m.child_text("body", &m.ns).as_deref(), Some("hi alice"));

    let info = alice
        .iq(&format!(
            "<iq type='get' to='localhost' id='{}'><query xmlns='{NS_DISCO_INFO}'/></iq>",
            next_id()
        ))
        .await;
    assert_eq!(info.attr("type"), Some("result"), "{info}");
    let query = info
        .child("query", NS_DISCO_INFO)
        .expect("disco#info query");
    assert!(
        query
            .elements()
            .any(|e| e.name == "identity" && e.attr("category") == Some("server")),
        "{info}"
    );

    // The gateway domain is listed as a service of the server.
    let items = alice
        .iq(&format!(
            "<iq type='get' to='localhost' id='{}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>",
            next_id()
        ))
        .await;
    let query = items
        .child("query", NS_DISCO_ITEMS)
        .expect("disco#items query");
    assert!(
        query.elements().any(|e| e.attr("jid") == Some(GATEWAY)),
        "{items}"
    );

    // Nothing else is addressed to bob with that id.
    bob.expect_silence(Duration::from_millis(200), is_message_with_id(&id))
        .await;
}

#[tokio::test]
async fn bad_password_is_refused_and_new_users_can_be_added_live() {
    let prosody = start().await;
    let err = try_login(prosody.c2s_port, "alice", "wrong", "x")
        .await
        .err()
        .expect("a wrong password must fail");
    assert!(err.contains("not-authorized"), "{err}");

    prosody.add_user("carol", "carol-pw");
    let carol = login(prosody.c2s_port, "carol", "carol-pw", "r").await;
    assert_eq!(carol.jid, "carol@localhost/r");
    carol.close().await;
}

/// Connects as the gateway component (XEP-0114) and returns the stream and its reader.
async fn connect_component(
    port: u16,
) -> (
    tokio::net::tcp::OwnedWriteHalf,
    StreamReader<tokio::net::tcp::OwnedReadHalf>,
) {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the component port");
    let (rh, mut wh) = tcp.into_split();
    wh.write_all(ferry::xml::stream_header(GATEWAY).as_bytes())
        .await
        .expect("send the stream header");
    let mut reader = StreamReader::new(rh, Limits::default());
    let Ok(StreamEvent::Open(header)) = reader.next().await else {
        panic!("no stream header from Prosody's component port")
    };
    let stream_id = header.attr("id").expect("stream id").to_owned();
    let digest = hex::encode(Sha1::digest(format!("{stream_id}{SECRET}").as_bytes()));
    wh.write_all(format!("<handshake>{digest}</handshake>").as_bytes())
        .await
        .expect("send the handshake");
    match reader.next().await {
        Ok(StreamEvent::Stanza(h)) if h.is("handshake", NS_COMPONENT) => {}
        other => panic!("component handshake refused: {other:?}"),
    }
    (wh, reader)
}

#[tokio::test]
async fn component_authenticates_and_gets_messages_for_its_domain() {
    let prosody = start().await;
    let (mut wh, mut reader) = connect_component(prosody.component_port).await;

    let alice = login(prosody.c2s_port, "alice", "alice-pw", "desk").await;
    let id = next_id();
    alice
        .send(&format!(
            "<message to='someone@{GATEWAY}' id='{id}'><body>to the gateway</body></message>"
        ))
        .await;
    let got = tokio::time::timeout(WAIT, reader.next())
        .await
        .expect("the component got nothing");
    let Ok(StreamEvent::Stanza(m)) = got else {
        panic!("component stream: {got:?}\n{}", prosody.log())
    };
    assert!(m.is("message", NS_COMPONENT), "{m}");
    assert_eq!(m.attr("from"), Some(alice.jid.as_str()));
    assert_eq!(m.attr("id"), Some(id.as_str()));

    // And back: the component writes as someone@gateway to alice.
    let mut alice = alice;
    let id2 = next_id();
    wh.write_all(
        format!(
            "<message from='someone@{GATEWAY}' to='{}' id='{id2}'><body>reply</body></message>",
            alice.jid
        )
        .as_bytes(),
    )
    .await
    .expect("component write");
    let m = alice.recv(WAIT, is_message_with_id(&id2)).await;
    assert_eq!(m.child_text("body", &m.ns).as_deref(), Some("reply"));
}

#[tokio::test]
async fn restart_keeps_ports_and_accounts() {
    let mut prosody = start().await;
    let (c2s, component) = (prosody.c2s_port, prosody.component_port);
    let mut alice = login(c2s, "alice", "alice-pw", "desk").await;

    prosody.restart().await;
    assert_eq!((prosody.c2s_port, prosody.component_port), (c2s, component));
    assert!(prosody.is_running());
    // The old session was closed gracefully, with a stream error, by the old process.
    let why = alice.wait_closed(WAIT).await;
    assert!(
        alice
            .backlog()
            .iter()
            .any(|e| e.is("error", NS_STREAM)
                && e.child("system-shutdown", NS_STREAM_ERRORS).is_some()),
        "{why}: {:?}\n{}",
        alice.backlog(),
        prosody.log()
    );

    let mut alice = login(c2s, "alice", "alice-pw", "desk").await;
    let pong = alice
        .iq(&format!(
            "<iq type='get' to='localhost' id='{}'><ping xmlns='urn:xmpp:ping'/></iq>",
            next_id()
        ))
        .await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
    let _component = connect_component(component).await;

    prosody.stop().await;
    assert!(!prosody.is_running());
    assert!(
        prosody.log().contains("Shutdown complete"),
        "{}",
        prosody.log()
    );
}
