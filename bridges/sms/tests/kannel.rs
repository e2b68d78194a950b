//! ferry's Kannel provider against a real Kannel 1.4.5 (bearerbox, smsbox and the fake SMS
//! centre, see `common/kannel.rs`): the credentials check, texts sent in GSM-7 and UCS-2,
//! their delivery reports, texts from phones by `get-url` (`%b` and `%a`) and `post-url`,
//! and a webhook with a wrong token. A small axum server plays ferry's webhook endpoint and
//! records what Kannel calls.

#[path = "common/kannel.rs"]
mod harness;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use ferry_bridge_api::ErrorKind;
use ferry_sms::provider::{
    self, Accepted, Context, Delivery, Event, Hook, HookError, InboundText, Kind, OutText,
    Provider, ProviderConfig, Request,
};
use harness::{Kannel, KannelOptions, SentText};
use tokio::sync::{Mutex, mpsc};

const WAIT: Duration = Duration::from_secs(15);
const USER: &str = "ferry";
const PASSWORD: &str = "kannel-pw";
const GATEWAY: &str = "+12015550100";
const PHONE: &str = "+4915112345678";

/// A request Kannel made to the webhook endpoint.
#[derive(Debug)]
struct Hit {
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Hit {
    fn hook(&self) -> Hook {
        match self.path.as_str() {
            "/sms/kannel/inbound" => Hook::Inbound,
            "/sms/kannel/status" => Hook::Status,
            other => panic!("kannel called {other}"),
        }
    }

    fn request<'a>(&'a self, url: &'a str, query: &'a str) -> Request<'a> {
        Request {
            method: self.method.as_str(),
            url,
            query,
            headers: &self.headers,
            body: &self.body,
            now: 0,
        }
    }
}

/// ferry's webhook endpoint, played by a recorder.
struct Hooks {
    public_url: String,
    hits: Mutex<mpsc::UnboundedReceiver<Hit>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Hooks {
    async fn start() -> Hooks {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(Hit {
                        method,
                        path: uri.path().to_owned(),
                        query: uri.query().unwrap_or("").to_owned(),
                        headers,
                        body: body.to_vec(),
                    });
                    StatusCode::OK
                }
            },
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hooks {
            public_url: format!("http://{addr}"),
            hits: Mutex::new(rx),
            server,
        }
    }

    fn inbound_url(&self, token: &str, params: &str) -> String {
        format!(
            "{}/sms/kannel/inbound?token={token}&{params}",
            self.public_url
        )
    }

    async fn next(&self) -> Hit {
        let mut rx = self.hits.lock().await;
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .ok()
            .flatten()
            .expect("kannel called no webhook in time")
    }
}

fn config(sendsms_url: &str, password: &str, token: &str) -> ProviderConfig {
    ProviderConfig {
        name: "kannel".into(),
        kind: Kind::Kannel,
        api_base: None,
        account_sid: None,
        auth_token: None,
        api_key: None,
        public_key: None,
        messaging_profile_id: None,
        api_secret: None,
        signature_secret: None,
        sendsms_url: Some(sendsms_url.into()),
        username: Some(USER.into()),
        password: Some(password.into()),
        inbound_token: Some(token.into()),
    }
}

fn provider(hooks: &Hooks, sendsms_url: &str, password: &str, token: &str) -> Arc<dyn Provider> {
    let ctx = Context {
        public_url: hooks.public_url.clone(),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
    };
    provider::build(&config(sendsms_url, password, token), &ctx).expect("provider")
}

/// Verifies and parses one recorded request the way ferry's endpoint would.
fn events(p: &dyn Provider, hooks: &Hooks, hit: &Hit) -> Vec<Event> {
    let url = if hit.query.is_empty() {
        format!("{}{}", hooks.public_url, hit.path)
    } else {
        format!("{}{}?{}", hooks.public_url, hit.path, hit.query)
    };
    let req = hit.request(&url, &hit.query);
    p.verify(hit.hook(), &req)
        .unwrap_or_else(|e| panic!("verify refused {hit:?}: {e}"));
    p.parse(hit.hook(), &req)
        .unwrap_or_else(|e| panic!("parse refused {hit:?}: {e}"))
}

fn out(body: &str, reference: &str) -> OutText {
    OutText {
        from: GATEWAY.into(),
        to: PHONE.into(),
        body: body.into(),
        media: Vec::new(),
        reference: reference.into(),
    }
}

/// The delivery reports seen so far, by reference. Kannel makes its report calls from
/// several threads, so one text's reports (8, then 1 from the fake SMSC) may arrive in
/// either order, and interleaved with another text's.
#[derive(Default)]
struct Reports(Vec<(String, Delivery)>);

impl Reports {
    /// Waits until `reference` has had all of `want` (in any order).
    async fn wait(&mut self, p: &dyn Provider, hooks: &Hooks, reference: &str, want: &[Delivery]) {
        loop {
            let got: Vec<&Delivery> = self
                .0
                .iter()
                .filter(|(r, _)| r == reference)
                .map(|(_, d)| d)
                .collect();
            if want.iter().all(|w| got.contains(&w)) {
                return;
            }
            let hit = hooks.next().await;
            assert_eq!(hit.hook(), Hook::Status, "{hit:?}");
            for e in events(p, hooks, &hit) {
                let Event::Status(r) = e else {
                    panic!("status hook gave {e:?}")
                };
                assert_eq!(r.from.as_deref(), Some(GATEWAY));
                self.0.push((r.message_id, r.delivery));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_sends_and_gets_delivery_reports() {
    let hooks = Hooks::start().await;
    // A token with characters that are escapes to Kannel once percent-encoded (`%C3`,
    // `%25`, `%2B`): the dlr-url must carry it through unchanged.
    let token = "t%k+n &ü=1";
    let kannel = Kannel::start(KannelOptions {
        inbound_url: hooks.inbound_url("unused", "from=%p&to=%P&id=%I&text=%b"),
        username: USER.into(),
        password: PASSWORD.into(),
    })
    .await;
    let p = provider(&hooks, &kannel.sendsms_url(), PASSWORD, token);

    p.check().await.expect("check with the right credentials");
    let wrong = provider(&hooks, &kannel.sendsms_url(), "wrong", token);
    let e = wrong
        .check()
        .await
        .expect_err("check with a wrong password");
    assert_eq!(e.kind, ErrorKind::NotAuthorized, "{e:?}");
    let e = wrong
        .send(&out("hi", "ref-0"))
        .await
        .expect_err("send with a wrong password");
    assert_eq!(e.kind, ErrorKind::NotAuthorized, "{e:?}");

    // A plain text: 7-bit, numbers kept as given (with their '+').
    let accepted = p
        .send(&out("Hello from ferry", "ref-1"))
        .await
        .expect("send");
    assert_eq!(
        accepted,
        Accepted {
            message_id: "ref-1".into(),
            reports: true
        }
    );
    let sent = kannel.next_sent(WAIT).await.expect("text at the fake SMSC");
    assert_eq!(
        sent,
        SentText {
            from: GATEWAY.into(),
            to: PHONE.into(),
            text: "Hello from ferry".into(),
            coding: "text".into(),
        }
    );
    // The fake SMSC reports 8 (SMSC accepted) and then 1 (delivered).
    let mut reports = Reports::default();
    let both = [Delivery::Pending, Delivery::Delivered];
    reports.wait(p.as_ref(), &hooks, "ref-1", &both).await;

    // Beyond GSM-7: UCS-2, which the fake SMSC shows url-encoded UTF-16BE (emoji as a
    // surrogate pair).
    p.send(&out("Grüße 👋", "ref-2")).await.expect("send ucs-2");
    let sent = kannel
        .next_sent(WAIT)
        .await
        .expect("ucs-2 text at the fake SMSC");
    assert_eq!(
        (sent.coding.as_str(), sent.text.as_str()),
        ("ucs-2", "Grüße 👋")
    );
    assert_eq!((sent.from.as_str(), sent.to.as_str()), (GATEWAY, PHONE));
    reports.wait(p.as_ref(), &hooks, "ref-2", &both).await;

    // Non-ASCII within GSM-7 stays 7-bit (Kannel holds it as UTF-8 until the SMSC driver).
    p.send(&out("Grüße aus Köln, {Δ} 5€", "ref-3"))
        .await
        .expect("send gsm-7");
    let sent = kannel
        .next_sent(WAIT)
        .await
        .expect("gsm-7 text at the fake SMSC");
    assert_eq!(
        (sent.coding.as_str(), sent.text.as_str()),
        ("text", "Grüße aus Köln, {Δ} 5€")
    );
    reports.wait(p.as_ref(), &hooks, "ref-3", &both).await;

    // Nothing listening: transient.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let gone = provider(
        &hooks,
        &format!("http://127.0.0.1:{closed}/cgi-bin/sendsms"),
        PASSWORD,
        token,
    );
    assert_eq!(
        gone.check().await.expect_err("no kannel").kind,
        ErrorKind::Transient
    );
    assert_eq!(
        gone.send(&out("hi", "ref-4"))
            .await
            .expect_err("no kannel")
            .kind,
        ErrorKind::Transient
    );
}

/// Injects `text` from the phone and returns what the inbound hook made of it.
async fn inbound(
    kannel: &Kannel,
    hooks: &Hooks,
    p: &dyn Provider,
    text: &str,
) -> (Hit, InboundText) {
    kannel.inject(PHONE, GATEWAY, text).await;
    let hit = hooks.next().await;
    assert_eq!(hit.hook(), Hook::Inbound, "{hit:?}");
    match events(p, hooks, &hit).as_slice() {
        [Event::Inbound(t)] => {
            let t = t.clone();
            (hit, t)
        }
        other => panic!("inbound hook gave {other:?}"),
    }
}

fn assert_refused(p: &dyn Provider, hooks: &Hooks, hit: &Hit) {
    let url = format!("{}{}", hooks.public_url, hit.path);
    let token = format!("token={TOKEN}");
    assert!(hit.query.contains(&token), "{hit:?}");
    for query in [
        hit.query.replace(&token, "token=inbound-T0keN"),
        hit.query.replace(&token, "token="),
        hit.query.replace(&token, &format!("tok={TOKEN}")),
    ] {
        let req = hit.request(&url, &query);
        for hook in [Hook::Inbound, Hook::Status] {
            assert!(
                matches!(p.verify(hook, &req), Err(HookError::Forbidden(_))),
                "{hook:?} {query}"
            );
        }
    }
}

const TOKEN: &str = "inbound-T0ken";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_by_get_url_with_the_raw_text() {
    let hooks = Hooks::start().await;
    let kannel = Kannel::start(KannelOptions {
        inbound_url: hooks.inbound_url(TOKEN, "from=%p&to=%P&id=%I&text=%b&charset=%C&coding=%c"),
        username: USER.into(),
        password: PASSWORD.into(),
    })
    .await;
    let p = provider(&hooks, &kannel.sendsms_url(), PASSWORD, TOKEN);

    let (hit, t) = inbound(&kannel, &hooks, p.as_ref(), "Hello  from a phone & more").await;
    assert_eq!(hit.method, Method::GET);
    assert_eq!((t.from.as_str(), t.to.as_str()), (PHONE, GATEWAY));
    assert_eq!(t.text, "Hello  from a phone & more", "%b keeps the spaces");
    assert_eq!(
        t.message_id.len(),
        36,
        "Kannel's %I is a UUID: {}",
        t.message_id
    );
    assert!(t.media.is_empty() && t.part.is_none());

    // From a phone in UCS-2, with a line break.
    let (_, u) = inbound(&kannel, &hooks, p.as_ref(), "Grüße 👋\nzweite Zeile").await;
    assert_eq!(u.text, "Grüße 👋\nzweite Zeile");
    assert_ne!(u.message_id, t.message_id);

    assert_refused(p.as_ref(), &hooks, &hit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_by_get_url_with_words() {
    // `%a` (the words, spaces squeezed) and no charset: UCS-2 is recognised by its NULs.
    let hooks = Hooks::start().await;
    let kannel = Kannel::start(KannelOptions {
        inbound_url: hooks.inbound_url(TOKEN, "from=%p&to=%P&id=%I&text=%a"),
        username: USER.into(),
        password: PASSWORD.into(),
    })
    .await;
    let p = provider(&hooks, &kannel.sendsms_url(), PASSWORD, TOKEN);

    let (hit, t) = inbound(&kannel, &hooks, p.as_ref(), "Hello  from a phone").await;
    assert_eq!((t.from.as_str(), t.to.as_str()), (PHONE, GATEWAY));
    assert_eq!(t.text, "Hello from a phone");
    let (_, u) = inbound(&kannel, &hooks, p.as_ref(), "Grüße 👋").await;
    assert_eq!(u.text, "Grüße 👋");

    assert_refused(p.as_ref(), &hooks, &hit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_by_post_url() {
    let hooks = Hooks::start().await;
    let kannel = Kannel::start_post(KannelOptions {
        inbound_url: hooks.inbound_url(TOKEN, "from=%p&to=%P&id=%I"),
        username: USER.into(),
        password: PASSWORD.into(),
    })
    .await;
    let p = provider(&hooks, &kannel.sendsms_url(), PASSWORD, TOKEN);

    let (hit, t) = inbound(&kannel, &hooks, p.as_ref(), "Hello  from a phone").await;
    assert_eq!(hit.method, Method::POST);
    assert_eq!((t.from.as_str(), t.to.as_str()), (PHONE, GATEWAY));
    assert_eq!(t.text, "Hello  from a phone");
    let (hit2, u) = inbound(&kannel, &hooks, p.as_ref(), "Grüße 👋\nzweite Zeile").await;
    let ct = hit2
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(ct.contains("UTF-16BE"), "{ct}");
    assert_eq!(u.text, "Grüße 👋\nzweite Zeile");
    assert!(!u.message_id.is_empty() && u.message_id != t.message_id);

    assert_refused(p.as_ref(), &hooks, &hit);
}
