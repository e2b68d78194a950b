//! The SMS bridge end to end with a provider that runs here: real Prosody, ferry with the
//! real SMS bridge and SQLite, and a real Kannel 1.4.5 (bearerbox, smsbox and the fake SMS
//! centre, see `bridges/sms/tests/common/kannel.rs`) whose sms-service `get-url` points at
//! ferry's inbound hook and which calls ferry's `dlr-url` back with delivery reports.
//!
//! Covered: registration by claiming a number (the gateway's presence names it, `/healthz`
//! is 200); texts out (GSM-7 and UCS-2) reaching the fake SMS centre exactly, with the fake
//! SMSC's delivery report coming back as an XEP-0184 receipt; texts in (ASCII and UCS-2)
//! reaching the user, after a subscription request from the new contact; STOP and START;
//! and Kannel refusing ferry's password, which shows on `/healthz` (503 naming the
//! provider), on the gateway's presence (`xa` with the reason) and as an error on a text.

mod common;

// The harness carries its own `#![allow(dead_code)]`.
#[path = "../bridges/sms/tests/common/kannel.rs"]
mod kannel;

use std::time::Duration;

use common::client::{self, Client, body, condition, error_text};
use common::prosody::Prosody;
use ferry::app::Running;
use ferry::config::Config;
use ferry::xml::Element;
use ferry_bridge_api::BridgeKind;
use kannel::{Kannel, KannelOptions, SentText};

const GW: &str = "sms.localhost";
const SECRET: &str = "sms-secret";
const NS_CLIENT: &str = "jabber:client";
const NS_RECEIPTS: &str = "urn:xmpp:receipts";
const WAIT: Duration = Duration::from_secs(20);
const KANNEL_USER: &str = "ferry";
const KANNEL_PASSWORD: &str = "kannel-pw";
const TOKEN: &str = "tok-123";
const ALICE_NUMBER: &str = "+12015550100";
const FRIEND: &str = "+12015550123";

struct Bed {
    prosody: Prosody,
    kannel: Kannel,
    ferry: Running,
    /// `http://127.0.0.1:PORT`: ferry's [http], also its public_url.
    http: String,
    web: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// Prosody, then Kannel (its sms-service pointing at ferry's port, picked first), then
/// ferry configured with `password` for Kannel's sendsms user.
async fn bed(password: &str) -> Bed {
    // Held until just before ferry binds it, so neither Prosody nor Kannel picks it.
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = reserved.local_addr().expect("addr").port();
    let http = format!("http://127.0.0.1:{port}");
    let prosody = Prosody::start(&[(GW, SECRET)], &[("alice", "alice")]).await;
    let kannel = Kannel::start(KannelOptions {
        inbound_url: format!(
            "{http}/sms/kannel/inbound?token={TOKEN}&from=%p&to=%P&id=%I&text=%b&charset=%C&coding=%c"
        ),
        username: KANNEL_USER.into(),
        password: KANNEL_PASSWORD.into(),
    })
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::from_str_at(
        &format!(
            r#"[xmpp]
host = "127.0.0.1"
port = {component_port}
allowed = ["localhost"]
[http]
listen = "127.0.0.1:{port}"
public_url = "{http}"
[sms]
domain = "{GW}"
secret = "{SECRET}"
default_region = "US"
[[sms.provider]]
name = "kannel"
kind = "kannel"
sendsms_url = "{sendsms_url}"
username = "{KANNEL_USER}"
password = "{password}"
inbound_token = "{TOKEN}"
[[sms.number]]
number = "{ALICE_NUMBER}"
provider = "kannel"
owner = "alice@localhost"
"#,
            component_port = prosody.component_port,
            sendsms_url = kannel.sendsms_url(),
        ),
        dir.path(),
    )
    .expect("config");
    drop(reserved);
    let ferry = common::start_ferry(&cfg, BridgeKind::Sms, &prosody).await;
    Bed {
        prosody,
        kannel,
        ferry,
        http,
        web: reqwest::Client::new(),
        _dir: dir,
    }
}

impl Bed {
    async fn login(&self, user: &str) -> Client {
        let c = client::login(self.prosody.c2s_port, user, user, "test").await;
        c.send_presence().await;
        c
    }

    async fn healthz(&self) -> (u16, String) {
        let r = self
            .web
            .get(format!("{}/healthz", self.http))
            .send()
            .await
            .expect("healthz answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }

    /// The next text at the fake SMS centre; panics with Kannel's logs when none comes.
    async fn next_sent(&self) -> SentText {
        match self.kannel.next_sent(WAIT).await {
            Some(t) => t,
            None => panic!(
                "nothing reached the fake SMSC within {WAIT:?}:\n{}",
                self.kannel.logs()
            ),
        }
    }

    /// Stops ferry (and waits for it), then Prosody and Kannel (killed on drop).
    async fn stop(self, clients: Vec<Client>) {
        for c in clients {
            c.close().await;
        }
        self.ferry.shutdown();
        tokio::time::timeout(WAIT, self.ferry.wait())
            .await
            .expect("ferry stops in time")
            .expect("ferry stops cleanly");
        let mut prosody = self.prosody;
        prosody.stop().await;
        drop(self.kannel);
    }
}

fn contact(number: &str) -> String {
    format!("{number}@{GW}")
}

fn chat_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e: &Element| {
        e.name == "message"
            && e.attr("from") == Some(from)
            && e.attr("type") == Some("chat")
            && e.child("body", NS_CLIENT).is_some()
    }
}

fn subscribe_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e: &Element| {
        e.name == "presence" && e.attr("type") == Some("subscribe") && e.attr("from") == Some(from)
    }
}

/// Available presence from the gateway whose `<status/>` satisfies `pred`.
fn gateway_presence(pred: impl Fn(&str) -> bool) -> impl Fn(&Element) -> bool {
    move |e: &Element| {
        e.name == "presence"
            && e.attr("from") == Some(GW)
            && e.attr("type").is_none()
            && e.child_text("status", NS_CLIENT).is_some_and(|s| pred(&s))
    }
}

async fn register(c: &mut Client, id: &str, number: &str) -> Element {
    c.iq(&format!(
        "<iq type='set' id='{id}' to='{GW}'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='number'><value>{number}</value></field></x></query></iq>"
    ))
    .await
}

/// Registers alice with her number and waits for the gateway's subscription request.
async fn register_alice(alice: &mut Client) {
    let r = register(alice, "ra", ALICE_NUMBER).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice.recv(WAIT, subscribe_from(GW)).await;
}

/// Sends a chat message asking for a receipt.
async fn text(alice: &Client, id: &str, to: &str, body: &str) {
    alice
        .send(&format!(
            "<message type='chat' id='{id}' to='{to}'><body>{body}</body><request xmlns='{NS_RECEIPTS}'/></message>"
        ))
        .await;
}

/// Waits for the XEP-0184 receipt for `id`, which must come from `from`.
async fn receipt(alice: &mut Client, id: &str, from: &str) {
    let r = alice
        .recv(WAIT, |e| {
            e.name == "message"
                && e.child("received", NS_RECEIPTS)
                    .is_some_and(|r| r.attr("id") == Some(id))
        })
        .await;
    assert_eq!(r.attr("from"), Some(from), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_out_and_in_through_kannel_with_receipts_and_stop() {
    let bed = bed(KANNEL_PASSWORD).await;
    let mut alice = bed.login("alice").await;
    let friend = contact(FRIEND);

    // 1. Registration: the gateway asks alice to add it, and its presence names her number
    // and its provider. Kannel took ferry's credentials at start: healthy.
    register_alice(&mut alice).await;
    let p = alice
        .recv(
            WAIT,
            gateway_presence(|s| s.contains(&format!("{ALICE_NUMBER} via kannel"))),
        )
        .await;
    assert!(p.child("show", NS_CLIENT).is_none(), "{p}");
    let (status, why) = bed.healthz().await;
    assert_eq!(status, 200, "{why}");

    // 2. Out: the text reaches the fake SMSC from alice's number, exactly; the fake SMSC's
    // delivery report (through Kannel's dlr-url to ferry) becomes a receipt.
    text(&alice, "out-1", &friend, "Hello from XMPP &amp; ferry").await;
    let sent = bed.next_sent().await;
    assert_eq!(
        sent,
        SentText {
            from: ALICE_NUMBER.into(),
            to: FRIEND.into(),
            text: "Hello from XMPP & ferry".into(),
            coding: "text".into(),
        }
    );
    receipt(&mut alice, "out-1", &friend).await;

    // Beyond GSM-7: UCS-2, the emoji as a surrogate pair, back to the same text.
    text(&alice, "out-2", &friend, "Grüße 👋").await;
    let sent = bed.next_sent().await;
    assert_eq!(
        (sent.from.as_str(), sent.to.as_str()),
        (ALICE_NUMBER, FRIEND)
    );
    assert_eq!(
        (sent.coding.as_str(), sent.text.as_str()),
        ("ucs-2", "Grüße 👋")
    );
    receipt(&mut alice, "out-2", &friend).await;

    // 3. In: the first text from the number asks alice to add it, then arrives exactly.
    bed.kannel
        .inject(FRIEND, ALICE_NUMBER, "Hi Alice,  how are you?")
        .await;
    let first = alice
        .recv(WAIT, |e| {
            subscribe_from(&friend)(e) || chat_from(&friend)(e)
        })
        .await;
    assert_eq!(
        first.name, "presence",
        "the subscription request comes first: {first}"
    );
    let m = alice.recv(WAIT, chat_from(&friend)).await;
    assert_eq!(body(&m), "Hi Alice,  how are you?");
    // From the phone in UCS-2, with a line break.
    bed.kannel
        .inject(FRIEND, ALICE_NUMBER, "Grüße 👋\nzweite Zeile")
        .await;
    let m = alice.recv(WAIT, chat_from(&friend)).await;
    assert_eq!(body(&m), "Grüße 👋\nzweite Zeile");

    // 4. STOP: texts to that number are refused (and never reach the SMSC) until START.
    bed.kannel.inject(FRIEND, ALICE_NUMBER, "STOP").await;
    assert_eq!(body(&alice.recv(WAIT, chat_from(&friend)).await), "STOP");
    alice
        .send(&format!(
            "<message type='chat' id='out-3' to='{friend}'><body>still there?</body></message>"
        ))
        .await;
    let e = alice.recv(WAIT, |e| e.attr("id") == Some("out-3")).await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(condition(&e).as_deref(), Some("not-acceptable"), "{e}");
    assert_eq!(error_text(&e), "recipient opted out (STOP)");
    bed.kannel.inject(FRIEND, ALICE_NUMBER, "START").await;
    assert_eq!(body(&alice.recv(WAIT, chat_from(&friend)).await), "START");
    text(&alice, "out-4", &friend, "welcome back").await;
    // The next text at the SMSC is this one: the refused one never went.
    let sent = bed.next_sent().await;
    assert_eq!(
        (sent.from.as_str(), sent.to.as_str(), sent.text.as_str()),
        (ALICE_NUMBER, FRIEND, "welcome back")
    );
    receipt(&mut alice, "out-4", &friend).await;

    bed.stop(vec![alice]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_kannel_password_shows_on_healthz_presence_and_texts() {
    let bed = bed("not-the-password").await;
    let mut alice = bed.login("alice").await;

    // ferry checks the credentials when the bridge starts serving; once the check has
    // failed, alice's session (which watches the providers' health) turns the gateway's
    // presence to `xa` with the reason. That presence is the event waited for: the problem
    // is recorded before the session hears of it, so /healthz says so from then on.
    register_alice(&mut alice).await;
    let p = alice
        .recv(
            WAIT,
            gateway_presence(|s| s.contains("SMS provider kannel is failing")),
        )
        .await;
    assert_eq!(
        p.child_text("show", NS_CLIENT).as_deref(),
        Some("xa"),
        "{p}"
    );
    let status_text = p.child_text("status", NS_CLIENT).unwrap_or_default();
    assert!(status_text.contains("credentials"), "{p}");
    let (status, why) = bed.healthz().await;
    assert_eq!(status, 503, "{why}");
    assert!(why.contains("sms provider kannel"), "{why}");
    assert!(why.contains("credentials"), "{why}");

    // A text sent anyway fails with the reason, not silently.
    alice
        .send(&format!(
            "<message type='chat' id='out-1' to='{}'><body>hello?</body></message>",
            contact(FRIEND)
        ))
        .await;
    let e = alice.recv(WAIT, |e| e.attr("id") == Some("out-1")).await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(condition(&e).as_deref(), Some("not-authorized"), "{e}");
    assert!(error_text(&e).contains("credentials"), "{e}");

    bed.stop(vec![alice]).await;
}
