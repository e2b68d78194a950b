//! XML in, XML out: a gateway with the fake bridge and an in-memory stream, no server.
//! Each test feeds literal stanzas to the router and checks the stanzas that come back.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry::component::{Frame, Outgoing};
use ferry::config::Config;
use ferry::gateway::Gateway;
use ferry::metrics::Metrics;
use ferry::store::{Cipher, Store};
use ferry::xml::{Element, NS_COMPONENT, NS_STANZA_ERRORS, parse_element};
use ferry_bridge_api::fake::FakeBridge;
use ferry_bridge_api::{AccountId, BridgeKind, InboundMessage, RemoteEvent, RemoteId};
use tokio::sync::{Notify, mpsc, watch};

const DOMAIN: &str = "gw.example.org";

struct Harness {
    gw: Arc<Gateway>,
    out: mpsc::Receiver<Frame>,
    /// Stanzas seen while looking for another one, offered first to later lookups.
    backlog: Vec<Element>,
    fake: FakeBridge,
    _shutdown: watch::Sender<bool>,
    _connected: watch::Sender<bool>,
}

async fn harness(needs_registration: bool) -> Harness {
    let cfg = Config::from_str_at(
        &format!(
            "[xmpp]\nallowed = [\"example.org\"]\nadmins = [\"boss@example.org\"]\n[rss]\ndomain = \"{DOMAIN}\"\nsecret = \"s\"\n"
        ),
        std::path::Path::new("/tmp"),
    )
    .expect("config");
    let store = Store::open("sqlite::memory:", Cipher::from_key([7; 32]))
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    let fake = FakeBridge::new(BridgeKind::Rss, needs_registration);
    let (out, rx) = Outgoing::channel(1024);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (conn_tx, connected) = watch::channel(true);
    let (ev_tx, ev_rx) = mpsc::channel(64);
    let gw = Arc::new(Gateway {
        kind: BridgeKind::Rss,
        domain: DOMAIN.into(),
        bridge: Arc::new(fake.clone()),
        store,
        out,
        access: cfg.xmpp.clone(),
        metrics: Metrics::default(),
        sessions: Mutex::default(),
        outbox_wake: Notify::new(),
        outbox_handoff: Default::default(),
        events: ev_tx,
        shutdown,
        started: Instant::now(),
        connected,
        settled: watch::Sender::new(0),
        caches: Default::default(),
    });
    tokio::spawn(Arc::clone(&gw).run_outbox());
    tokio::spawn(Arc::clone(&gw).run_relay(ev_rx));
    Harness {
        gw,
        out: rx,
        backlog: Vec::new(),
        fake,
        _shutdown: shutdown_tx,
        _connected: conn_tx,
    }
}

impl Harness {
    async fn recv(&self, xml: &str) {
        self.gw
            .handle(parse_element(xml, NS_COMPONENT).expect("test xml"))
            .await;
    }

    /// Moves the stanzas of the next frame sent out into the backlog, within a deadline.
    async fn fill(&mut self, what: &str) {
        let frame = tokio::time::timeout(Duration::from_secs(10), self.out.recv())
            .await
            .expect(what)
            .expect("channel open");
        self.backlog.extend(frame.into_elements());
    }

    /// The next stanza sent out, within a deadline.
    async fn next(&mut self) -> Element {
        while self.backlog.is_empty() {
            self.fill("a stanza within 10 s").await;
        }
        self.backlog.remove(0)
    }

    /// The next stanza matching `pred`, skipping others.
    async fn next_where(&mut self, pred: impl Fn(&Element) -> bool) -> Element {
        loop {
            if let Some(pos) = self.backlog.iter().position(&pred) {
                return self.backlog.remove(pos);
            }
            self.fill("a matching stanza within 10 s").await;
        }
    }

    /// The id of the message the next XEP-0184 receipt acknowledges, skipping other stanzas.
    async fn next_receipt_id(&mut self) -> Option<String> {
        self.next_where(|e| e.child("received", "urn:xmpp:receipts").is_some())
            .await
            .child("received", "urn:xmpp:receipts")
            .and_then(|r| r.attr("id"))
            .map(str::to_owned)
    }

    /// Waits (with a deadline) until a condition on the gateway holds.
    async fn until(&self, what: &str, cond: impl Fn(&Gateway) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond(&self.gw) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::task::yield_now().await;
        }
    }

    async fn iq(&mut self, xml: &str) -> Element {
        self.recv(xml).await;
        let id = parse_element(xml, NS_COMPONENT)
            .expect("xml")
            .attr("id")
            .expect("iq id")
            .to_owned();
        self.next_where(|e| e.name == "iq" && e.attr("id") == Some(&id))
            .await
    }

    async fn nothing_more(&mut self) {
        // A ping is a barrier: when its answer comes, everything before it was handled.
        let reply = self
            .iq("<iq type='get' id='barrier' from='alice@example.org/r' to='gw.example.org'><ping xmlns='urn:xmpp:ping'/></iq>")
            .await;
        assert_eq!(reply.attr("type"), Some("result"));
        assert!(self.out.try_recv().is_err(), "unexpected extra stanza");
        let unexpected: Vec<String> = self
            .backlog
            .drain(..)
            .filter(|e| e.name != "presence")
            .map(|e| e.to_string())
            .collect();
        assert!(unexpected.is_empty(), "unexpected stanzas: {unexpected:?}");
    }
}

fn condition(e: &Element) -> Option<String> {
    e.child("error", NS_COMPONENT)?
        .elements()
        .find(|c| c.ns == NS_STANZA_ERRORS && c.name != "text")
        .map(|c| c.name.to_string())
}

#[tokio::test]
async fn disco_info_names_the_gateway_and_its_features() {
    let mut h = harness(false).await;
    let r = h.iq("<iq type='get' id='d1' from='alice@example.org/r' to='gw.example.org'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(r.attr("to"), Some("alice@example.org/r"));
    let q = r
        .child("query", "http://jabber.org/protocol/disco#info")
        .expect("query");
    let id = q
        .elements()
        .find(|e| e.name == "identity")
        .expect("identity");
    assert_eq!(
        (id.attr("category"), id.attr("type")),
        (Some("headline"), Some("rss"))
    );
    let features: Vec<&str> = q
        .elements()
        .filter(|e| e.name == "feature")
        .filter_map(|e| e.attr("var"))
        .collect();
    for f in [
        "jabber:iq:register",
        "jabber:iq:gateway",
        "http://jabber.org/protocol/commands",
        "urn:xmpp:ping",
        "jabber:iq:version",
    ] {
        assert!(features.contains(&f), "missing {f}");
    }
}

#[tokio::test]
async fn strangers_are_forbidden_but_may_ask_public_questions() {
    let mut h = harness(false).await;
    let r = h.iq("<iq type='get' id='r1' from='eve@evil.example/r' to='gw.example.org'><query xmlns='jabber:iq:register'/></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("forbidden"));
    let r = h.iq("<iq type='get' id='v1' from='eve@evil.example/r' to='gw.example.org'><query xmlns='jabber:iq:version'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        r.child("query", "jabber:iq:version")
            .and_then(|q| q.child_text("name", "jabber:iq:version"))
            .as_deref(),
        Some("ferry")
    );
    let r = h.iq("<iq type='get' id='c1' from='eve@evil.example/r' to='gw.example.org'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    assert_eq!(
        r.child("query", "http://jabber.org/protocol/disco#items")
            .map(|q| q.elements().count()),
        Some(0)
    );
    h.recv("<message from='eve@evil.example/r' to='x@gw.example.org' id='m1'><body>hi</body></message>").await;
    let m = h.next().await;
    assert_eq!(condition(&m).as_deref(), Some("forbidden"));
    // Presence from a stranger is ignored, and an error is never answered.
    h.recv("<presence type='subscribe' from='eve@evil.example/r' to='gw.example.org'/>")
        .await;
    h.recv("<message type='error' from='eve@evil.example/r' to='x@gw.example.org'/>")
        .await;
    h.nothing_more().await;
}

#[tokio::test]
async fn unknown_iq_gets_service_unavailable() {
    let mut h = harness(false).await;
    let r = h.iq("<iq type='get' id='u1' from='alice@example.org/r' to='gw.example.org'><query xmlns='urn:example:nothing'/></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("service-unavailable"));
    let r = h.iq("<iq type='set' id='u2' from='alice@example.org/r' to='x@gw.example.org'><query xmlns='urn:example:nothing'/></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("service-unavailable"));
}

#[tokio::test]
async fn registration_flow_with_form_wrong_password_and_remove() {
    let mut h = harness(true).await;
    let r = h.iq("<iq type='get' id='g1' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:register'/></iq>").await;
    let q = r.child("query", "jabber:iq:register").expect("query");
    let x = q.child("x", "jabber:x:data").expect("form");
    assert!(
        x.elements()
            .any(|f| f.attr("var") == Some("password") && f.attr("type") == Some("text-private"))
    );
    assert!(q.child("registered", "jabber:iq:register").is_none());

    // Unregistered users cannot send.
    h.recv("<message from='alice@example.org/r' to='bob@gw.example.org' id='early'><body>hi</body></message>").await;
    let m = h.next().await;
    assert_eq!(condition(&m).as_deref(), Some("registration-required"));

    // A refused login is not-authorized with the bridge's text.
    let r = h.iq("<iq type='set' id='s0' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='email'><value>alice@mail</value></field><field var='password'><value>wrong</value></field></x></query></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("not-authorized"));

    // A missing required field is named.
    let r = h.iq("<iq type='set' id='s1' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='email'><value>alice@mail</value></field></x></query></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("not-acceptable"));

    let r = h.iq("<iq type='set' id='s2' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='email'><value>alice@mail</value></field><field var='password'><value>pw</value></field></x></query></iq>").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // XEP-0100: the gateway asks to be in the roster.
    let p = h
        .next_where(|e| e.name == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(p.attr("to"), Some("alice@example.org"));
    assert!(
        h.fake
            .wait_session(AccountId(1), Duration::from_secs(10))
            .await
    );

    // Now registered: the form says so, and subscribing to the gateway is accepted.
    let r = h.iq("<iq type='get' id='g2' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:register'/></iq>").await;
    assert!(
        r.child("query", "jabber:iq:register")
            .and_then(|q| q.child("registered", "jabber:iq:register"))
            .is_some()
    );
    h.recv("<presence type='subscribe' from='alice@example.org/r' to='gw.example.org'/>")
        .await;
    let p = h
        .next_where(|e| e.name == "presence" && e.attr("type") == Some("subscribed"))
        .await;
    assert_eq!(p.attr("from"), Some(DOMAIN));

    let r = h.iq("<iq type='set' id='rm' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:register'><remove/></query></iq>").await;
    assert_eq!(r.attr("type"), Some("result"));
    assert!(
        h.gw.store
            .account(BridgeKind::Rss, "alice@example.org")
            .await
            .expect("store")
            .is_none()
    );
}

#[tokio::test]
async fn gateway_prompt_maps_an_address_or_refuses_it() {
    let mut h = harness(false).await;
    let r = h.iq("<iq type='get' id='p1' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:gateway'/></iq>").await;
    let q = r.child("query", "jabber:iq:gateway").expect("query");
    assert!(q.child("prompt", "jabber:iq:gateway").is_some());
    assert!(q.child("desc", "jabber:iq:gateway").is_some());
    let r = h.iq("<iq type='set' id='p2' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:gateway'><prompt>bob.smith</prompt></query></iq>").await;
    assert_eq!(
        r.child("query", "jabber:iq:gateway")
            .and_then(|q| q.child_text("jid", "jabber:iq:gateway"))
            .as_deref(),
        Some("bob.smith@gw.example.org")
    );
    let r = h.iq("<iq type='set' id='p3' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:gateway'><prompt>Not Valid!</prompt></query></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("jid-malformed"));
}

#[tokio::test]
async fn message_goes_through_the_outbox_and_the_receipt_comes_back() {
    let mut h = harness(false).await;
    h.recv("<message type='chat' from='alice@example.org/phone' to='bob@gw.example.org' id='m1'><body>hello bob</body><request xmlns='urn:xmpp:receipts'/><thread>t1</thread></message>").await;
    let receipt = h
        .next_where(|e| e.child("received", "urn:xmpp:receipts").is_some())
        .await;
    assert_eq!(receipt.attr("from"), Some("bob@gw.example.org"));
    assert_eq!(receipt.attr("to"), Some("alice@example.org/phone"));
    assert_eq!(
        receipt
            .child("received", "urn:xmpp:receipts")
            .and_then(|r| r.attr("id")),
        Some("m1")
    );
    let sent = h.fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, RemoteId("bob".into()));
    assert_eq!(sent[0].2.body, "hello bob");
    assert_eq!(sent[0].2.thread.as_deref(), Some("t1"));
}

#[tokio::test]
async fn permanent_failure_comes_back_as_a_message_error() {
    let mut h = harness(false).await;
    h.recv("<message type='chat' from='alice@example.org/phone' to='reject-me@gw.example.org' id='m2'><body>hi</body></message>").await;
    let err = h
        .next_where(|e| e.name == "message" && e.attr("type") == Some("error"))
        .await;
    assert_eq!(err.attr("id"), Some("m2"));
    assert_eq!(condition(&err).as_deref(), Some("recipient-unavailable"));
    assert!(err.to_string().contains("mailbox does not exist"));
}

#[tokio::test]
async fn a_send_that_panics_spares_the_rest_of_its_pass() {
    let mut h = harness(false).await;
    h.recv("<message type='chat' from='alice@example.org/phone' to='panic-now@gw.example.org' id='p1'><body>boom</body><request xmlns='urn:xmpp:receipts'/></message>").await;
    h.recv("<message type='chat' from='alice@example.org/phone' to='bob@gw.example.org' id='p2'><body>hello</body><request xmlns='urn:xmpp:receipts'/></message>").await;
    assert_eq!(
        h.next_receipt_id().await.as_deref(),
        Some("p2"),
        "only the message whose send did not panic gets a receipt"
    );
    let sent = h.fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, RemoteId("bob".into()));
    // The worker is still running: a later message goes through too.
    h.recv("<message type='chat' from='alice@example.org/phone' to='carol@gw.example.org' id='p3'><body>again</body><request xmlns='urn:xmpp:receipts'/></message>").await;
    assert_eq!(h.next_receipt_id().await.as_deref(), Some("p3"));
}

#[tokio::test]
async fn malformed_contact_address_is_jid_malformed() {
    let mut h = harness(false).await;
    h.recv("<message type='chat' from='alice@example.org/phone' to='NOT\\20valid@gw.example.org' id='m3'><body>hi</body></message>").await;
    let err = h.next_where(|e| e.name == "message").await;
    assert_eq!(condition(&err).as_deref(), Some("jid-malformed"));
}

#[tokio::test]
async fn inbound_message_introduces_the_contact_once_and_drops_duplicates() {
    let mut h = harness(false).await;
    // A message creates alice's account and session (no registration needed here).
    h.recv("<message type='chat' from='alice@example.org/phone' to='carol@gw.example.org' id='m4'><body>hi</body></message>").await;
    assert!(
        h.fake
            .wait_session(AccountId(1), Duration::from_secs(10))
            .await
    );
    let msg = InboundMessage {
        from: Some(RemoteId("dave".into())),
        remote_message_id: "r-1".into(),
        body: "hello alice".into(),
        nick: Some("Dave D.".into()),
        ..Default::default()
    };
    h.fake
        .inject(AccountId(1), RemoteEvent::Message(msg.clone()))
        .await
        .expect("inject");
    h.fake
        .inject(AccountId(1), RemoteEvent::Message(msg))
        .await
        .expect("inject");
    let sub = h
        .next_where(|e| e.name == "presence" && e.attr("type") == Some("subscribe"))
        .await;
    assert_eq!(sub.attr("from"), Some("dave@gw.example.org"));
    assert_eq!(
        sub.child_text("nick", "http://jabber.org/protocol/nick")
            .as_deref(),
        Some("Dave D.")
    );
    let m = h
        .next_where(|e| e.name == "message" && e.child("body", NS_COMPONENT).is_some())
        .await;
    assert_eq!(m.attr("from"), Some("dave@gw.example.org"));
    assert_eq!(m.attr("to"), Some("alice@example.org"));
    assert_eq!(m.attr("type"), Some("chat"));
    h.until("the duplicate to be counted", |gw| {
        gw.metrics.counter(
            "ferry_messages_total",
            &[("direction", "in"), ("outcome", "duplicate")],
        ) == 1
    })
    .await;
    h.nothing_more().await;
}

#[tokio::test]
async fn commands_by_ad_hoc_and_by_chat() {
    let mut h = harness(false).await;
    let r = h.iq("<iq type='get' id='l1' from='alice@example.org/r' to='gw.example.org'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>").await;
    let nodes: Vec<String> = r
        .child("query", "http://jabber.org/protocol/disco#items")
        .map(|q| {
            q.elements()
                .filter_map(|i| i.attr("node").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert!(nodes.contains(&"help".to_owned()) && nodes.contains(&"status".to_owned()));
    assert!(!nodes.contains(&"stats".to_owned()), "stats is for admins");

    let r = h.iq("<iq type='set' id='x1' from='alice@example.org/r' to='gw.example.org'><command xmlns='http://jabber.org/protocol/commands' node='status' action='execute'/></iq>").await;
    let cmd = r
        .child("command", "http://jabber.org/protocol/commands")
        .expect("command");
    assert_eq!(cmd.attr("status"), Some("completed"));

    // A non-admin asking for stats is refused; an admin gets numbers.
    let r = h.iq("<iq type='set' id='x2' from='alice@example.org/r' to='gw.example.org'><command xmlns='http://jabber.org/protocol/commands' node='stats' action='execute'/></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("forbidden"));
    h.recv("<message type='chat' from='boss@example.org/r' to='gw.example.org' id='c1'><body>stats</body></message>").await;
    let m = h.next_where(|e| e.name == "message").await;
    let body = m.child_text("body", NS_COMPONENT).unwrap_or_default();
    assert!(body.contains("registered users: 0"), "{body}");
    h.recv("<message type='chat' from='alice@example.org/r' to='gw.example.org' id='c2'><body>help</body></message>").await;
    let m = h.next_where(|e| e.name == "message").await;
    assert!(
        m.child_text("body", NS_COMPONENT)
            .unwrap_or_default()
            .contains("status")
    );
}

#[tokio::test]
async fn contact_answers_disco_vcard_and_presence() {
    let mut h = harness(false).await;
    let r = h.iq("<iq type='get' id='v1' from='alice@example.org/r' to='bob@gw.example.org'><vCard xmlns='vcard-temp'/></iq>").await;
    assert_eq!(
        r.child("vCard", "vcard-temp")
            .and_then(|v| v.child_text("FN", "vcard-temp"))
            .as_deref(),
        Some("bob")
    );
    h.recv("<presence type='subscribe' from='alice@example.org/r' to='bob@gw.example.org'/>")
        .await;
    let p = h.next_where(|e| e.name == "presence").await;
    assert_eq!(p.attr("type"), Some("subscribed"));
}

/// The nodes of the commands list as `from` sees it.
async fn command_nodes(h: &mut Harness, from: &str, id: &str) -> Vec<String> {
    let r = h.iq(&format!("<iq type='get' id='{id}' from='{from}' to='gw.example.org'><query xmlns='http://jabber.org/protocol/disco#items' node='http://jabber.org/protocol/commands'/></iq>")).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    r.child("query", "http://jabber.org/protocol/disco#items")
        .map(|q| {
            q.elements()
                .filter_map(|i| i.attr("node").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

async fn register_directly(h: &Harness, jid: &str) {
    h.gw.store
        .upsert_account(BridgeKind::Rss, jid, &Default::default())
        .await
        .expect("store");
}

/// The body of the next chat message from the bare gateway JID to `to`.
async fn gateway_says_to(h: &mut Harness, to: &str) -> String {
    let m = h
        .next_where(|e| {
            e.name == "message" && e.attr("from") == Some(DOMAIN) && e.attr("to") == Some(to)
        })
        .await;
    assert_eq!(m.attr("type"), Some("chat"), "{m}");
    m.child_text("body", NS_COMPONENT).expect("body")
}

#[tokio::test]
async fn announce_by_ad_hoc_reaches_every_registered_user() {
    let mut h = harness(false).await;
    register_directly(&h, "alice@example.org").await;
    register_directly(&h, "carol@example.org").await;
    assert!(
        command_nodes(&mut h, "boss@example.org/r", "l1")
            .await
            .contains(&"announce".to_owned())
    );

    // Executing it first asks for the text, in a multi-line field.
    let r = h.iq("<iq type='set' id='a1' from='boss@example.org/r' to='gw.example.org'><command xmlns='http://jabber.org/protocol/commands' node='announce' action='execute'/></iq>").await;
    let cmd = r
        .child("command", "http://jabber.org/protocol/commands")
        .expect("command");
    assert_eq!(cmd.attr("status"), Some("executing"), "{r}");
    let session = cmd.attr("sessionid").expect("sessionid").to_owned();
    let field = cmd
        .child("x", "jabber:x:data")
        .and_then(|x| x.elements().find(|f| f.attr("var") == Some("text")))
        .expect("text field");
    assert_eq!(field.attr("type"), Some("text-multi"), "{field}");

    // A text-multi value comes as one <value/> per line.
    let r = h.iq(&format!("<iq type='set' id='a2' from='boss@example.org/r' to='gw.example.org'><command xmlns='http://jabber.org/protocol/commands' node='announce' sessionid='{session}'><x xmlns='jabber:x:data' type='submit'><field var='text'><value>Maintenance tonight.</value><value>Back by 02:00.</value></field></x></command></iq>")).await;
    let cmd = r
        .child("command", "http://jabber.org/protocol/commands")
        .expect("command");
    assert_eq!(cmd.attr("status"), Some("completed"), "{r}");
    assert_eq!(
        cmd.child_text("note", "http://jabber.org/protocol/commands")
            .as_deref(),
        Some("announced to 2 user(s)")
    );
    for user in ["alice@example.org", "carol@example.org"] {
        assert_eq!(
            gateway_says_to(&mut h, user).await,
            "Maintenance tonight.\nBack by 02:00."
        );
    }
    // The admin is not registered, so gets nothing but the answer.
    h.nothing_more().await;
}

#[tokio::test]
async fn announce_by_chat_reaches_every_registered_user() {
    let mut h = harness(false).await;
    register_directly(&h, "alice@example.org").await;
    register_directly(&h, "boss@example.org").await;
    h.recv("<message type='chat' from='boss@example.org/desk' to='gw.example.org' id='c1'><body>announce New feeds are polled hourly.</body></message>").await;
    // The admin's own resource hears the count; both registered users (the admin among
    // them) get the text at their bare JID.
    assert_eq!(
        gateway_says_to(&mut h, "boss@example.org/desk").await,
        "announced to 2 user(s)"
    );
    for user in ["alice@example.org", "boss@example.org"] {
        assert_eq!(
            gateway_says_to(&mut h, user).await,
            "New feeds are polled hourly."
        );
    }
    h.nothing_more().await;

    // Nothing to announce sends nothing.
    h.recv("<message type='chat' from='boss@example.org/desk' to='gw.example.org' id='c2'><body>announce   </body></message>").await;
    let reply = gateway_says_to(&mut h, "boss@example.org/desk").await;
    assert!(reply.contains("nothing to announce"), "{reply}");
    h.nothing_more().await;
}

#[tokio::test]
async fn admin_commands_are_hidden_from_non_admins_and_forbidden_to_them() {
    let mut h = harness(false).await;
    register_directly(&h, "carol@example.org").await;
    let admin = command_nodes(&mut h, "boss@example.org/r", "l1").await;
    let user = command_nodes(&mut h, "alice@example.org/r", "l2").await;
    for node in ["stats", "users", "announce"] {
        assert!(admin.contains(&node.to_owned()), "admins see {node}");
        assert!(!user.contains(&node.to_owned()), "users do not see {node}");
    }
    let r = h.iq("<iq type='get' id='i1' from='alice@example.org/r' to='gw.example.org'><query xmlns='http://jabber.org/protocol/disco#info' node='announce'/></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("item-not-found"));

    // Running one anyway is forbidden (an auth error), not item-not-found.
    for node in ["stats", "users", "announce"] {
        let r = h.iq(&format!("<iq type='set' id='x-{node}' from='alice@example.org/r' to='gw.example.org'><command xmlns='http://jabber.org/protocol/commands' node='{node}' action='execute'/></iq>")).await;
        assert_eq!(condition(&r).as_deref(), Some("forbidden"), "{node}: {r}");
        assert_eq!(
            r.child("error", NS_COMPONENT).and_then(|e| e.attr("type")),
            Some("auth"),
            "{r}"
        );
    }
    // Even with the form filled in, nothing is announced.
    let r = h.iq("<iq type='set' id='x-form' from='alice@example.org/r' to='gw.example.org'><command xmlns='http://jabber.org/protocol/commands' node='announce'><x xmlns='jabber:x:data' type='submit'><field var='text'><value>hi all</value></field></x></command></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("forbidden"), "{r}");
    // A command that does not exist is still item-not-found.
    let r = h.iq("<iq type='set' id='x-none' from='alice@example.org/r' to='gw.example.org'><command xmlns='http://jabber.org/protocol/commands' node='frobnicate' action='execute'/></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("item-not-found"), "{r}");

    // By chat the refusal is a plain-text answer, and nobody hears the announcement.
    h.recv("<message type='chat' from='alice@example.org/r' to='gw.example.org' id='c1'><body>announce hi all</body></message>").await;
    let reply = gateway_says_to(&mut h, "alice@example.org/r").await;
    assert!(reply.contains("for admins only"), "{reply}");
    h.recv("<message type='chat' from='alice@example.org/r' to='gw.example.org' id='c2'><body>frobnicate</body></message>").await;
    let reply = gateway_says_to(&mut h, "alice@example.org/r").await;
    assert!(reply.contains("unknown command"), "{reply}");
    h.nothing_more().await;
}

#[tokio::test]
async fn registration_required_is_an_auth_error() {
    let mut h = harness(true).await;
    h.recv("<message from='alice@example.org/r' to='bob@gw.example.org' id='early'><body>hi</body></message>").await;
    let m = h.next_where(|e| e.name == "message").await;
    assert_eq!(condition(&m).as_deref(), Some("registration-required"));
    assert_eq!(
        m.child("error", NS_COMPONENT).and_then(|e| e.attr("type")),
        Some("auth"),
        "{m}"
    );
    // Unregistering without a registration says the same.
    let r = h.iq("<iq type='set' id='rm' from='alice@example.org/r' to='gw.example.org'><query xmlns='jabber:iq:register'><remove/></query></iq>").await;
    assert_eq!(condition(&r).as_deref(), Some("registration-required"));
    assert_eq!(
        r.child("error", NS_COMPONENT).and_then(|e| e.attr("type")),
        Some("auth"),
        "{r}"
    );
}

/// Strangers may ask a contact's disco#info (SPEC §4), but what they ask about is not
/// recorded: only allowed users' contacts become identities in the store.
#[tokio::test]
async fn strangers_asking_about_contacts_do_not_grow_the_store() {
    let mut h = harness(false).await;
    for (id, from, recorded) in [
        ("s1", "eve@elsewhere.net/x", false),
        ("a1", "alice@example.org/x", true),
    ] {
        h.recv(&format!(
            "<iq type='get' id='{id}' from='{from}' to='carol@{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
        ))
        .await;
        let r = h.next_where(|e| e.attr("id") == Some(id)).await;
        assert_eq!(r.attr("type"), Some("result"), "{r}");
        let stored =
            h.gw.store
                .identity_by_localpart(BridgeKind::Rss, "carol")
                .await
                .expect("store");
        assert_eq!(stored.is_some(), recorded, "after {from} asked: {stored:?}");
    }
}
