//! The three real bridges side by side, end to end through a real Prosody: ferry with the
//! email, SMS and RSS bridges on SQLite. Covers what every gateway answers about its
//! contacts without reaching anything upstream: the XEP-0100 `jabber:iq:gateway` prompt
//! mapping a foreign address to its JID (SPEC §3), and disco#info on a contact JID
//! (SPEC §4). No mail server, SMS provider or feed is needed: the mail servers and the
//! provider point at a closed port, and the one feed address is a local server that must
//! see no request.

mod common;

#[path = "../bridges/rss/tests/common/server.rs"]
#[allow(dead_code)]
mod server;

use std::time::Duration;

use common::client::{self, Client, condition};
use common::prosody::Prosody;
use ferry::app::Running;
use ferry::config::Config;
use ferry::xml::Element;
use ferry_bridge_api::BridgeKind;
use server::TestServer;

const EMAIL: &str = "email.localhost";
const SMS: &str = "sms.localhost";
const RSS: &str = "rss.localhost";
const SECRET: &str = "gateways-secret";
const NS_GATEWAY: &str = "jabber:iq:gateway";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const WAIT: Duration = Duration::from_secs(20);

struct Bed {
    prosody: Prosody,
    _ferry: Running,
    _dir: tempfile::TempDir,
}

async fn bed() -> Bed {
    let prosody = Prosody::start(
        &[(EMAIL, SECRET), (SMS, SECRET), (RSS, SECRET)],
        &[("alice", "alice")],
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 9: no test here may need a mail server or a provider.
    let cfg = Config::from_str_at(
        &format!(
            r#"[xmpp]
host = "127.0.0.1"
port = {}
allowed = ["localhost"]
[http]
listen = "127.0.0.1:0"
public_url = "http://127.0.0.1:9/"
[email]
domain = "{EMAIL}"
secret = "{SECRET}"
imap_host = "127.0.0.1"
imap_port = 9
imap_tls = "none"
smtp_host = "127.0.0.1"
smtp_port = 9
smtp_tls = "none"
[sms]
domain = "{SMS}"
secret = "{SECRET}"
default_region = "US"
[[sms.provider]]
name = "tw"
kind = "twilio"
account_sid = "AC0123456789abcdef0123456789abcdef"
auth_token = "token"
api_base = "http://127.0.0.1:9"
[[sms.number]]
number = "+12015550100"
provider = "tw"
[rss]
domain = "{RSS}"
secret = "{SECRET}"
allow_private_addresses = true
"#,
            prosody.component_port
        ),
        dir.path(),
    )
    .expect("config");
    let ferry = common::start_ferry(&cfg, BridgeKind::Email, &prosody).await;
    for kind in [BridgeKind::Sms, BridgeKind::Rss] {
        let mut up = ferry.gateway(kind).expect("gateway").connected.clone();
        tokio::time::timeout(WAIT, up.wait_for(|v| *v))
            .await
            .unwrap_or_else(|_| panic!("{kind} not linked:\n{}", prosody.log()))
            .expect("link alive");
    }
    Bed {
        prosody,
        _ferry: ferry,
        _dir: dir,
    }
}

impl Bed {
    async fn login(&self) -> Client {
        let c = client::login(self.prosody.c2s_port, "alice", "alice", "test").await;
        c.send_presence().await;
        c
    }
}

/// Escapes text for an XML attribute or element.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// Sends a `jabber:iq:gateway` set with `prompt` to `gw` and returns the answer.
async fn prompt(c: &mut Client, gw: &str, prompt: &str) -> Element {
    let id = client::next_id();
    c.iq(&format!(
        "<iq type='set' id='{id}' to='{gw}'><query xmlns='{NS_GATEWAY}'><prompt>{}</prompt></query></iq>",
        xml_escape(prompt)
    ))
    .await
}

/// The JID a `jabber:iq:gateway` set gave, or a panic showing the answer.
async fn jid_for(c: &mut Client, gw: &str, address: &str) -> String {
    let r = prompt(c, gw, address).await;
    assert_eq!(r.attr("type"), Some("result"), "{address}: {r}");
    r.child("query", NS_GATEWAY)
        .and_then(|q| q.child_text("jid", NS_GATEWAY))
        .unwrap_or_else(|| panic!("{address}: no <jid/> in {r}"))
}

async fn refused(c: &mut Client, gw: &str, address: &str) -> String {
    let r = prompt(c, gw, address).await;
    assert_eq!(r.attr("type"), Some("error"), "{address}: {r}");
    condition(&r).unwrap_or_else(|| panic!("{address}: no condition in {r}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_gateway_maps_an_address_to_its_jid_or_refuses_it() {
    let bed = bed().await;
    let mut alice = bed.login().await;

    // Every gateway offers a description and a prompt.
    for gw in [EMAIL, SMS, RSS] {
        let r = alice
            .iq(&format!(
                "<iq type='get' id='get-{gw}' to='{gw}'><query xmlns='{NS_GATEWAY}'/></iq>"
            ))
            .await;
        let q = r
            .child("query", NS_GATEWAY)
            .unwrap_or_else(|| panic!("{gw}: {r}"));
        for part in ["desc", "prompt"] {
            assert!(
                q.child_text(part, NS_GATEWAY)
                    .is_some_and(|t| !t.trim().is_empty()),
                "{gw} gives no {part}: {r}"
            );
        }
    }

    // SMS: E.164 however it is written, national numbers in default_region, short codes;
    // a number of the wrong length is malformed.
    for typed in ["+1 (201) 555-0123", "+12015550123", "(201) 555-0123"] {
        assert_eq!(
            jid_for(&mut alice, SMS, typed).await,
            format!("+12015550123@{SMS}"),
            "{typed}"
        );
    }
    assert_eq!(
        jid_for(&mut alice, SMS, "12345").await,
        format!("12345@{SMS}")
    );
    assert_eq!(
        refused(&mut alice, SMS, "+1 201 555").await,
        "jid-malformed"
    );
    assert_eq!(refused(&mut alice, SMS, "").await, "jid-malformed");

    // Email: XEP-0106 escaping of the lowercased address.
    assert_eq!(
        jid_for(&mut alice, EMAIL, "Bob.Smith@Example.com").await,
        format!("bob.smith\\40example.com@{EMAIL}")
    );
    assert_eq!(
        jid_for(&mut alice, EMAIL, " bob.smith@example.com ").await,
        format!("bob.smith\\40example.com@{EMAIL}")
    );
    assert_eq!(
        refused(&mut alice, EMAIL, "not an address").await,
        "jid-malformed"
    );

    // RSS: the lowercased host as the slug, the same feed always the same JID, another
    // feed of the same host the next free slug, a port in the slug; other schemes are
    // not acceptable.
    assert_eq!(
        jid_for(&mut alice, RSS, "https://xkcd.com/atom.xml").await,
        format!("xkcd.com@{RSS}")
    );
    assert_eq!(
        jid_for(&mut alice, RSS, "HTTPS://XKCD.com/atom.xml").await,
        format!("xkcd.com@{RSS}")
    );
    assert_eq!(
        jid_for(&mut alice, RSS, "https://xkcd.com/rss.xml").await,
        format!("xkcd.com-2@{RSS}")
    );
    assert_eq!(
        jid_for(&mut alice, RSS, "https://xkcd.com/atom.xml").await,
        format!("xkcd.com@{RSS}")
    );
    assert_eq!(
        refused(&mut alice, RSS, "ftp://xkcd.com/atom.xml").await,
        "not-acceptable"
    );
    assert_eq!(refused(&mut alice, RSS, "").await, "jid-malformed");

    // `set` fetches nothing: the feed's server has seen no request when the JID comes.
    let web = TestServer::start().await;
    let port = web.addr().port();
    assert_eq!(
        jid_for(&mut alice, RSS, &web.url("/feed.xml")).await,
        format!("127.0.0.1-{port}@{RSS}")
    );
    assert_eq!(web.requests().len(), 0, "{:?}", web.stats().targets());
}

/// The `<identity/>`s and features of a disco#info result, or a panic showing the answer.
fn disco(r: &Element) -> (Vec<(String, String, String)>, Vec<String>) {
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    let q = r
        .child("query", NS_DISCO_INFO)
        .unwrap_or_else(|| panic!("{r}"));
    let identities = q
        .elements()
        .filter(|e| e.name == "identity")
        .map(|e| {
            let a = |n| e.attr(n).unwrap_or_default().to_owned();
            (a("category"), a("type"), a("name"))
        })
        .collect();
    let features = q
        .elements()
        .filter(|e| e.name == "feature")
        .filter_map(|e| e.attr("var").map(str::to_owned))
        .collect();
    (identities, features)
}

async fn disco_info(c: &mut Client, jid: &str) -> Element {
    let id = client::next_id();
    c.iq(&format!(
        "<iq type='get' id='{id}' to='{}'><query xmlns='{NS_DISCO_INFO}'/></iq>",
        xml_escape(jid)
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_answer_disco_info() {
    let bed = bed().await;
    let mut alice = bed.login().await;

    // A mail correspondent, a phone number and a feed, each as a user would first meet
    // it: through the prompt, or typed as a JID.
    let bob = jid_for(&mut alice, EMAIL, "Bob.Smith@Example.com").await;
    let feed = jid_for(&mut alice, RSS, "https://xkcd.com/atom.xml").await;
    let phone = format!("+12015550123@{SMS}");
    for (jid, name) in [
        (bob.as_str(), "Bob.Smith@Example.com"),
        (phone.as_str(), "+12015550123"),
        (feed.as_str(), "https://xkcd.com/atom.xml"),
    ] {
        let r = disco_info(&mut alice, jid).await;
        assert_eq!(r.attr("from"), Some(jid), "{r}");
        let (identities, features) = disco(&r);
        // One identity, a contact (not a gateway or a service), named after its address.
        assert_eq!(identities.len(), 1, "{jid}: {r}");
        let (category, typ, shown) = &identities[0];
        assert!(!category.is_empty() && !typ.is_empty(), "{jid}: {r}");
        assert_ne!(category, "gateway", "{jid}: {r}");
        assert_eq!(shown, name, "{jid}: {r}");
        for f in [NS_DISCO_INFO, "vcard-temp", "urn:xmpp:ping"] {
            assert!(features.iter().any(|g| g == f), "{jid} lacks {f}: {r}");
        }
    }
    // Contacts that carry texts and mail confirm delivery (XEP-0184).
    for jid in [&bob, &phone] {
        let (_, features) = disco(&disco_info(&mut alice, jid).await);
        assert!(
            features.iter().any(|f| f == "urn:xmpp:receipts"),
            "{jid}: {features:?}"
        );
    }
    // A feed only talks: it sends no receipts, so it does not claim to.
    let (_, features) = disco(&disco_info(&mut alice, &feed).await);
    assert!(
        !features.iter().any(|f| f == "urn:xmpp:receipts"),
        "{feed}: {features:?}"
    );

    // The `%` alias of a mail address is the same contact.
    let alias = format!("bob.smith%example.com@{EMAIL}");
    let (identities, _) = disco(&disco_info(&mut alice, &alias).await);
    assert_eq!(identities[0].2, "Bob.Smith@Example.com", "{identities:?}");

    // Addresses that cannot be contacts are refused as SPEC §4 says.
    let r = disco_info(&mut alice, &format!("+1201555@{SMS}")).await;
    assert_eq!(condition(&r).as_deref(), Some("jid-malformed"), "{r}");
    let r = disco_info(&mut alice, &format!("nodots@{RSS}")).await;
    assert_eq!(condition(&r).as_deref(), Some("item-not-found"), "{r}");
    let r = disco_info(&mut alice, &format!("nobody@{EMAIL}")).await;
    assert!(
        matches!(
            condition(&r).as_deref(),
            Some("item-not-found" | "jid-malformed")
        ),
        "{r}"
    );
}
