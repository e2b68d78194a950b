//! The email bridge end to end against real servers: Prosody, ferry with the real email
//! bridge on SQLite, and Dovecot (IMAP, LMTP, submission) with OpenSMTPD delivering into it
//! (`tests/common/mail.rs`). A real XMPP client logs in as alice; "bob" is a mailbox on the
//! same mail server, written to and read from over SMTP and the Maildir.
//!
//! Covered: a wrong password refused at registration (`not-authorized`, naming the server);
//! registration and the gateway's presence; XMPP → mail (From, Subject, body, a stable
//! Message-ID, the XEP-0184 receipt on the server's 250, a copy in Sent); mail → XMPP
//! (the subscription request with the sender's name as nickname, subject, thread);
//! threaded replies both ways (In-Reply-To/References ↔ `<thread/>` and XEP-0461);
//! HTML-only mail as readable text with its links; attachments both ways (inbound served
//! under `/media/`, outbound fetched from a link and attached); a 5xx rejection quoted in
//! an error stanza; an IMAP server restart while mail arrives (nothing lost, nothing twice);
//! and ferry killed with SIGKILL in the middle of 200 outbound messages.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::client::{self, Client, body, condition, error_text};
use common::mail::MailServer;
use common::prosody::Prosody;
use ferry::app::Running;
use ferry::config::Config;
use ferry::xml::Element;
use ferry_bridge_api::BridgeKind;
use ferry_email::mime::{self, Limits};

const GW: &str = "email.localhost";
const SECRET: &str = "email-secret";
const NS_CLIENT: &str = "jabber:client";
const NS_RECEIPTS: &str = "urn:xmpp:receipts";
const NS_OOB: &str = "jabber:x:oob";
const WAIT: Duration = Duration::from_secs(30);
const ALICE: &str = "alice@example.test";
const ALICE_PW: &str = "alice-mail-pw";
const BOB: &str = "bob@example.test";
const BOB_PW: &str = "bob-mail-pw";

fn bob_jid() -> String {
    format!("bob\\40example.test@{GW}")
}

fn config_text(prosody: &Prosody, mail: &MailServer, http_port: u16, extra: &str) -> String {
    format!(
        r#"[xmpp]
host = "127.0.0.1"
port = {component_port}
allowed = ["localhost"]
[http]
listen = "127.0.0.1:{http_port}"
public_url = "http://127.0.0.1:{http_port}/"
[email]
domain = "{GW}"
secret = "{SECRET}"
imap_host = "127.0.0.1"
imap_port = {imap}
imap_tls = "none"
smtp_host = "127.0.0.1"
smtp_port = {smtp}
smtp_tls = "none"
{extra}
"#,
        component_port = prosody.component_port,
        imap = mail.imap_port(),
        smtp = mail.submission_port(),
    )
}

struct Bed {
    prosody: Prosody,
    mail: MailServer,
    ferry: Running,
    http: String,
    _dir: tempfile::TempDir,
}

/// Ferry's logs in the test output, as `RUST_LOG` asks (none by default).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

async fn bed() -> Bed {
    logs();
    let reserved = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = reserved.local_addr().expect("addr").port();
    let prosody = Prosody::start(&[(GW, SECRET)], &[("alice", "alice")]).await;
    let mail = MailServer::start(&[(ALICE, ALICE_PW), (BOB, BOB_PW)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg =
        Config::from_str_at(&config_text(&prosody, &mail, port, ""), dir.path()).expect("config");
    drop(reserved);
    let ferry = common::start_ferry(&cfg, BridgeKind::Email, &prosody).await;
    Bed {
        prosody,
        mail,
        ferry,
        http: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    }
}

impl Bed {
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
        drop(self.mail);
    }
}

async fn login(prosody: &Prosody) -> Client {
    let c = client::login(prosody.c2s_port, "alice", "alice", "test").await;
    c.send_presence().await;
    c
}

fn register_iq(id: &str, email: &str, password: &str) -> String {
    format!(
        "<iq type='set' id='{id}' to='{GW}'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>\
         <field var='email'><value>{email}</value></field>\
         <field var='name'><value>Alice Example</value></field>\
         <field var='password'><value>{password}</value></field></x></query></iq>"
    )
}

fn subscribe_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e: &Element| {
        e.name == "presence" && e.attr("type") == Some("subscribe") && e.attr("from") == Some(from)
    }
}

fn chat_from(from: &str) -> impl Fn(&Element) -> bool + '_ {
    move |e: &Element| {
        e.name == "message"
            && e.attr("from") == Some(from)
            && e.attr("type") == Some("chat")
            && e.child("body", NS_CLIENT).is_some()
    }
}

/// Registers alice's mailbox and waits until the gateway shows it working.
async fn register(alice: &mut Client) {
    let r = alice.iq(&register_iq("reg", ALICE, ALICE_PW)).await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    alice.recv(WAIT, subscribe_from(GW)).await;
    let p = alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("from") == Some(GW)
                && e.attr("type").is_none()
                && e.child_text("status", NS_CLIENT)
                    .is_some_and(|s| s.contains(ALICE))
        })
        .await;
    assert!(p.child("show", NS_CLIENT).is_none(), "{p}");
}

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

fn parse(raw: &[u8]) -> mime::Mail {
    mime::parse(raw, &Limits::default()).expect("a readable mail")
}

fn mail_from_bob(subject: &str, extra_headers: &str, body: &str, id: &str) -> Vec<u8> {
    format!(
        "From: Bob Builder <{BOB}>\r\nTo: {ALICE}\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\nDate: Tue, 24 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n{extra_headers}\r\n{body}"
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_both_ways_with_threads_html_and_attachments() {
    let bed = bed().await;
    let mut alice = login(&bed.prosody).await;
    let bob = bob_jid();

    // 1. A wrong password is refused before anything is kept, naming the server (here
    // sent in the legacy XEP-0077 fields, for clients without forms).
    let r = alice
        .iq(&format!(
            "<iq type='set' id='bad' to='{GW}'><query xmlns='jabber:iq:register'><email>{ALICE}</email><password>wrong</password></query></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("error"), "{r}");
    assert_eq!(condition(&r).as_deref(), Some("not-authorized"), "{r}");
    assert!(error_text(&r).contains("IMAP login failed"), "{r}");
    register(&mut alice).await;

    // 2. XMPP → mail, with the receipt on the server's 250 and a copy in Sent.
    alice
        .send(&format!(
            "<message type='chat' id='out-1' to='{bob}'><subject>Lunch?</subject><body>Hi Bob,\nlunch at noon?</body><request xmlns='{NS_RECEIPTS}'/></message>"
        ))
        .await;
    receipt(&mut alice, "out-1", &bob).await;
    let got = bed.mail.wait_for_messages(BOB, "INBOX", 1, WAIT).await;
    let m = parse(&got[0]);
    let from = m.from.as_ref().expect("From");
    assert_eq!(from.address, ALICE);
    assert_eq!(from.name.as_deref(), Some("Alice Example"));
    assert_eq!(m.subject.as_deref(), Some("Lunch?"));
    assert_eq!(m.text.trim_end(), "Hi Bob,\nlunch at noon?");
    let first_id = m.message_id.clone().expect("Message-ID");
    assert!(first_id.ends_with("@example.test"), "{first_id}");
    let sent = bed.mail.wait_for_messages(ALICE, "Sent", 1, WAIT).await;
    assert_eq!(
        parse(&sent[0]).message_id.as_deref(),
        Some(first_id.as_str())
    );

    // 3. Mail → XMPP: bob replies by mail. The new contact asks to be added with bob's
    // name, and the reply points at alice's message (XEP-0461) in a thread.
    bed.mail
        .inject(
            BOB,
            &[ALICE],
            &mail_from_bob(
                "Re: Lunch?",
                &format!("In-Reply-To: <{first_id}>\r\nReferences: <{first_id}>\r\nContent-Type: text/plain; charset=utf-8\r\n"),
                "Sure, noon works. Grüße!\r\n",
                "reply-1@example.test",
            ),
        )
        .await;
    let sub = alice.recv(WAIT, subscribe_from(&bob)).await;
    assert_eq!(
        sub.child_text("nick", "http://jabber.org/protocol/nick")
            .as_deref(),
        Some("Bob Builder"),
        "{sub}"
    );
    let m = alice.recv(WAIT, chat_from(&bob)).await;
    assert_eq!(body(&m), "Sure, noon works. Grüße!");
    assert_eq!(
        m.child_text("subject", NS_CLIENT).as_deref(),
        Some("Re: Lunch?")
    );
    let thread = m
        .child_text("thread", NS_CLIENT)
        .expect("every mail has a thread");
    let reply = m
        .child("reply", "urn:xmpp:reply:0")
        .expect("a XEP-0461 reply");
    assert_eq!(reply.attr("id"), Some("out-1"), "{m}");
    let in_id = m.attr("id").expect("id").to_owned();
    // The contact's vCard carries the name from the mail.
    let card = alice
        .iq(&format!(
            "<iq type='get' id='vc' to='{bob}'><vCard xmlns='vcard-temp'/></iq>"
        ))
        .await;
    assert_eq!(
        card.child("vCard", "vcard-temp")
            .and_then(|v| v.child_text("FN", "vcard-temp"))
            .as_deref(),
        Some("Bob Builder"),
        "{card}"
    );

    // 4. A reply in the chat lands in the same mail thread.
    alice
        .send(&format!(
            "<message type='chat' id='out-2' to='{bob}'><body>Great, see you.</body><thread>{thread}</thread><reply xmlns='urn:xmpp:reply:0' id='{in_id}' to='{bob}'/><request xmlns='{NS_RECEIPTS}'/></message>"
        ))
        .await;
    receipt(&mut alice, "out-2", &bob).await;
    let got = bed.mail.wait_for_messages(BOB, "INBOX", 2, WAIT).await;
    let m2 = parse(&got[1]);
    assert_eq!(m2.in_reply_to, vec!["reply-1@example.test".to_owned()]);
    assert!(
        m2.references.contains(&"reply-1@example.test".to_owned()),
        "{:?}",
        m2.references
    );
    assert!(m2.references.contains(&first_id), "{:?}", m2.references);
    // A chat reply without a subject answers the mail's.
    assert_eq!(m2.subject.as_deref(), Some("Re: Lunch?"));

    // And bob's next mail in that thread continues the same XMPP thread.
    let second_id = m2.message_id.clone().expect("Message-ID");
    bed.mail
        .inject(
            BOB,
            &[ALICE],
            &mail_from_bob(
                "Re: Lunch?",
                &format!("In-Reply-To: <{second_id}>\r\nReferences: <{first_id}> <reply-1@example.test> <{second_id}>\r\n"),
                "See you!\r\n",
                "reply-2@example.test",
            ),
        )
        .await;
    let m = alice.recv(WAIT, chat_from(&bob)).await;
    assert_eq!(body(&m), "See you!");
    assert_eq!(
        m.child_text("thread", NS_CLIENT).as_deref(),
        Some(thread.as_str())
    );
    assert_eq!(
        m.child("reply", "urn:xmpp:reply:0")
            .and_then(|r| r.attr("id")),
        Some("out-2")
    );

    // 5. HTML-only mail arrives as readable text, links kept.
    bed.mail
        .inject(
            BOB,
            &[ALICE],
            &mail_from_bob(
                "Newsletter",
                "Content-Type: text/html; charset=utf-8\r\n",
                "<html><head><style>p{color:red}</style></head><body><h1>Big news</h1><p>Read <a href=\"https://example.org/news\">the story</a> &amp; smile.</p></body></html>\r\n",
                "html-1@example.test",
            ),
        )
        .await;
    let m = alice.recv(WAIT, chat_from(&bob)).await;
    let text = body(&m);
    assert!(text.contains("Big news"), "{text}");
    assert!(
        text.contains("the story <https://example.org/news>")
            || text.contains("the story (https://example.org/news)"),
        "{text}"
    );
    assert!(text.contains("& smile."), "{text}");
    assert!(!text.contains('<') || text.contains("<https://"), "{text}");
    assert!(!text.contains("color:red"), "{text}");

    // 6. An attachment arrives as a link ferry serves, byte for byte.
    let payload: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let b64 = client::base64(&payload);
    let wrapped: String = b64
        .as_bytes()
        .chunks(76)
        .map(|c| format!("{}\r\n", String::from_utf8_lossy(c)))
        .collect();
    bed.mail
        .inject(
            BOB,
            &[ALICE],
            &mail_from_bob(
                "The file",
                "Content-Type: multipart/mixed; boundary=\"XX\"\r\n",
                &format!(
                    "--XX\r\nContent-Type: text/plain\r\n\r\nHere it is.\r\n--XX\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{wrapped}--XX--\r\n"
                ),
                "file-1@example.test",
            ),
        )
        .await;
    let m = alice.recv(WAIT, chat_from(&bob)).await;
    let url = m
        .child("x", NS_OOB)
        .and_then(|x| x.child_text("url", NS_OOB))
        .expect("an XEP-0066 link");
    assert!(url.starts_with(&format!("{}/media/", bed.http)), "{url}");
    assert!(url.ends_with("/data.bin"), "{url}");
    assert!(body(&m).starts_with("Here it is."), "{m}");
    let fetched = reqwest::get(&url).await.expect("media answers");
    assert_eq!(fetched.status().as_u16(), 200);
    assert_eq!(fetched.bytes().await.expect("bytes").to_vec(), payload);

    // 7. A link sent from XMPP goes out as an attachment (here: that same file).
    alice
        .send(&format!(
            "<message type='chat' id='out-3' to='{bob}'><body>{url}</body><x xmlns='{NS_OOB}'><url>{url}</url></x><request xmlns='{NS_RECEIPTS}'/></message>"
        ))
        .await;
    receipt(&mut alice, "out-3", &bob).await;
    let got = bed.mail.wait_for_messages(BOB, "INBOX", 3, WAIT).await;
    let m3 = parse(&got[2]);
    assert_eq!(
        m3.attachments.len(),
        1,
        "{:?}",
        m3.attachments.iter().map(|a| &a.name).collect::<Vec<_>>()
    );
    assert_eq!(m3.attachments[0].name, "data.bin");
    assert_eq!(m3.attachments[0].data, payload);

    // 8. A 5xx from the server fails at once, quoting it.
    alice
        .send(&format!(
            "<message type='chat' id='out-4' to='nobody\\40example.test@{GW}'><body>anyone?</body><request xmlns='{NS_RECEIPTS}'/></message>"
        ))
        .await;
    let e = alice.recv(WAIT, |e| e.attr("id") == Some("out-4")).await;
    assert_eq!(e.attr("type"), Some("error"), "{e}");
    assert_eq!(
        condition(&e).as_deref(),
        Some("recipient-unavailable"),
        "{e}"
    );
    assert!(error_text(&e).contains("55"), "the server's words: {e}");
    assert!(
        error_text(&e).starts_with("mailbox does not exist"),
        "what it means, first: {e}"
    );

    bed.stop(vec![alice]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_restart_while_mail_arrives_loses_nothing_and_repeats_nothing() {
    let mut bed = bed().await;
    let mut alice = login(&bed.prosody).await;
    register(&mut alice).await;
    let bob = bob_jid();
    let send = |i: usize| {
        mail_from_bob(
            &format!("mail {i}"),
            "",
            &format!("number {i}\r\n"),
            &format!("restart-{i}@example.test"),
        )
    };
    for i in 0..5 {
        bed.mail.inject(BOB, &[ALICE], &send(i)).await;
    }
    // Some arrive, then Dovecot goes away while more mail comes in. OpenSMTPD delivers
    // the five over parallel LMTP sessions, so the mailbox (and with it the chat) need not
    // hold them in the order they were sent: the first chat may be any of them.
    let first = alice.recv(WAIT, chat_from(&bob)).await;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    seen.insert(body(&first), 1);
    bed.mail.stop_imap().await;
    // The gateway shows the broken mailbox, and why.
    let p = alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("from") == Some(GW)
                && e.child_text("show", NS_CLIENT).as_deref() == Some("xa")
        })
        .await;
    let why = p.child_text("status", NS_CLIENT).unwrap_or_default();
    assert!(why.contains("IMAP"), "{p}");
    for i in 5..10 {
        bed.mail.inject(BOB, &[ALICE], &send(i)).await;
    }
    bed.mail.start_imap().await;
    bed.mail.flush_queue();
    bed.mail.wait_for_messages(ALICE, "INBOX", 10, WAIT).await;
    while seen.len() < 10 {
        let Some(m) = alice
            .try_recv(Duration::from_secs(60), chat_from(&bob))
            .await
        else {
            panic!(
                "no further mail as chat within 60 s; seen so far: {seen:?}\n{}",
                bed.mail.logs()
            );
        };
        *seen.entry(body(&m)).or_default() += 1;
    }
    // The gateway is available again.
    alice
        .recv(WAIT, |e| {
            e.name == "presence"
                && e.attr("from") == Some(GW)
                && e.attr("type").is_none()
                && e.child("show", NS_CLIENT).is_none()
        })
        .await;
    // Nothing comes twice, even after the session's next catch-up.
    alice
        .expect_silence(Duration::from_secs(2), chat_from(&bob))
        .await;
    for i in 0..10 {
        assert_eq!(seen.get(&format!("number {i}")), Some(&1), "{seen:?}");
    }
    bed.stop(vec![alice]).await;
}

/// A ferry process, killed when dropped (also when the test panics).
struct FerryProcess(std::process::Child);

impl FerryProcess {
    /// SIGKILL, and wait for it to be gone.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for FerryProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs the ferry binary on `config`, logging to `log`.
fn spawn_ferry(config: &Path, log: &Path) -> FerryProcess {
    let out = std::fs::File::create(log).expect("log file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ferry"))
        .arg("--config")
        .arg(config)
        .arg("run")
        .env_remove("FERRY_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("start ferry");
    FerryProcess(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_200_messages_loses_none() {
    const N: usize = 200;
    let prosody = Prosody::start(&[(GW, SECRET)], &[("alice", "alice")]).await;
    let mail = MailServer::start(&[(ALICE, ALICE_PW), (BOB, BOB_PW)]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        config_text(&prosody, &mail, port, "")
            + "[database]\nurl = \"sqlite://ferry.db\"\n[secrets]\nkey_file = \"ferry.key\"\n",
    )
    .expect("config");
    let log = dir.path().join("ferry.log");
    let mut ferry = spawn_ferry(&config, &log);
    let mut alice = login(&prosody).await;
    // The gateway is there once it answers a ping.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = alice
            .iq(&format!(
                "<iq type='get' id='{}' to='{GW}'><ping xmlns='urn:xmpp:ping'/></iq>",
                client::next_id()
            ))
            .await;
        if r.attr("type") == Some("result") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ferry did not come up:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    register(&mut alice).await;
    let bob = bob_jid();
    for i in 0..N {
        alice
            .send(&format!(
                "<message type='chat' id='k-{i}' to='{bob}'><body>message {i}</body></message>"
            ))
            .await;
    }
    // A ping is a barrier: once answered, every message before it is stored.
    let r = alice
        .iq(&format!(
            "<iq type='get' id='barrier' to='{GW}'><ping xmlns='urn:xmpp:ping'/></iq>"
        ))
        .await;
    assert_eq!(r.attr("type"), Some("result"), "{r}");
    // Kill ferry at once: the outbox is in the middle of sending.
    ferry.kill();
    let before = mail.mailbox_messages(BOB, "INBOX").len();
    let mut ferry = spawn_ferry(&config, &log);
    // Until every message is there once (repeats may come first).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let (got, by_body) = loop {
        let got = mail.mailbox_messages(BOB, "INBOX");
        let mut by_body: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for raw in &got {
            let m = parse(raw);
            by_body
                .entry(m.text.trim().to_owned())
                .or_default()
                .push(m.message_id.unwrap_or_default());
        }
        if by_body.len() >= N {
            break (got, by_body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {N} arrived; ferry's log:\n{}",
            by_body.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        alice.sync().await;
    };
    ferry.kill();
    for i in 0..N {
        let ids = by_body
            .get(&format!("message {i}"))
            .unwrap_or_else(|| panic!("message {i} never arrived"));
        assert!(
            ids.iter().all(|id| id == &ids[0] && !id.is_empty()),
            "a repeat must carry the same Message-ID: {ids:?}"
        );
    }
    let duplicates = got.len() - N;
    println!(
        "SIGKILL with {before} of {N} messages in the recipient's mailbox: all {N} arrived after the restart, {duplicates} duplicate(s) (same Message-ID)"
    );
    assert_eq!(by_body.len(), N);
    alice.close().await;
    let mut prosody = prosody;
    prosody.stop().await;
}
