//! A small real XMPP client for tests: plain-TCP c2s to Prosody's "localhost", SASL PLAIN,
//! resource binding, then raw XML out and parsed stanzas in.
//!
//! A background task reads the socket with ferry's own [`StreamReader`] and forwards each
//! stanza through a channel. [`Client::recv`] takes the first stanza matching a predicate
//! and keeps the others in a backlog for later calls, so a test can wait for things in any
//! order. Stanzas from the stream have namespace [`NS_CLIENT`].

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::xml::{Element, Limits, NS_COMPONENT, NS_STREAM, StreamEvent, StreamReader};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The default namespace of a c2s stream: what received stanzas carry as `ns`.
pub const NS_CLIENT: &str = "jabber:client";
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
pub const NS_PING: &str = "urn:xmpp:ping";
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
pub const NS_DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";

/// The domain [`login`] connects to.
const DOMAIN: &str = "localhost";
/// How long [`login`] may take in all.
const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Client::iq`] waits for the answer.
const IQ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest rendering of one stanza in a failure message.
const SHOW_MAX: usize = 2000;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A process-wide unique id for stanzas (`t1`, `t2`, …).
pub fn next_id() -> String {
    format!("t{}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// What the reader task hands over.
enum Incoming {
    Stanza(Element),
    /// The stream ended; why.
    Closed(String),
}

/// The socket's write side, shared with the reader task (which closes it when the server
/// ends the stream).
type Writer = Arc<tokio::sync::Mutex<OwnedWriteHalf>>;

/// IQ ids whose answer goes straight to a waiter instead of the channel.
type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<Element>>>>;

/// A logged-in c2s session.
pub struct Client {
    /// The full JID Prosody bound, e.g. `alice@localhost/phone`.
    pub jid: String,
    writer: Writer,
    rx: mpsc::UnboundedReceiver<Incoming>,
    backlog: VecDeque<Element>,
    /// Set once the reader task reported the end of the stream.
    closed: Option<String>,
    waiters: Waiters,
    reader: JoinHandle<()>,
}

/// Logs in as `user@localhost/resource` on Prosody's c2s port; panics when that fails.
/// Sends no presence: call [`Client::send_presence`] to become available.
pub async fn login(port: u16, user: &str, password: &str, resource: &str) -> Client {
    match try_login(port, user, password, resource).await {
        Ok(c) => c,
        Err(e) => panic!("login as {user}@{DOMAIN}/{resource} on port {port} failed: {e}"),
    }
}

/// Like [`login`], but returns why it failed (refused connection, SASL failure, timeout).
pub async fn try_login(
    port: u16,
    user: &str,
    password: &str,
    resource: &str,
) -> Result<Client, String> {
    match tokio::time::timeout(LOGIN_TIMEOUT, handshake(port, user, password, resource)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no session within {LOGIN_TIMEOUT:?}")),
    }
}

fn stream_header() -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAM}' to='{DOMAIN}' version='1.0' xml:lang='en'>"
    )
}

async fn write(w: &mut OwnedWriteHalf, s: &str) -> Result<(), String> {
    w.write_all(s.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))
}

/// Reads the server's stream header and its `<stream:features/>`.
async fn open_stream<R>(reader: &mut StreamReader<R>) -> Result<Element, String>
where
    R: tokio::io::AsyncRead + Unpin,
{
    match reader.next().await {
        Ok(StreamEvent::Open(_)) => {}
        other => return Err(format!("expected a stream header, got {other:?}")),
    }
    match reader.next().await {
        Ok(StreamEvent::Stanza(f)) if f.is("features", NS_STREAM) => Ok(f),
        other => Err(format!("expected stream features, got {other:?}")),
    }
}

async fn handshake(
    port: u16,
    user: &str,
    password: &str,
    resource: &str,
) -> Result<Client, String> {
    let tcp = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut rh, mut wh) = tcp.into_split();

    // First stream: authenticate. This reader only borrows the socket: after <success/>
    // the stream restarts and a fresh parser must see the new header.
    write(&mut wh, &stream_header()).await?;
    {
        let mut reader = StreamReader::new(&mut rh, Limits::default());
        let features = open_stream(&mut reader).await?;
        let offers_plain = features
            .child("mechanisms", NS_SASL)
            .is_some_and(|m| m.elements().any(|e| e.text() == "PLAIN"));
        if !offers_plain {
            return Err(format!("PLAIN is not offered: {features}"));
        }
        let creds = base64(format!("\0{user}\0{password}").as_bytes());
        write(
            &mut wh,
            &format!("<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{creds}</auth>"),
        )
        .await?;
        match reader.next().await {
            Ok(StreamEvent::Stanza(s)) if s.is("success", NS_SASL) => {}
            other => return Err(format!("SASL PLAIN refused: {other:?}")),
        }
    }

    // Second stream: bind a resource. Nothing was sent after <success/>, so nothing was
    // read ahead; this reader owns the socket and moves into the background task.
    write(&mut wh, &stream_header()).await?;
    let mut reader = StreamReader::new(rh, Limits::default());
    let features = open_stream(&mut reader).await?;
    if features.child("bind", NS_BIND).is_none() {
        return Err(format!("resource binding not offered: {features}"));
    }
    let bind_id = next_id();
    write(
        &mut wh,
        &format!(
            "<iq type='set' id='{bind_id}'><bind xmlns='{NS_BIND}'><resource>{}</resource></bind></iq>",
            ferry::xml::escape(resource)
        ),
    )
    .await?;
    let jid = match reader.next().await {
        Ok(StreamEvent::Stanza(iq))
            if iq.name == "iq"
                && iq.attr("id") == Some(bind_id.as_str())
                && iq.attr("type") == Some("result") =>
        {
            iq.child("bind", NS_BIND)
                .and_then(|b| b.child_text("jid", NS_BIND))
                .ok_or_else(|| format!("bind result without a JID: {iq}"))?
        }
        other => return Err(format!("resource binding failed: {other:?}")),
    };

    let (tx, rx) = mpsc::unbounded_channel();
    let waiters: Waiters = Arc::default();
    let writer: Writer = Arc::new(tokio::sync::Mutex::new(wh));
    let reader = tokio::spawn(read_loop(reader, tx, waiters.clone(), writer.clone()));
    Ok(Client {
        jid,
        writer,
        rx,
        backlog: VecDeque::new(),
        closed: None,
        waiters,
        reader,
    })
}

async fn read_loop(
    mut reader: StreamReader<OwnedReadHalf>,
    tx: mpsc::UnboundedSender<Incoming>,
    waiters: Waiters,
    writer: Writer,
) {
    loop {
        let item = match reader.next().await {
            Ok(StreamEvent::Stanza(e)) => {
                let waiter = match (e.name.as_str(), e.attr("id")) {
                    ("iq", Some(id)) => waiters.lock().expect("waiters lock").remove(id),
                    _ => None,
                };
                match waiter {
                    Some(w) => {
                        let _ = w.send(e);
                        continue;
                    }
                    None => Incoming::Stanza(e),
                }
            }
            Ok(StreamEvent::Close) => Incoming::Closed("the server closed the stream".into()),
            Ok(StreamEvent::Open(h)) => Incoming::Closed(format!("unexpected stream header {h}")),
            Err(e) => Incoming::Closed(format!("stream ended: {e}")),
        };
        let done = matches!(item, Incoming::Closed(_));
        if done {
            // Answer the server's close as a client should, so it need not wait for us.
            let mut w = writer.lock().await;
            let _ = w.write_all(b"</stream:stream>").await;
            let _ = w.shutdown().await;
        }
        if tx.send(item).is_err() || done {
            // Dropping the senders wakes whoever still waits for an answer.
            waiters.lock().expect("waiters lock").clear();
            return;
        }
    }
}

impl Client {
    /// Sends raw XML (one or more stanzas, as written on a `jabber:client` stream).
    pub async fn send(&self, xml: &str) {
        let mut w = self.writer.lock().await;
        if let Err(e) = w.write_all(xml.as_bytes()).await {
            panic!("{}: sending failed ({e}): {xml}", self.jid);
        }
    }

    /// Sends an element. Elements built in the component namespace (or none) are sent as
    /// `jabber:client` stanzas, so stanza builders meant for the gateway can be reused.
    pub async fn send_el(&self, e: &Element) {
        self.send(&client_xml(e)).await;
    }

    /// Sends initial (or updated) presence `<presence/>` and returns once Prosody has
    /// processed it, so messages sent to the bare JID right after reach this session.
    pub async fn send_presence(&self) {
        self.send("<presence/>").await;
        self.sync().await;
    }

    /// A ping round trip to the server: everything sent before has been processed once this
    /// returns. The answer never shows up in [`Client::recv`].
    pub async fn sync(&self) {
        let id = next_id();
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .insert(id.clone(), tx);
        self.send(&format!(
            "<iq type='get' id='{id}' to='{DOMAIN}'><ping xmlns='{NS_PING}'/></iq>"
        ))
        .await;
        match tokio::time::timeout(IQ_TIMEOUT, rx).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => panic!("{}: the stream ended before the ping answer", self.jid),
            Err(_) => panic!("{}: no ping answer within {IQ_TIMEOUT:?}", self.jid),
        }
    }

    /// Sends an IQ (which must carry an `id`) and returns its result or error.
    pub async fn iq(&mut self, xml: &str) -> Element {
        let sent = ferry::xml::parse_element(xml, NS_CLIENT)
            .unwrap_or_else(|e| panic!("iq() was given bad XML ({e}): {xml}"));
        let id = sent
            .attr("id")
            .unwrap_or_else(|| panic!("iq() needs an id attribute: {xml}"))
            .to_owned();
        self.send(xml).await;
        self.recv(IQ_TIMEOUT, |e| {
            e.name == "iq"
                && e.attr("id") == Some(id.as_str())
                && matches!(e.attr("type"), Some("result" | "error"))
        })
        .await
    }

    /// The first stanza matching `pred`, from the backlog or arriving within `within`.
    /// Panics with everything received but not taken when none comes.
    pub async fn recv(&mut self, within: Duration, pred: impl Fn(&Element) -> bool) -> Element {
        match self.try_recv(within, &pred).await {
            Some(e) => e,
            None => panic!(
                "{}: no matching stanza within {within:?}{}; received and not taken:\n{}",
                self.jid,
                self.closed
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default(),
                self.show_backlog()
            ),
        }
    }

    /// Like [`Client::recv`], but returns `None` when nothing matching arrives in time or
    /// the stream ended.
    pub async fn try_recv(
        &mut self,
        within: Duration,
        pred: impl Fn(&Element) -> bool,
    ) -> Option<Element> {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(pos);
        }
        let deadline = Instant::now() + within;
        while self.closed.is_none() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Err(_) => return None,
                Ok(Some(Incoming::Stanza(e))) if pred(&e) => return Some(e),
                Ok(Some(Incoming::Stanza(e))) => self.backlog.push_back(e),
                Ok(Some(Incoming::Closed(why))) => self.closed = Some(why),
                Ok(None) => self.closed = Some("the reader task ended".into()),
            }
        }
        None
    }

    /// Asserts that nothing matching `pred` arrives within `within` (waiting all of it;
    /// keep windows short). Other stanzas stay in the backlog.
    pub async fn expect_silence(&mut self, within: Duration, pred: impl Fn(&Element) -> bool) {
        if let Some(e) = self.try_recv(within, pred).await {
            panic!(
                "{}: expected nothing matching within {within:?}, got:\n{}",
                self.jid,
                show(&e)
            );
        }
    }

    /// Waits until the server ends the stream (a stream error, a restart); returns why.
    /// Stanzas received meanwhile stay in the backlog.
    pub async fn wait_closed(&mut self, within: Duration) -> String {
        self.try_recv(within, |_| false).await;
        match &self.closed {
            Some(why) => why.clone(),
            None => panic!(
                "{}: stream still open after {within:?}; received:\n{}",
                self.jid,
                self.show_backlog()
            ),
        }
    }

    /// True once the stream has ended (as far as this client has looked).
    pub fn is_closed(&self) -> bool {
        self.closed.is_some()
    }

    /// Stanzas received and not yet taken by [`Client::recv`], oldest first.
    pub fn backlog(&self) -> &VecDeque<Element> {
        &self.backlog
    }

    /// Ends the session politely: `</stream:stream>`, then waits briefly for the server to
    /// close its side.
    pub async fn close(mut self) {
        {
            let mut w = self.writer.lock().await;
            let _ = w.write_all(b"</stream:stream>").await;
            let _ = w.shutdown().await;
        }
        if self.closed.is_none() {
            let _ = self.try_recv(Duration::from_secs(5), |_| false).await;
        }
    }

    fn show_backlog(&self) -> String {
        if self.backlog.is_empty() {
            return "  (nothing)".into();
        }
        let mut out = String::new();
        for e in &self.backlog {
            let _ = writeln!(out, "  {}", show(e));
        }
        out
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One stanza for a failure message, cut to a readable length.
fn show(e: &Element) -> String {
    let s = e.to_string();
    if s.len() <= SHOW_MAX {
        return s;
    }
    let mut cut = SHOW_MAX;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

/// Serializes for a `jabber:client` stream, treating the component namespace (and no
/// namespace on the root) as the client one.
pub fn client_xml(e: &Element) -> String {
    fn convert(e: &Element, root: bool) -> Element {
        let mut out = e.clone();
        if e.ns == NS_COMPONENT || (root && e.ns.is_empty()) {
            out.ns = NS_CLIENT.into();
        }
        out.children = e
            .children
            .iter()
            .map(|n| match n {
                ferry::xml::Node::Element(c) => ferry::xml::Node::Element(convert(c, false)),
                text => text.clone(),
            })
            .collect();
        out
    }
    let mut out = String::new();
    convert(e, true).write_to(&mut out, NS_CLIENT);
    out
}

/// Standard base64 with padding (RFC 4648), enough for SASL.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// A stanza's `<body/>` text (empty when it has none).
pub fn body(e: &Element) -> String {
    e.child_text("body", NS_CLIENT).unwrap_or_default()
}

/// The defined condition of an error stanza (`item-not-found`, …).
pub fn condition(e: &Element) -> Option<String> {
    e.child("error", NS_CLIENT)?
        .elements()
        .find(|c| c.ns == NS_STANZA_ERRORS && c.name != "text")
        .map(|c| c.name.to_string())
}

/// An error stanza's `<text/>` (empty when it has none).
pub fn error_text(e: &Element) -> String {
    e.child("error", NS_CLIENT)
        .and_then(|err| err.child_text("text", NS_STANZA_ERRORS))
        .unwrap_or_default()
}
