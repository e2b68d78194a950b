//! The RSS bridge end to end: real Prosody, ferry with the real RSS bridge and SQLite, and
//! a local HTTP server serving feeds. Subscribing by presence (through autodiscovery on a
//! site's page) and by chat command, the first entries, a new entry, a refused feed,
//! `list`/`export`, vCard and probe, and unsubscribing (by presence and by command) after
//! which nothing more arrives; `headline` delivery from the config and the `settings`
//! command changing it, a feed's own delivery (`settings delivery JID headline`), and
//! quiet hours (`settings quiet HH:MM-HH:MM`, UTC) holding entries until they are off.

mod common;

#[path = "../bridges/rss/tests/common/server.rs"]
#[allow(dead_code)]
mod server;

use std::time::Duration;

use common::client::{self, Client, body};
use common::prosody::Prosody;
use ferry::app::Running;
use ferry::config::Config;
use ferry::xml::Element;
use ferry_bridge_api::BridgeKind;
use server::{Route, TestServer};

const GW: &str = "rss.localhost";
const SECRET: &str = "rss-secret";
const NS_CLIENT: &str = "jabber:client";
const WAIT: Duration = Duration::from_secs(20);

fn rss(title: &str, items: &[(&str, &str)]) -> String {
    let mut s = format!(
        "<?xml version='1.0'?><rss version='2.0'><channel><title>{title}</title><link>http://example.org/</link><description>d</description><ttl>0</ttl>"
    );
    for (guid, t) in items {
        s.push_str(&format!(
            "<item><guid>{guid}</guid><title>{t}</title><link>http://example.org/{guid}</link><description>&lt;p&gt;About &lt;b&gt;{t}&lt;/b&gt;&lt;/p&gt;</description></item>"
        ));
    }
    s.push_str("</channel></rss>");
    s
}

fn atom(title: &str, entries: &[(&str, &str)]) -> String {
    let mut s = format!(
        "<?xml version='1.0' encoding='utf-8'?><feed xmlns='http://www.w3.org/2005/Atom'><title>{title}</title><id>urn:x:feed</id><updated>2026-11-20T10:00:00Z</updated>"
    );
    for (id, t) in entries {
        s.push_str(&format!(
            "<entry><id>urn:x:{id}</id><title>{t}</title><updated>2026-11-20T10:00:00Z</updated><link href='http://example.org/a/{id}'/><summary>{t} summary</summary></entry>"
        ));
    }
    s.push_str("</feed>");
    s
}

struct Bed {
    prosody: Prosody,
    ferry: Running,
    web: TestServer,
    _dir: tempfile::TempDir,
}

async fn bed() -> Bed {
    bed_with("").await
}

/// A bed whose `[rss]` table ends with `extra` (one `key = value` per line).
async fn bed_with(extra: &str) -> Bed {
    let prosody = Prosody::start(&[(GW, SECRET)], &[("alice", "alice")]).await;
    let web = TestServer::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = Config::from_str_at(
        &format!(
            "[xmpp]\nhost = \"127.0.0.1\"\nport = {}\nallowed = [\"localhost\"]\n[http]\nlisten = \"127.0.0.1:0\"\n[rss]\ndomain = \"{GW}\"\nsecret = \"{SECRET}\"\ndefault_interval = \"1s\"\nmin_interval = \"1s\"\ninitial_entries = 2\nallow_private_addresses = true\n{extra}",
            prosody.component_port
        ),
        dir.path(),
    )
    .expect("config");
    let ferry = common::start_ferry(&cfg, BridgeKind::Rss, &prosody).await;
    Bed {
        prosody,
        ferry,
        web,
        _dir: dir,
    }
}

async fn login(bed: &Bed) -> Client {
    let c = client::login(bed.prosody.c2s_port, "alice", "alice", "test").await;
    c.send_presence().await;
    c
}

fn is_msg_from(e: &Element, from: &str) -> bool {
    e.name == "message" && e.attr("from") == Some(from) && e.attr("type") != Some("error")
}

async fn command(alice: &mut Client, text: &str) -> String {
    alice
        .send(&format!(
            "<message type='chat' to='{GW}'><body>{text}</body></message>"
        ))
        .await;
    let reply = alice.recv(WAIT, |e| is_msg_from(e, GW)).await;
    body(&reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_receive_and_unsubscribe_through_prosody() {
    let bed = bed().await;
    let port = bed.web.addr().port();
    // A site whose page names its feed; the feed has three entries.
    bed.web.route(
        "/",
        Route::ok("<html><head><link rel='alternate' type='application/rss+xml' href='/feed.xml'></head><body>hi</body></html>")
            .header("Content-Type", "text/html"),
    );
    bed.web.route(
        "/feed.xml",
        Route::ok(rss(
            "Site News",
            &[("3", "Third"), ("2", "Second"), ("1", "First")],
        ))
        .header("Content-Type", "application/rss+xml")
        .header("ETag", "\"v1\"")
        .conditional(),
    );
    let mut alice = login(&bed).await;

    // 1. Subscribing to the site's JID finds its feed; the contact confirms, asks to be
    //    added with the feed title as nickname, and the two newest entries follow.
    let site = format!("127.0.0.1-{port}@{GW}");
    alice
        .send(&format!("<presence type='subscribe' to='{site}'/>"))
        .await;
    let ask = alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("from") == Some(&site)
                && e.attr("type") == Some("subscribe")
        })
        .await;
    assert_eq!(
        ask.child_text("nick", "http://jabber.org/protocol/nick")
            .as_deref(),
        Some("Site News")
    );
    // The contact's `subscribed` went through: Prosody shows the subscription on the roster.
    let roster = alice
        .iq("<iq type='get' id='ro1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    let item = roster
        .child("query", "jabber:iq:roster")
        .and_then(|q| {
            q.elements()
                .find(|i| i.attr("jid") == Some(site.as_str()))
                .cloned()
        })
        .unwrap_or_else(|| panic!("{site} on the roster: {roster}"));
    assert!(
        matches!(item.attr("subscription"), Some("to") | Some("both")),
        "{item}"
    );
    let first = alice.recv(WAIT, |e| is_msg_from(e, &site)).await;
    let second = alice.recv(WAIT, |e| is_msg_from(e, &site)).await;
    assert!(body(&first).starts_with("Second"), "{first}");
    assert!(body(&second).starts_with("Third"), "{second}");
    assert!(body(&second).contains("http://example.org/3"));
    assert!(
        body(&second).contains("About Third"),
        "summary as text: {second}"
    );
    assert!(!body(&second).contains("<b>"), "no markup: {second}");
    assert_eq!(second.attr("type"), Some("chat"));
    assert_eq!(
        second
            .child("x", "jabber:x:oob")
            .and_then(|x| x.child_text("url", "jabber:x:oob"))
            .as_deref(),
        Some("http://example.org/3")
    );
    // The feed was found through the page, and fetched conditionally after that.
    assert!(bed.web.stats().targets().contains(&"/".to_owned()));

    // 2. A new entry arrives once, on the next poll; repolls send the validators back.
    bed.web.route(
        "/feed.xml",
        Route::ok(rss(
            "Site News",
            &[
                ("4", "Fourth"),
                ("3", "Third"),
                ("2", "Second"),
                ("1", "First"),
            ],
        ))
        .header("Content-Type", "application/rss+xml")
        .header("ETag", "\"v2\"")
        .conditional(),
    );
    let fourth = alice.recv(WAIT, |e| is_msg_from(e, &site)).await;
    assert!(body(&fourth).starts_with("Fourth"), "{fourth}");
    assert!(
        bed.web
            .requests()
            .iter()
            .any(|r| r.target == "/feed.xml" && r.header("if-none-match") == Some("\"v1\"")),
        "conditional GET with the exact ETag"
    );

    // 3. Subscribing by command to an Atom feed on the same host: the next free slug.
    bed.web.route(
        "/atom.xml",
        Route::ok(atom("Atom Things", &[("b", "Beta"), ("a", "Alpha")]))
            .header("Content-Type", "application/atom+xml")
            .header("Last-Modified", "Fri, 20 Nov 2026 10:00:00 GMT")
            .conditional(),
    );
    let answer = command(
        &mut alice,
        &format!("subscribe http://127.0.0.1:{port}/atom.xml"),
    )
    .await;
    let atom_jid = format!("127.0.0.1-{port}-2@{GW}");
    assert!(answer.contains(&atom_jid), "{answer}");
    let ask = alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("from") == Some(&atom_jid)
                && e.attr("type") == Some("subscribe")
        })
        .await;
    assert_eq!(
        ask.child_text("nick", "http://jabber.org/protocol/nick")
            .as_deref(),
        Some("Atom Things")
    );
    let a = alice.recv(WAIT, |e| is_msg_from(e, &atom_jid)).await;
    assert!(
        body(&a).contains("Alpha") || body(&a).contains("Beta"),
        "{a}"
    );
    let _ = alice.recv(WAIT, |e| is_msg_from(e, &atom_jid)).await;

    // 3b. The same by ad-hoc command: the first step asks for the `url` field.
    bed.web.route(
        "/more.json",
        Route::ok(r#"{"version":"https://jsonfeed.org/version/1.1","title":"Jason","items":[{"id":"j1","url":"http://example.org/j1","title":"Jay One","content_text":"hello"}]}"#)
            .header("Content-Type", "application/feed+json"),
    );
    let r = alice
        .iq(&format!("<iq type='set' id='c1' to='{GW}'><command xmlns='http://jabber.org/protocol/commands' node='subscribe' action='execute'/></iq>"))
        .await;
    let cmd = r
        .child("command", "http://jabber.org/protocol/commands")
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(cmd.attr("status"), Some("executing"), "{r}");
    let session = cmd.attr("sessionid").expect("sessionid").to_owned();
    assert!(
        cmd.child("x", "jabber:x:data")
            .is_some_and(|x| x.elements().any(|f| f.attr("var") == Some("url"))),
        "{r}"
    );
    let r = alice
        .iq(&format!("<iq type='set' id='c2' to='{GW}'><command xmlns='http://jabber.org/protocol/commands' node='subscribe' sessionid='{session}' action='complete'><x xmlns='jabber:x:data' type='submit'><field var='url'><value>http://127.0.0.1:{port}/more.json</value></field></x></command></iq>"))
        .await;
    let cmd = r
        .child("command", "http://jabber.org/protocol/commands")
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(cmd.attr("status"), Some("completed"), "{r}");
    let json_jid = format!("127.0.0.1-{port}-3@{GW}");
    let j = alice.recv(WAIT, |e| is_msg_from(e, &json_jid)).await;
    assert!(body(&j).starts_with("Jay One"), "{j}");

    // 3c. OPML import from a link (as a chat upload would give).
    bed.web.route(
        "/subs.opml",
        Route::ok(format!("<?xml version='1.0'?><opml version='2.0'><body><outline text='Other' xmlUrl='http://127.0.0.1:{port}/other.xml'/></body></opml>"))
            .header("Content-Type", "text/x-opml"),
    );
    bed.web.route(
        "/other.xml",
        Route::ok(rss("Other Feed", &[("o1", "Otto")]))
            .header("Content-Type", "application/rss+xml"),
    );
    let answer = command(
        &mut alice,
        &format!("import http://127.0.0.1:{port}/subs.opml"),
    )
    .await;
    assert!(answer.contains("Imported 1 feed(s)"), "{answer}");
    let other_jid = format!("127.0.0.1-{port}-4@{GW}");
    let o = alice.recv(WAIT, |e| is_msg_from(e, &other_jid)).await;
    assert!(body(&o).starts_with("Otto"), "{o}");

    // 4. `list` and `export` show them; vCard and probe show the title.
    let list = command(&mut alice, "list").await;
    assert!(list.contains(&site) && list.contains("Site News"), "{list}");
    assert!(
        list.contains(&atom_jid) && list.contains("Atom Things"),
        "{list}"
    );
    let opml = command(&mut alice, "export").await;
    assert!(opml.contains("<opml"), "{opml}");
    assert!(
        opml.contains(&format!("http://127.0.0.1:{port}/feed.xml")),
        "{opml}"
    );
    let card = alice
        .iq(&format!(
            "<iq type='get' id='v1' to='{site}'><vCard xmlns='vcard-temp'/></iq>"
        ))
        .await;
    assert_eq!(
        card.child("vCard", "vcard-temp")
            .and_then(|v| v.child_text("FN", "vcard-temp"))
            .as_deref(),
        Some("Site News"),
        "{card}"
    );
    alice
        .send(&format!("<presence type='probe' to='{site}'/>"))
        .await;
    let p = alice
        .recv(WAIT, |e| {
            e.name == "presence" && e.attr("from") == Some(&site) && e.attr("type").is_none()
        })
        .await;
    assert!(
        p.child_text("status", NS_CLIENT)
            .is_some_and(|s| s.contains("Site News")),
        "{p}"
    );

    // 5. A feed that cannot be fetched: unsubscribed, and the gateway says why.
    let dead = TestServer::start().await;
    let dead_port = dead.addr().port();
    dead.shutdown().await;
    let answer = command(
        &mut alice,
        &format!("subscribe http://127.0.0.1:{dead_port}/gone.xml"),
    )
    .await;
    assert!(answer.contains("Subscribing"), "{answer}");
    // (Prosody drops the `unsubscribed` that goes with it: alice never asked this contact.)
    let dead_jid = format!("127.0.0.1-{dead_port}@{GW}");
    let why = alice.recv(WAIT, |e| is_msg_from(e, GW)).await;
    assert!(
        body(&why).contains(&format!("Cannot subscribe to {dead_jid}")),
        "{why}"
    );
    assert!(body(&why).contains("refused"), "the reason is given: {why}");

    // 6. Unsubscribing by presence stops the feed: a later entry never arrives, and the
    //    feed is no longer fetched while the other one still is.
    alice
        .send(&format!("<presence type='unsubscribe' to='{site}'/>"))
        .await;
    alice
        .recv(WAIT, |e| {
            e.name == "iq"
                && e.child("query", "jabber:iq:roster")
                    .and_then(|q| q.elements().next())
                    .is_some_and(|i| {
                        i.attr("jid") == Some(site.as_str())
                            && i.attr("subscription") == Some("none")
                    })
        })
        .await;
    // A ping is a barrier: the unsubscribe has been handled once it is answered.
    let r = alice
        .iq(&format!(
            "<iq type='get' id='pb' to='{GW}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"));
    let before = bed
        .web
        .requests()
        .iter()
        .filter(|r| r.target == "/feed.xml")
        .count();
    bed.web.route(
        "/feed.xml",
        Route::ok(rss("Site News", &[("5", "Fifth"), ("4", "Fourth")]))
            .header("Content-Type", "application/rss+xml"),
    );
    let atom_polls = |s: &server::Stats| {
        s.requests
            .iter()
            .filter(|r| r.target == "/atom.xml")
            .count()
    };
    let seen = atom_polls(&bed.web.stats());
    assert!(
        bed.web.wait_for(WAIT, |s| atom_polls(s) >= seen + 3).await,
        "the engine keeps polling the other feed"
    );
    let after = bed
        .web
        .requests()
        .iter()
        .filter(|r| r.target == "/feed.xml")
        .count();
    assert!(
        after <= before + 1,
        "an unfollowed feed is not polled ({before} → {after})"
    );
    assert!(
        !alice.backlog().iter().any(|e| body(e).contains("Fifth")),
        "nothing from an unfollowed feed"
    );
    alice
        .expect_silence(Duration::from_millis(200), |e| body(e).contains("Fifth"))
        .await;

    // Metrics count the fetches.
    let metrics = bed.ferry.metrics.render();
    assert!(
        metrics.contains("ferry_feed_fetches_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_feed_fetches_total{outcome=\"not_modified\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_feed_fetches_total{outcome=\"error\"}"),
        "{metrics}"
    );
}

/// The RSS gateway needs no registration: it is online for a user who never used it, and
/// a subscription to an address that names no feed is refused with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_users_see_the_gateway_online_and_hear_why_an_address_fails() {
    let bed = bed().await;
    let mut alice = login(&bed).await;

    alice
        .send(&format!("<presence type='subscribe' to='{GW}'/>"))
        .await;
    let p = alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("from") == Some(GW)
                && e.attr("type") != Some("subscribed")
                && e.attr("type") != Some("subscribe")
        })
        .await;
    assert_eq!(p.attr("type"), None, "the gateway is online: {p}");

    let bad = format!("nodots@{GW}");
    alice
        .send(&format!("<presence type='subscribe' to='{bad}'/>"))
        .await;
    let why = alice.recv(WAIT, |e| is_msg_from(e, GW)).await;
    assert!(
        body(&why).contains(&format!("Cannot subscribe to {bad}")),
        "{why}"
    );
}

/// Subscribes by chat command to `path` on the test server: the contact JID the gateway
/// names, once the contact has asked to be added (which alice approves, as clients do).
async fn subscribe(bed: &Bed, alice: &mut Client, path: &str) -> String {
    let answer = command(alice, &format!("subscribe {}", bed.web.url(path))).await;
    let jid = answer
        .split_once(" as ")
        .and_then(|(_, rest)| rest.split(';').next())
        .unwrap_or_else(|| panic!("no JID in {answer:?}"))
        .to_owned();
    alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("from") == Some(&jid)
                && e.attr("type") == Some("subscribe")
        })
        .await;
    alice
        .send(&format!("<presence type='subscribed' to='{jid}'/>"))
        .await;
    jid
}

fn entry_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e: &Element| is_msg_from(e, from) && e.child("body", NS_CLIENT).is_some()
}

/// `[rss] delivery = "headline"` makes entries headlines with the title as subject; the
/// `settings` command (by chat and ad hoc) changes the user's delivery both ways, and a
/// value that is neither is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_is_headline_by_config_and_the_users_choice_by_settings() {
    let bed = bed_with("delivery = \"headline\"\n").await;
    let feed = |items: &[(&str, &str)]| {
        Route::ok(rss("Heads", items)).header("Content-Type", "application/rss+xml")
    };
    bed.web
        .route("/h.xml", feed(&[("2", "Second"), ("1", "First")]));
    let mut alice = login(&bed).await;

    let shown = command(&mut alice, "settings").await;
    assert!(shown.contains("delivery = headline"), "{shown}");

    // The configured default: headlines, titled.
    let jid = subscribe(&bed, &mut alice, "/h.xml").await;
    for title in ["First", "Second"] {
        let m = alice.recv(WAIT, entry_from(&jid)).await;
        assert_eq!(m.attr("type"), Some("headline"), "{m}");
        assert_eq!(
            m.child_text("subject", NS_CLIENT).as_deref(),
            Some(title),
            "{m}"
        );
    }

    // The user's choice: chat.
    let answer = command(&mut alice, "settings delivery chat").await;
    assert!(answer.contains("delivery is now chat"), "{answer}");
    let shown = command(&mut alice, "settings").await;
    assert!(shown.contains("delivery = chat"), "{shown}");
    bed.web.route(
        "/h.xml",
        feed(&[("3", "Third"), ("2", "Second"), ("1", "First")]),
    );
    let m = alice.recv(WAIT, entry_from(&jid)).await;
    assert!(body(&m).starts_with("Third"), "{m}");
    assert_eq!(m.attr("type"), Some("chat"), "{m}");

    let answer = command(&mut alice, "settings delivery loud").await;
    assert!(
        answer.contains("delivery is chat or headline, not loud"),
        "{answer}"
    );

    // Back to headline through the ad-hoc command's `delivery` field, in any case, as the
    // config's `delivery` is read.
    let r = alice
        .iq(&format!("<iq type='set' id='s1' to='{GW}'><command xmlns='http://jabber.org/protocol/commands' node='settings' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='delivery'><value>Headline</value></field></x></command></iq>"))
        .await;
    let cmd = r
        .child("command", "http://jabber.org/protocol/commands")
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(cmd.attr("status"), Some("completed"), "{r}");
    assert!(
        client::client_xml(&r)
            .to_lowercase()
            .contains("delivery is now headline"),
        "{r}"
    );
    bed.web.route(
        "/h.xml",
        feed(&[
            ("4", "Fourth"),
            ("3", "Third"),
            ("2", "Second"),
            ("1", "First"),
        ]),
    );
    let m = alice.recv(WAIT, entry_from(&jid)).await;
    assert_eq!(m.attr("type"), Some("headline"), "{m}");
    assert_eq!(
        m.child_text("subject", NS_CLIENT).as_deref(),
        Some("Fourth"),
        "{m}"
    );
}

/// `settings delivery JID headline` gives one feed its own delivery, which beats the
/// user's default (by chat, and by the ad-hoc command's field); `settings` lists it with
/// the quiet hours; `settings quiet` takes a UTC range (one that wraps midnight too) and
/// refuses a bad one with a reason; entries that come in quiet hours are held, not lost,
/// and arrive when the user turns them off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feeds_own_delivery_and_quiet_hours_by_settings() {
    let bed = bed().await;
    let feed = |title: &str, items: &[(&str, &str)]| {
        Route::ok(rss(title, items)).header("Content-Type", "application/rss+xml")
    };
    bed.web.route("/a.xml", feed("Feed A", &[("a1", "Apple")]));
    bed.web.route("/b.xml", feed("Feed B", &[("b1", "Banana")]));
    let mut alice = login(&bed).await;
    let a = subscribe(&bed, &mut alice, "/a.xml").await;
    let b = subscribe(&bed, &mut alice, "/b.xml").await;
    for jid in [&a, &b] {
        let m = alice.recv(WAIT, entry_from(jid)).await;
        assert_eq!(m.attr("type"), Some("chat"), "the default: {m}");
    }

    // A's own delivery, by its JID; the user's default stays chat.
    let answer = command(&mut alice, &format!("settings delivery {a} headline")).await;
    assert_eq!(answer, format!("delivery of {a} is now headline."));
    let shown = command(&mut alice, "settings").await;
    for line in [
        "delivery = chat (chat | headline)".to_owned(),
        "quiet = off (HH:MM-HH:MM in UTC | off)".to_owned(),
        format!("delivery {a} = headline (chat | headline | default)"),
    ] {
        assert!(shown.lines().any(|l| l == line), "{line:?} in {shown}");
    }
    assert!(!shown.contains(&b), "{shown}");
    bed.web.route(
        "/a.xml",
        feed("Feed A", &[("a2", "Apricot"), ("a1", "Apple")]),
    );
    bed.web.route(
        "/b.xml",
        feed("Feed B", &[("b2", "Blueberry"), ("b1", "Banana")]),
    );
    let m = alice.recv(WAIT, entry_from(&a)).await;
    assert_eq!(m.attr("type"), Some("headline"), "A's own: {m}");
    assert_eq!(
        m.child_text("subject", NS_CLIENT).as_deref(),
        Some("Apricot")
    );
    let m = alice.recv(WAIT, entry_from(&b)).await;
    assert_eq!(m.attr("type"), Some("chat"), "the default: {m}");
    assert!(body(&m).starts_with("Blueberry"), "{m}");

    // A feed nobody follows, and a word that is no delivery, are refused.
    let answer = command(
        &mut alice,
        &format!("settings delivery {} headline", bed.web.url("/c.xml")),
    )
    .await;
    assert!(answer.contains("you do not follow"), "{answer}");
    let answer = command(&mut alice, &format!("settings delivery {b} loud")).await;
    assert!(
        answer.contains("a feed's delivery is chat, headline or default, not loud"),
        "{answer}"
    );

    // By the ad-hoc command: the `delivery` field takes `JID VALUE` too (here by address).
    let r = alice
        .iq(&format!("<iq type='set' id='s1' to='{GW}'><command xmlns='http://jabber.org/protocol/commands' node='settings' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='delivery'><value>{} headline</value></field></x></command></iq>", bed.web.url("/b.xml")))
        .await;
    assert!(
        client::client_xml(&r).contains(&format!("delivery of {b} is now headline")),
        "{r}"
    );

    // Quiet hours: bad ranges are refused with the reason.
    let answer = command(&mut alice, "settings quiet 25:00-07:00").await;
    assert!(answer.contains("25:00 is not a time of day"), "{answer}");
    let answer = command(&mut alice, "settings quiet tonight").await;
    assert!(
        answer.contains("quiet hours are HH:MM-HH:MM in UTC (e.g. 22:00-07:00), or off"),
        "{answer}"
    );
    let answer = command(&mut alice, "settings quiet 23:00-06:30").await;
    assert_eq!(answer, "quiet is now 23:00-06:30 UTC.");
    // The ad-hoc command's one field takes quiet hours by name too.
    let r = alice
        .iq(&format!("<iq type='set' id='s2' to='{GW}'><command xmlns='http://jabber.org/protocol/commands' node='settings' action='execute'><x xmlns='jabber:x:data' type='submit'><field var='delivery'><value>quiet 22:00-07:00</value></field></x></command></iq>"))
        .await;
    assert!(
        client::client_xml(&r).contains("quiet is now 22:00-07:00 UTC."),
        "{r}"
    );

    // Quiet hours around now (UTC): a new entry is held, not sent, while A is polled on.
    let now_min = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        / 60)
        % 1440;
    let hhmm = |m: u64| format!("{:02}:{:02}", m / 60, m % 60);
    let range = format!(
        "{}-{}",
        hhmm((now_min + 1440 - 60) % 1440),
        hhmm((now_min + 60) % 1440)
    );
    let answer = command(&mut alice, &format!("settings quiet {range}")).await;
    assert_eq!(answer, format!("quiet is now {range} UTC."));
    let polls = |r: &[server::Request]| r.iter().filter(|r| r.target == "/a.xml").count();
    let seen = polls(&bed.web.requests());
    bed.web.route(
        "/a.xml",
        feed(
            "Feed A",
            &[("a3", "Avocado"), ("a2", "Apricot"), ("a1", "Apple")],
        ),
    );
    // Two polls later the first one that saw it has been handled; the answer to a command
    // sent after that comes behind anything the gateway sent before it.
    assert!(
        bed.web
            .wait_for(WAIT, |s| polls(&s.requests) >= seen + 3)
            .await,
        "A is still polled"
    );
    let shown = command(&mut alice, "settings").await;
    assert!(
        shown
            .lines()
            .any(|l| l == format!("quiet = {range} UTC (HH:MM-HH:MM in UTC | off)")),
        "{shown}"
    );
    assert!(shown.contains("Quiet hours are in UTC"), "{shown}");
    assert!(
        !alice.backlog().iter().any(|e| body(e).contains("Avocado")),
        "held in quiet hours: {:?}",
        alice.backlog()
    );
    let answer = command(&mut alice, "settings quiet off").await;
    assert_eq!(answer, "quiet is now off.");
    let m = alice.recv(WAIT, entry_from(&a)).await;
    assert!(body(&m).starts_with("Avocado"), "released: {m}");
}

/// `list` names each followed feed's JID, title and address; `unsubscribe` takes a JID or
/// the feed's address, takes the contact off the roster's subscription, and stops the
/// feed: it is no longer polled and its new entries never arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_by_command_and_list() {
    let bed = bed().await;
    let port = bed.web.addr().port();
    let feed = |title: &str, items: &[(&str, &str)]| {
        Route::ok(rss(title, items)).header("Content-Type", "application/rss+xml")
    };
    bed.web
        .route("/one.xml", feed("Feed One", &[("o1", "Uno")]));
    bed.web
        .route("/two.xml", feed("Feed Two", &[("t1", "Dos")]));
    let mut alice = login(&bed).await;

    let list = command(&mut alice, "list").await;
    assert!(list.contains("You follow no feeds"), "{list}");

    let one = subscribe(&bed, &mut alice, "/one.xml").await;
    let two = subscribe(&bed, &mut alice, "/two.xml").await;
    assert_eq!(one, format!("127.0.0.1-{port}@{GW}"));
    assert_eq!(two, format!("127.0.0.1-{port}-2@{GW}"));
    assert!(body(&alice.recv(WAIT, entry_from(&one)).await).starts_with("Uno"));
    assert!(body(&alice.recv(WAIT, entry_from(&two)).await).starts_with("Dos"));

    let list = command(&mut alice, "list").await;
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "{list}");
    for (jid, title, path) in [
        (&one, "Feed One", "/one.xml"),
        (&two, "Feed Two", "/two.xml"),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(jid.as_str())
                && l.contains(title)
                && l.contains(&bed.web.url(path))),
            "{jid} {title}: {list}"
        );
    }

    // By JID: the contact unsubscribes both ways, so the roster no longer shares presence.
    let roster_item = |roster: &Element, jid: &str| {
        roster.child("query", "jabber:iq:roster").and_then(|q| {
            q.elements()
                .find(|i| i.attr("jid") == Some(jid))
                .and_then(|i| i.attr("subscription"))
                .map(str::to_owned)
        })
    };
    let roster = alice
        .iq("<iq type='get' id='ro0'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    assert_eq!(
        roster_item(&roster, &one).as_deref(),
        Some("from"),
        "{roster}"
    );
    let answer = command(&mut alice, &format!("unsubscribe {one}")).await;
    assert_eq!(answer, format!("Unsubscribed from {one}."));
    let roster = alice
        .iq("<iq type='get' id='ro1'><query xmlns='jabber:iq:roster'/></iq>")
        .await;
    assert!(
        matches!(roster_item(&roster, &one).as_deref(), None | Some("none")),
        "{roster}"
    );
    let list = command(&mut alice, "list").await;
    assert!(!list.contains(&one) && list.contains(&two), "{list}");
    let answer = command(&mut alice, &format!("unsubscribe {one}")).await;
    assert!(
        answer.contains(&format!("you do not follow {one}")),
        "{answer}"
    );

    // Nothing more from the unfollowed feed: it is not polled while the other one is, and
    // its new entry never comes while the other's does.
    let polls = |path: &str| {
        bed.web
            .requests()
            .iter()
            .filter(|r| r.target == path)
            .count()
    };
    let one_before = polls("/one.xml");
    bed.web.route(
        "/one.xml",
        feed("Feed One", &[("o2", "Due"), ("o1", "Uno")]),
    );
    bed.web.route(
        "/two.xml",
        feed("Feed Two", &[("t2", "Tres"), ("t1", "Dos")]),
    );
    assert!(body(&alice.recv(WAIT, entry_from(&two)).await).starts_with("Tres"));
    let two_seen = polls("/two.xml");
    assert!(
        bed.web
            .wait_for(WAIT, |s| s
                .requests
                .iter()
                .filter(|r| r.target == "/two.xml")
                .count()
                >= two_seen + 2)
            .await,
        "the other feed is still polled"
    );
    let one_after = polls("/one.xml");
    assert!(
        one_after <= one_before + 1,
        "an unfollowed feed is not polled ({one_before} → {one_after})"
    );
    assert!(
        !alice.backlog().iter().any(|e| body(e).contains("Due")),
        "nothing from an unfollowed feed: {:?}",
        alice.backlog()
    );

    // By the feed's address.
    let answer = command(
        &mut alice,
        &format!("unsubscribe {}", bed.web.url("/two.xml")),
    )
    .await;
    assert_eq!(answer, format!("Unsubscribed from {two}."));
    let list = command(&mut alice, "list").await;
    assert!(list.contains("You follow no feeds"), "{list}");
}
