//! The SMS bridge end to end with a provider that cannot run here (Twilio): real Prosody,
//! ferry with the real SMS bridge and SQLite, Twilio's API played by Prism validating every
//! request against Twilio's own OpenAPI description, and webhooks signed as Twilio signs
//! them. Registration by claiming a number, texts out with receipts from delivery reports,
//! texts in (with MMS media served under /media, and nothing under any other token or
//! name), forged, repeated and 1,000 concurrent webhooks, STOP/START and their synonyms,
//! the daily quota, and the errors of SPEC §4.

mod common;

#[path = "../bridges/sms/tests/common/prism.rs"]
#[allow(dead_code)]
mod prism;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::client::{self, Client, body, condition, error_text};
use common::prosody::Prosody;
use ferry::app::Running;
use ferry::component::{Frame, Outgoing};
use ferry::config::Config;
use ferry::gateway::Gateway;
use ferry::metrics::Metrics;
use ferry::store::{Cipher, Store};
use ferry::xml::{Element, NS_COMPONENT, NS_STANZA_ERRORS, parse_element};
use ferry_bridge_api::{Bridge, BridgeKind, FormValues, Hub};
use ferry_sms::SmsBridge;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use tokio::sync::{Notify, mpsc, watch};

const GW: &str = "sms.localhost";
const SECRET: &str = "sms-secret";
const NS_CLIENT: &str = "jabber:client";
const WAIT: Duration = Duration::from_secs(20);
const SID: &str = "AC0123456789abcdef0123456789abcdef";
const TOKEN: &str = "twilio-test-token";
const ALICE_NUMBER: &str = "+12015550100";
const FRIEND: &str = "+12015550199";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n not really a picture, but bytes to compare";

struct Bed {
    prosody: Prosody,
    ferry: Running,
    _prism: prism::Prism,
    /// `http://127.0.0.1:PORT`: ferry's [http], also its public_url.
    http: String,
    /// Where the test serves MMS media.
    media_base: String,
    web: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn media_server() -> String {
    let app = Router::new().route(
        "/media/pic",
        get(|| async { ([("content-type", "image/png")], PNG) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

async fn bed(quota: u32) -> Bed {
    let prosody = Prosody::start(
        &[(GW, SECRET)],
        &[("alice", "alice"), ("bob", "bob"), ("admin", "admin")],
    )
    .await;
    let prism = prism::Prism::start().await;
    let media_base = media_server().await;
    let port = common::free_port();
    let http = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::from_str_at(
        &format!(
            r#"[xmpp]
host = "127.0.0.1"
port = {}
allowed = ["localhost"]
admins = ["admin@localhost"]
[http]
listen = "127.0.0.1:{port}"
public_url = "{http}/"
[sms]
domain = "{GW}"
secret = "{SECRET}"
default_region = "US"
quota_per_day = {quota}
[[sms.provider]]
name = "tw"
kind = "twilio"
account_sid = "{SID}"
auth_token = "{TOKEN}"
api_base = "{}"
[[sms.number]]
number = "{ALICE_NUMBER}"
provider = "tw"
owner = "alice@localhost"
[[sms.number]]
number = "+12015550101"
provider = "tw"
"#,
            prosody.component_port, prism.base
        ),
        dir.path(),
    )
    .expect("config");
    let ferry = common::start_ferry(&cfg, BridgeKind::Sms, &prosody).await;
    Bed {
        prosody,
        ferry,
        _prism: prism,
        http,
        media_base,
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

    /// Posts a Twilio webhook signed with `token` (the right one unless testing forgery).
    async fn twilio_hook(&self, hook: &str, params: &[(&str, &str)], token: &str) -> (u16, String) {
        let url = format!("{}/sms/tw/{hook}", self.http);
        let sig = twilio_signature(token, &url, params);
        let r = self
            .web
            .post(&url)
            .header("X-Twilio-Signature", sig)
            .form(params)
            .send()
            .await
            .expect("ferry answers");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap_or_default())
    }
}

/// Twilio's signature: base64(HMAC-SHA1(token, URL + each POST parameter's name and value,
/// sorted by name)).
fn twilio_signature(token: &str, url: &str, params: &[(&str, &str)]) -> String {
    let mut sorted = params.to_vec();
    sorted.sort();
    let mut data = url.to_owned();
    for (k, v) in sorted {
        data.push_str(k);
        data.push_str(v);
    }
    let mut mac = Hmac::<Sha1>::new_from_slice(token.as_bytes()).expect("any key length");
    mac.update(data.as_bytes());
    client::base64(&mac.finalize().into_bytes())
}

fn inbound<'a>(sid: &'a str, from: &'a str, body: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("MessageSid", sid),
        ("AccountSid", SID),
        ("From", from),
        ("To", ALICE_NUMBER),
        ("Body", body),
        ("NumMedia", "0"),
    ]
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

async fn register(c: &mut Client, id: &str, number: &str) -> Element {
    c.iq(&format!(
        "<iq type='set' id='{id}' to='{GW}'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='number'><value>{number}</value></field></x></query></iq>"
    ))
    .await
}

/// The provider's id of the text ferry sent for `stanza_id`, once the outbox settled it.
async fn sent_sid(bed: &Bed, alice: &mut Client, stanza_id: &str) -> String {
    // An IQ ping to the gateway is a barrier for storing (SPEC §4); the settled counter
    // moves after each send.
    let ping = format!(
        "<iq type='get' id='ping-{stanza_id}' to='{GW}'><ping xmlns='urn:xmpp:ping'/></iq>"
    );
    let pong = alice.iq(&ping).await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
    let gw = bed.ferry.gateway(BridgeKind::Sms).expect("gw");
    let mut settled = gw.settled.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let row = bed
            .ferry
            .store
            .outbox_by_stanza(stanza_id)
            .await
            .expect("store")
            .unwrap_or_else(|| panic!("{stanza_id} was not stored; got {:?}", alice.backlog()));
        if let Some(id) = row.remote_message_id {
            return id;
        }
        tokio::time::timeout_at(deadline, settled.changed())
            .await
            .unwrap_or_else(|_| panic!("{stanza_id} was not sent: {:?}", row.last_error))
            .expect("gateway alive");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_send_receive_and_reports_through_prosody_and_prism() {
    let bed = bed(4).await;
    let mut alice = bed.login("alice").await;
    let mut bob = bed.login("bob").await;

    // Discovery says SMS gateway.
    let r = alice.iq(&format!("<iq type='get' id='d1' to='{GW}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    let q = r
        .child("query", "http://jabber.org/protocol/disco#info")
        .expect("query");
    assert!(
        q.elements()
            .any(|e| e.name == "identity" && e.attr("type") == Some("sms")),
        "{r}"
    );

    // Not registered yet: registration-required.
    alice
        .send(&format!(
            "<message type='chat' id='early' to='{}'><body>hi</body></message>",
            contact(FRIEND)
        ))
        .await;
    let e = alice.recv(WAIT, |e| e.attr("id") == Some("early")).await;
    assert_eq!(
        condition(&e).as_deref(),
        Some("registration-required"),
        "{e}"
    );

    // The form offers alice her own number and the free one; bob only the free one.
    let form = alice
        .iq(&format!(
            "<iq type='get' id='f1' to='{GW}'><query xmlns='jabber:iq:register'/></iq>"
        ))
        .await;
    let text = client::client_xml(&form);
    assert!(
        text.contains(ALICE_NUMBER) && text.contains("+12015550101"),
        "{text}"
    );
    let form = bob
        .iq(&format!(
            "<iq type='get' id='f2' to='{GW}'><query xmlns='jabber:iq:register'/></iq>"
        ))
        .await;
    assert!(!client::client_xml(&form).contains(ALICE_NUMBER));

    // Bob may not take alice's number; alice may.
    let r = register(&mut bob, "rb", ALICE_NUMBER).await;
    assert_eq!(condition(&r).as_deref(), Some("forbidden"), "{r}");
    let r = register(&mut alice, "ra", ALICE_NUMBER).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("type") == Some("subscribe")
                && e.attr("from") == Some(GW)
        })
        .await;

    // A number of the wrong length is jid-malformed.
    alice
        .send(&format!(
            "<message type='chat' id='bad' to='+1201555@{GW}'><body>hi</body></message>"
        ))
        .await;
    let e = alice.recv(WAIT, |e| e.attr("id") == Some("bad")).await;
    assert_eq!(condition(&e).as_deref(), Some("jid-malformed"), "{e}");

    // Out: Prism validates the request against Twilio's OpenAPI description and accepts
    // it; the receipt waits for the delivery report.
    let friend = contact(FRIEND);
    alice
        .send(&format!("<message type='chat' id='out-1' to='{friend}'><body>Hello from XMPP</body><request xmlns='urn:xmpp:receipts'/></message>"))
        .await;
    let sid = sent_sid(&bed, &mut alice, "out-1").await;
    assert!(sid.starts_with("SM") || sid.starts_with("MM"), "{sid}");
    let (status, _) = bed
        .twilio_hook(
            "status",
            &[
                ("MessageSid", &sid),
                ("MessageStatus", "delivered"),
                ("From", ALICE_NUMBER),
                ("To", FRIEND),
                ("AccountSid", SID),
            ],
            TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    let receipt = alice
        .recv(WAIT, |e| e.child("received", "urn:xmpp:receipts").is_some())
        .await;
    assert_eq!(receipt.attr("from"), Some(friend.as_str()));
    assert_eq!(
        receipt
            .child("received", "urn:xmpp:receipts")
            .and_then(|r| r.attr("id")),
        Some("out-1")
    );

    // A long text: the gateway says how it goes out.
    let long = "ж".repeat(100);
    alice
        .send(&format!(
            "<message type='chat' id='out-2' to='{friend}'><body>{long}</body></message>"
        ))
        .await;
    let note = alice.recv(WAIT, chat_from(GW)).await;
    assert!(body(&note).contains("2 SMS segments (UCS-2"), "{note}");

    // A failure report comes back as an error with the provider's reason.
    alice
        .send(&format!(
            "<message type='chat' id='out-3' to='{friend}'><body>will fail</body></message>"
        ))
        .await;
    let sid3 = sent_sid(&bed, &mut alice, "out-3").await;
    bed.twilio_hook(
        "status",
        &[
            ("MessageSid", &sid3),
            ("MessageStatus", "undelivered"),
            ("ErrorCode", "30003"),
            ("From", ALICE_NUMBER),
            ("To", FRIEND),
            ("AccountSid", SID),
        ],
        TOKEN,
    )
    .await;
    let e = alice
        .recv(WAIT, |e| {
            e.attr("id") == Some("out-3") && e.attr("type") == Some("error")
        })
        .await;
    assert_eq!(
        condition(&e).as_deref(),
        Some("recipient-unavailable"),
        "{e}"
    );
    assert!(error_text(&e).contains("30003"), "{e}");

    // In: the first text from a number asks alice to add it, then arrives.
    let (status, ack) = bed
        .twilio_hook(
            "inbound",
            &inbound("SM00000000000000000000000000000001", FRIEND, "Hi Alice!"),
            TOKEN,
        )
        .await;
    assert_eq!(status, 200);
    assert!(ack.contains("<Response/>"), "{ack}");
    alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("type") == Some("subscribe")
                && e.attr("from") == Some(friend.as_str())
        })
        .await;
    let m = alice.recv(WAIT, chat_from(&friend)).await;
    assert_eq!(body(&m), "Hi Alice!");

    // A forged webhook: 403, nothing delivered. A repeated one: 200, nothing delivered.
    let (status, _) = bed
        .twilio_hook(
            "inbound",
            &inbound("SM00000000000000000000000000000002", FRIEND, "forged"),
            "not-the-token",
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = bed
        .twilio_hook(
            "inbound",
            &inbound("SM00000000000000000000000000000001", FRIEND, "Hi Alice!"),
            TOKEN,
        )
        .await;
    assert_eq!(status, 200);

    // MMS: the media is fetched with Twilio's credentials and served by ferry.
    let pic = format!("{}/media/pic", bed.media_base);
    let mut mms = inbound("SM00000000000000000000000000000003", FRIEND, "look");
    mms.retain(|(k, _)| *k != "NumMedia");
    mms.extend([
        ("NumMedia", "1"),
        ("MediaUrl0", pic.as_str()),
        ("MediaContentType0", "image/png"),
    ]);
    bed.twilio_hook("inbound", &mms, TOKEN).await;
    let m = alice.recv(WAIT, chat_from(&friend)).await;
    // The forged and the repeated texts never arrived: the next message is the MMS.
    assert_eq!(body(&m), "look", "{m}");
    let url = m
        .child("x", "jabber:x:oob")
        .and_then(|x| x.child_text("url", "jabber:x:oob"))
        .expect("an OOB link");
    assert!(url.starts_with(&format!("{}/media/", bed.http)), "{url}");
    let got = bed.web.get(&url).send().await.expect("media");
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.expect("bytes").as_ref(), PNG);
    // Only that exact link serves it: another token, another name or none is 404.
    let (dir, name) = url.rsplit_once('/').expect("/media/TOKEN/NAME");
    let (media, token) = dir.rsplit_once('/').expect("/media/TOKEN");
    let last = if token.ends_with('0') { "1" } else { "0" };
    let other_token = format!("{}{last}", &token[..token.len() - 1]);
    for wrong in [
        format!("{media}/{other_token}/{name}"),
        format!("{dir}/not-{name}"),
        format!("{dir}/"),
        format!("{media}/{token}x/{name}"),
    ] {
        let got = bed.web.get(&wrong).send().await.expect("media");
        assert_eq!(got.status().as_u16(), 404, "{wrong}");
    }

    // STOP: texts to that number are refused until START.
    bed.twilio_hook(
        "inbound",
        &inbound("SM00000000000000000000000000000004", FRIEND, "Stop"),
        TOKEN,
    )
    .await;
    assert_eq!(body(&alice.recv(WAIT, chat_from(&friend)).await), "Stop");
    alice
        .send(&format!(
            "<message type='chat' id='out-4' to='{friend}'><body>still there?</body></message>"
        ))
        .await;
    let e = alice.recv(WAIT, |e| e.attr("id") == Some("out-4")).await;
    assert_eq!(condition(&e).as_deref(), Some("not-acceptable"), "{e}");
    assert_eq!(error_text(&e), "recipient opted out (STOP)");
    bed.twilio_hook(
        "inbound",
        &inbound("SM00000000000000000000000000000005", FRIEND, "START"),
        TOKEN,
    )
    .await;
    assert_eq!(body(&alice.recv(WAIT, chat_from(&friend)).await), "START");

    // The quota (4 a day) counts out-1..3; the fourth goes, the fifth is refused.
    alice
        .send(&format!(
            "<message type='chat' id='out-5' to='{friend}'><body>back again</body></message>"
        ))
        .await;
    sent_sid(&bed, &mut alice, "out-5").await;
    alice
        .send(&format!(
            "<message type='chat' id='out-6' to='{friend}'><body>one too many</body></message>"
        ))
        .await;
    let e = alice.recv(WAIT, |e| e.attr("id") == Some("out-6")).await;
    assert_eq!(condition(&e).as_deref(), Some("resource-constraint"), "{e}");

    // Health and metrics.
    let h = bed
        .web
        .get(format!("{}/healthz", bed.http))
        .send()
        .await
        .expect("healthz");
    assert_eq!(h.status().as_u16(), 200, "{:?}", h.text().await);
    let metrics = bed
        .web
        .get(format!("{}/metrics", bed.http))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("ferry_sms_webhooks_total{outcome=\"forbidden\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "ferry_messages_total{bridge=\"sms\",direction=\"in\",outcome=\"duplicate\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_texts_stops_at_the_quota() {
    let bed = bed(3).await;
    let mut alice = bed.login("alice").await;
    let r = register(&mut alice, "ra", ALICE_NUMBER).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    // Five texts in one write, none waiting for the one before: ferry's router admits each
    // and stores those that reach it together in one transaction afterwards.
    let friend = contact(FRIEND);
    let burst: String = (1..=5)
        .map(|i| {
            format!(
                "<message type='chat' id='burst-{i}' to='{friend}'><body>text {i}</body></message>"
            )
        })
        .collect();
    alice.send(&burst).await;
    let pong = alice
        .iq(&format!(
            "<iq type='get' id='barrier' to='{GW}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");

    // Exactly the quota went through; the rest got the quota's error.
    let mut stored = Vec::new();
    for i in 1..=5 {
        let id = format!("burst-{i}");
        if bed
            .ferry
            .store
            .outbox_by_stanza(&id)
            .await
            .expect("store")
            .is_some()
        {
            stored.push(i);
            continue;
        }
        let e = alice
            .recv(WAIT, |e| e.attr("id") == Some(id.as_str()))
            .await;
        assert_eq!(condition(&e).as_deref(), Some("resource-constraint"), "{e}");
        assert!(error_text(&e).contains("daily quota of 3 texts"), "{e}");
    }
    assert_eq!(stored, [1, 2, 3]);
}

/// A text from FRIEND to alice's number, once alice has it.
async fn text_from_friend(bed: &Bed, alice: &mut Client, n: u32, text: &str) {
    let sid = format!("SM{n:032x}");
    let (status, _) = bed
        .twilio_hook("inbound", &inbound(&sid, FRIEND, text), TOKEN)
        .await;
    assert_eq!(status, 200, "{text:?}");
    let m = alice.recv(WAIT, chat_from(&contact(FRIEND))).await;
    assert_eq!(body(&m).trim(), text.trim());
}

/// Sends a text from alice to FRIEND: `Ok` when ferry stored it for sending, else the
/// error's condition and text.
async fn text_to_friend(bed: &Bed, alice: &mut Client, id: &str) -> Result<(), String> {
    alice
        .send(&format!(
            "<message type='chat' id='{id}' to='{}'><body>are you there?</body></message>",
            contact(FRIEND)
        ))
        .await;
    // A ping is a barrier: once answered, the text is stored or was refused.
    let pong = alice
        .iq(&format!(
            "<iq type='get' id='ping-{id}' to='{GW}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(pong.attr("type"), Some("result"), "{pong}");
    let stored = bed.ferry.store.outbox_by_stanza(id).await.expect("store");
    if stored.is_some() {
        return Ok(());
    }
    let e = alice.recv(WAIT, |e| e.attr("id") == Some(id)).await;
    Err(format!(
        "{} {}",
        condition(&e).unwrap_or_default(),
        error_text(&e)
    ))
}

/// Every opt-out word of SPEC §4, in any case and with spaces around it, stops texts to
/// the number that sent it; START and UNSTOP, in any case, let them through again. A
/// sentence that merely contains such a word is just a text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_words_opt_out_and_start_words_opt_back_in() {
    let bed = bed(0).await;
    let mut alice = bed.login("alice").await;
    let r = register(&mut alice, "ra", ALICE_NUMBER).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    text_from_friend(&bed, &mut alice, 1, "please stop by later").await;
    assert_eq!(text_to_friend(&bed, &mut alice, "t-0").await, Ok(()));

    let opted_out = Err("not-acceptable recipient opted out (STOP)".to_owned());
    let words = [
        ("STOPALL", "START"),
        ("unsubscribe", "unstop"),
        ("Cancel", "Start"),
        (" end ", "UNSTOP"),
        ("QuIt", "start"),
        ("stop", "Unstop"),
    ];
    let mut n = 1;
    for (stop, start) in words {
        n += 1;
        text_from_friend(&bed, &mut alice, n, stop).await;
        let id = format!("after-{}", stop.trim());
        assert_eq!(
            text_to_friend(&bed, &mut alice, &id).await,
            opted_out,
            "after {stop:?}"
        );
        n += 1;
        text_from_friend(&bed, &mut alice, n, start).await;
        let id = format!("after-{stop}-{start}").replace(' ', "");
        assert_eq!(
            text_to_friend(&bed, &mut alice, &id).await,
            Ok(()),
            "after {stop:?} then {start:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_copies_of_one_webhook_make_one_message() {
    let bed = bed(0).await;
    let mut alice = bed.login("alice").await;
    let r = register(&mut alice, "ra", ALICE_NUMBER).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");

    let params = inbound("SM0000000000000000000000000000abcd", FRIEND, "only once");
    let url = format!("{}/sms/tw/inbound", bed.http);
    let sig = twilio_signature(TOKEN, &url, &params);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let web = bed.web.clone();
        let (url, sig) = (url.clone(), sig.clone());
        let params: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        tasks.spawn(async move {
            web.post(&url)
                .header("X-Twilio-Signature", sig)
                .form(&params)
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        let status = r.expect("task").expect("ferry answers");
        assert_eq!(status, 200);
        ok += 1;
    }
    assert_eq!(ok, 1000);
    // A marker after them all: texts are handed on in the order they were kept, so when
    // the marker arrives every copy that could arrive has.
    bed.twilio_hook(
        "inbound",
        &inbound("SM0000000000000000000000000000ffff", FRIEND, "marker"),
        TOKEN,
    )
    .await;
    let friend = contact(FRIEND);
    let mut copies = 0;
    loop {
        let m = alice.recv(WAIT, chat_from(&friend)).await;
        match body(&m).as_str() {
            "only once" => copies += 1,
            "marker" => break,
            other => panic!("unexpected text {other:?}"),
        }
    }
    println!("1000 concurrent copies of one webhook -> {copies} XMPP message(s)");
    assert_eq!(copies, 1);
}

/// A chat command to the gateway and its answer.
async fn command(c: &mut Client, text: &str) -> String {
    c.send(&format!(
        "<message type='chat' to='{GW}'><body>{text}</body></message>"
    ))
    .await;
    body(&c.recv(WAIT, chat_from(GW)).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_assign_and_free_numbers() {
    let bed = bed(0).await;
    let mut admin = bed.login("admin").await;
    let mut bob = bed.login("bob").await;

    let list = command(&mut admin, "numbers").await;
    assert!(
        list.contains(&format!(
            "{ALICE_NUMBER} via tw: free, reserved for alice@localhost"
        )),
        "{list}"
    );
    assert!(list.contains("+12015550101 via tw: free"), "{list}");

    // Not for users: refused, and not even listed for them.
    let refused = command(&mut bob, "assign +12015550101 bob@localhost").await;
    assert!(refused.contains("for admins only"), "{refused}");
    assert!(!command(&mut bob, "help").await.contains("assign"));
    assert!(
        command(&mut admin, "help")
            .await
            .contains("assign NUMBER JID")
    );

    let r = command(&mut admin, "assign (201) 555-0101 bob@localhost").await;
    assert_eq!(
        r,
        "+12015550101 now belongs to bob@localhost; they register with it to start"
    );
    assert!(
        command(&mut admin, "numbers")
            .await
            .contains("+12015550101 via tw: bob@localhost")
    );
    // The number is bob's now: only his registration form offers it.
    let mut alice = bed.login("alice").await;
    let form_of = |c: &'static str| {
        format!("<iq type='get' id='form-{c}' to='{GW}'><query xmlns='jabber:iq:register'/></iq>")
    };
    let form = client::client_xml(&alice.iq(&form_of("a1")).await);
    assert!(
        form.contains(ALICE_NUMBER) && !form.contains("+12015550101"),
        "{form}"
    );
    let form = client::client_xml(&bob.iq(&form_of("b1")).await);
    assert!(form.contains("+12015550101"), "{form}");
    let r = command(&mut admin, "assign +12015550177 bob@localhost").await;
    assert!(r.contains("is not one of this gateway's numbers"), "{r}");

    // Bob registers with the number assigned to him; a stranger's claim on it is refused.
    let r = register(&mut bob, "rb", "+12015550101").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = register(&mut alice, "ra", "+12015550101").await;
    assert_eq!(condition(&r).as_deref(), Some("not-acceptable"), "{r}");
    assert!(error_text(&r).contains("already taken"), "{r}");

    assert_eq!(
        command(&mut admin, "free +12015550101").await,
        "+12015550101 is free"
    );
    assert_eq!(
        command(&mut admin, "free +12015550101").await,
        "+12015550101 was not held by anyone"
    );
    let form = client::client_xml(&alice.iq(&form_of("a2")).await);
    assert!(form.contains("+12015550101"), "{form}");
    // Unregistering frees a number too.
    let r = register(&mut alice, "ra2", "+12015550101").await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let r = alice
        .iq(&format!("<iq type='set' id='un' to='{GW}'><query xmlns='jabber:iq:register'><remove/></query></iq>"))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    assert!(
        command(&mut admin, "numbers")
            .await
            .contains("+12015550101 via tw: free")
    );
}

// Below, the real SMS bridge without an XMPP server or a provider: a gateway whose router
// reads stanzas from a channel, over an in-memory store.

const LOCAL_GW: &str = "sms.example.org";
const FREE_1: &str = "+12015550101";
const FREE_2: &str = "+12015550102";

fn local_config(quota: u32) -> Config {
    // Nothing listens on port 9: the bridge is never asked to reach a provider here.
    Config::from_str_at(
        &format!(
            r#"[xmpp]
allowed = ["example.org"]
admins = ["admin@example.org"]
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9"
[sms]
domain = "{LOCAL_GW}"
secret = "s"
default_region = "US"
quota_per_day = {quota}
[[sms.provider]]
name = "tw"
kind = "twilio"
account_sid = "{SID}"
auth_token = "{TOKEN}"
api_base = "http://127.0.0.1:9"
[[sms.number]]
number = "{ALICE_NUMBER}"
provider = "tw"
owner = "alice@example.org"
[[sms.number]]
number = "{FREE_1}"
provider = "tw"
[[sms.number]]
number = "{FREE_2}"
provider = "tw"
"#
        ),
        std::path::Path::new("/tmp"),
    )
    .expect("config")
}

async fn memory_store() -> Store {
    let store = Store::open("sqlite::memory:", Cipher::from_key([7; 32]))
        .await
        .expect("store");
    store.migrate().await.expect("migrate");
    store
}

fn local_bridge(cfg: &Config, store: &Store) -> Arc<SmsBridge> {
    Arc::new(ferry::bridges::sms(cfg, cfg.sms.as_ref().expect("[sms]"), store).expect("bridge"))
}

/// Registers `user` with `number` through the bridge and keeps the account, as the core
/// does.
async fn local_register(bridge: &SmsBridge, store: &Store, user: &str, number: &str) {
    let values = FormValues::from([("number".to_owned(), number.to_owned())]);
    let creds = bridge
        .register(user, &values)
        .await
        .unwrap_or_else(|e| panic!("{user} cannot register {number}: {e}"));
    store
        .upsert_account(BridgeKind::Sms, user, &creds)
        .await
        .expect("account");
}

/// The numbers the registration form offers `user`.
fn offered(bridge: &SmsBridge, user: &str) -> Vec<String> {
    let form = bridge.registration_form(user);
    let field = form
        .fields
        .iter()
        .find(|f| f.var == "number")
        .expect("a number field");
    field.options.iter().map(|(_, v)| v.clone()).collect()
}

struct Local {
    gw: Arc<Gateway>,
    out: mpsc::Receiver<Frame>,
    _shutdown: watch::Sender<bool>,
    _connected: watch::Sender<bool>,
}

fn local_gateway(cfg: &Config, store: &Store, bridge: Arc<SmsBridge>) -> Local {
    let (out, rx) = Outgoing::channel(1024);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (conn_tx, connected) = watch::channel(true);
    let (events, _) = mpsc::channel(64);
    let gw = Arc::new(Gateway {
        kind: BridgeKind::Sms,
        domain: LOCAL_GW.into(),
        bridge,
        store: store.clone(),
        out,
        access: cfg.xmpp.clone(),
        metrics: Metrics::default(),
        sessions: Mutex::default(),
        outbox_wake: Notify::new(),
        outbox_handoff: Default::default(),
        events,
        shutdown,
        started: Instant::now(),
        connected,
        settled: watch::Sender::new(0),
        caches: Default::default(),
    });
    Local {
        gw,
        out: rx,
        _shutdown: shutdown_tx,
        _connected: conn_tx,
    }
}

impl Local {
    /// Texts `prefix-1` … `prefix-n` from `user`, all waiting for the router before it
    /// looks at the first, as when they arrive in one read; returns once the router has
    /// handled them all (and stored those it admitted), with the ids of those refused and
    /// their errors.
    async fn burst(&mut self, user: &str, prefix: &str, n: usize) -> Vec<(String, Element)> {
        let (tx, rx) = mpsc::channel(1024);
        for i in 1..=n {
            let xml = format!(
                "<message type='chat' id='{prefix}-{i}' from='{user}/phone' to='{FRIEND}@{LOCAL_GW}'><body>text {i}</body></message>"
            );
            tx.send(parse_element(&xml, NS_COMPONENT).expect("test xml"))
                .await
                .expect("router channel");
        }
        drop(tx);
        // The router ends when its channel does, after storing the batch.
        Arc::clone(&self.gw).run_router(rx).await;
        let mut refused = Vec::new();
        while let Ok(frame) = self.out.try_recv() {
            for e in frame.into_elements() {
                let id = e.attr("id").unwrap_or_default().to_owned();
                refused.push((id, e));
            }
        }
        refused
    }

    async fn stored(&self, id: &str) -> bool {
        self.gw
            .store
            .outbox_by_stanza(id)
            .await
            .expect("store")
            .is_some()
    }
}

fn local_condition(e: &Element) -> Option<String> {
    e.child("error", NS_COMPONENT)?
        .elements()
        .find(|c| c.ns == NS_STANZA_ERRORS && c.name != "text")
        .map(|c| c.name.to_string())
}

#[tokio::test]
async fn texts_admitted_together_count_against_the_quota_before_they_are_stored() {
    let cfg = local_config(3);
    let store = memory_store().await;
    let bridge = local_bridge(&cfg, &store);
    local_register(&bridge, &store, "alice@example.org", ALICE_NUMBER).await;
    local_register(&bridge, &store, "bob@example.org", FREE_1).await;
    let mut l = local_gateway(&cfg, &store, bridge);

    // Five at once with a quota of 3: the first three are admitted and stored in one
    // group commit, the other two are refused although none of the five was stored
    // when they were admitted.
    let refused = l.burst("alice@example.org", "a", 5).await;
    let ids: Vec<&str> = refused.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["a-4", "a-5"], "{refused:?}");
    for (_, e) in &refused {
        assert_eq!(
            local_condition(e).as_deref(),
            Some("resource-constraint"),
            "{e}"
        );
        assert!(e.to_string().contains("daily quota of 3 texts"), "{e}");
    }
    for id in ["a-1", "a-2", "a-3"] {
        assert!(l.stored(id).await, "{id} was not stored");
    }
    for id in ["a-4", "a-5"] {
        assert!(!l.stored(id).await, "{id} was stored");
    }
    // The quota is spent, stored rows and all.
    let refused = l.burst("alice@example.org", "a2", 1).await;
    assert_eq!(refused.len(), 1, "{refused:?}");

    // Once stored, admitted texts count once: two, then two more, leave room for one.
    assert!(l.burst("bob@example.org", "b", 2).await.is_empty());
    let refused = l.burst("bob@example.org", "b2", 2).await;
    let ids: Vec<&str> = refused.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["b2-2"], "{refused:?}");
    assert!(l.stored("b2-1").await);
}

#[tokio::test]
async fn concurrent_admissions_of_one_account_stop_at_the_quota() {
    let cfg = local_config(4);
    let store = memory_store().await;
    let bridge = local_bridge(&cfg, &store);
    local_register(&bridge, &store, "alice@example.org", ALICE_NUMBER).await;
    let alice = store
        .account(BridgeKind::Sms, "alice@example.org")
        .await
        .expect("store")
        .expect("account")
        .id;
    // Nothing is stored in between: every admission but the quota's is refused.
    let to = ferry_bridge_api::RemoteId(FRIEND.to_owned());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (bridge, to) = (Arc::clone(&bridge), to.clone());
        tasks.spawn(async move { bridge.admit(alice, &to).await });
    }
    let mut admitted = 0;
    while let Some(r) = tasks.join_next().await {
        match r.expect("task") {
            Ok(()) => admitted += 1,
            Err(e) => assert_eq!(e.kind, ferry_bridge_api::ErrorKind::ResourceConstraint),
        }
    }
    assert_eq!(admitted, 4);
}

#[tokio::test]
async fn the_form_offers_only_numbers_nobody_else_holds() {
    let cfg = local_config(0);
    let store = memory_store().await;
    // Held before this start: carol by an admin's assignment.
    ferry_sms::store::SmsStore::assign_number(&store, FREE_2, "carol@example.org")
        .await
        .expect("assign");
    let bridge = local_bridge(&cfg, &store);
    let (shutdown_tx, shutdown) = watch::channel(false);
    let (events, _events) = mpsc::channel(64);
    let hub = Hub {
        events,
        shutdown,
        counters: Arc::new(Metrics::default()),
    };
    let serving = Arc::clone(&bridge);
    let served = tokio::spawn(async move { serving.serve(hub).await });

    // Once the bridge has read the claims, carol's number is hers alone.
    tokio::time::timeout(WAIT, bridge.claims_read())
        .await
        .expect("the claims were never read");
    assert_eq!(
        offered(&bridge, "alice@example.org"),
        [ALICE_NUMBER, FREE_1]
    );
    assert_eq!(offered(&bridge, "carol@example.org"), [FREE_1, FREE_2]);

    // Bob claims the other free one: nobody else is offered it, bob still is.
    local_register(&bridge, &store, "bob@example.org", FREE_1).await;
    assert_eq!(offered(&bridge, "alice@example.org"), [ALICE_NUMBER]);
    assert_eq!(offered(&bridge, "bob@example.org"), [FREE_1]);
    assert_eq!(offered(&bridge, "carol@example.org"), [FREE_2]);
    assert_eq!(offered(&bridge, "dave@example.org"), Vec::<String>::new());
    let form = bridge.registration_form("dave@example.org");
    assert!(form.instructions.contains("no gateway number"), "{form:?}");
    // A claim on a held number is still refused, whatever the form said.
    let values = FormValues::from([("number".to_owned(), FREE_1.to_owned())]);
    let e = bridge
        .register("dave@example.org", &values)
        .await
        .expect_err("taken");
    assert!(e.text.contains("already taken"), "{e:?}");

    // An admin gives bob's number to dave, then frees carol's.
    bridge
        .run_command(
            "admin@example.org",
            true,
            "assign",
            &format!("{FREE_1} dave@example.org"),
        )
        .await
        .expect("assign");
    assert_eq!(offered(&bridge, "bob@example.org"), Vec::<String>::new());
    assert_eq!(offered(&bridge, "dave@example.org"), [FREE_1]);
    bridge
        .run_command("admin@example.org", true, "free", FREE_2)
        .await
        .expect("free");
    assert_eq!(offered(&bridge, "bob@example.org"), [FREE_2]);

    // Unregistering frees a number too.
    bridge
        .unregister("dave@example.org")
        .await
        .expect("unregister");
    assert_eq!(offered(&bridge, "bob@example.org"), [FREE_1, FREE_2]);

    shutdown_tx.send(true).expect("shutdown");
    tokio::time::timeout(WAIT, served)
        .await
        .expect("serve ends")
        .expect("serve task");
}
