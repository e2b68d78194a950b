//! The XEP-0114 link of one gateway domain: connect, handshake, a reader that hands whole
//! stanzas to the router, a single writer task, a keepalive, and reconnection with jittered
//! exponential backoff. A refused secret is fatal; everything else is retried.

use std::time::Duration;

use sha1::{Digest, Sha1};
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};

use crate::metrics::{Counter, Metrics};
use crate::xml::{
    self, Element, Limits, NS_COMPONENT, NS_STREAM, NS_STREAM_ERRORS, StreamEvent, StreamReader,
    XmlError,
};

/// Where and as whom to connect.
#[derive(Clone, Debug)]
pub struct LinkConfig {
    pub host: String,
    pub port: u16,
    /// The component's domain, e.g. `email.example.org`.
    pub domain: String,
    pub secret: String,
    /// Metrics label: `email`, `sms` or `rss`.
    pub bridge: &'static str,
    pub limits: Limits,
    /// Send a ping after this long without traffic from the server.
    pub ping_after: Duration,
    /// Declare the link dead after this long without traffic.
    pub dead_after: Duration,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
}

impl LinkConfig {
    pub fn new(host: &str, port: u16, domain: &str, secret: &str, bridge: &'static str) -> Self {
        LinkConfig {
            host: host.to_owned(),
            port,
            domain: domain.to_owned(),
            secret: secret.to_owned(),
            bridge,
            limits: Limits::default(),
            ping_after: Duration::from_secs(20),
            dead_after: Duration::from_secs(45),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Why a link stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Retrying cannot help: the server refused our secret or does not know the domain.
    #[error("{0}")]
    Fatal(String),
}

/// Why one connection ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    Fatal(String),
    Retry(String),
}

/// An XEP-0184 receipt for a delivered message, as the outbox has it: the writer
/// serializes it straight from these fields (a pass of the outbox answers hundreds of
/// messages at once, and an [`Element`] each would cost a dozen allocations).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The contact's JID.
    pub from: String,
    /// The user's full JID.
    pub to: String,
    /// The outbox row (the receipt's own id is `rcpt-ROW`).
    pub row: i64,
    /// The id of the message it acknowledges.
    pub of: String,
}

impl Receipt {
    /// The receipt as a stanza (tests, and anything that wants to look at it).
    pub fn to_element(&self) -> Element {
        Element::new("message", NS_COMPONENT)
            .with_attr("from", self.from.as_str())
            .with_attr("to", self.to.as_str())
            .with_attr("id", format!("rcpt-{}", self.row))
            .with_child(
                Element::new("received", crate::stanza::ns::RECEIPTS)
                    .with_attr("id", self.of.as_str()),
            )
    }

    /// Appends the stanza's XML, exactly as [`Element::write_to`] would write
    /// [`Receipt::to_element`] on a component stream.
    fn write_to(&self, out: &mut String) {
        out.push_str("<message from=\"");
        xml::escape_into(out, &self.from, true);
        out.push_str("\" to=\"");
        xml::escape_into(out, &self.to, true);
        out.push_str("\" id=\"rcpt-");
        out.push_str(itoa::Buffer::new().format(self.row));
        out.push_str("\"><received xmlns=\"");
        out.push_str(crate::stanza::ns::RECEIPTS);
        out.push_str("\" id=\"");
        xml::escape_into(out, &self.of, true);
        out.push_str("\"/></message>");
    }
}

/// What goes through the writer's queue.
#[derive(Debug)]
pub enum Frame {
    Stanza(Element),
    /// Receipts of one outbox pass, queued at once.
    Receipts(Vec<Receipt>),
}

impl Frame {
    /// Appends the frame's XML; returns how many stanzas it held.
    fn write_to(&self, out: &mut String) -> u64 {
        match self {
            Frame::Stanza(e) => {
                e.write_to(out, NS_COMPONENT);
                1
            }
            Frame::Receipts(rs) => {
                for r in rs {
                    r.write_to(out);
                }
                rs.len() as u64
            }
        }
    }

    /// The stanzas the frame holds.
    pub fn into_elements(self) -> Vec<Element> {
        match self {
            Frame::Stanza(e) => vec![e],
            Frame::Receipts(rs) => rs.iter().map(Receipt::to_element).collect(),
        }
    }
}

/// Hands stanzas to the link's writer. Stanzas sent while the link is down wait in the
/// channel until it is back.
#[derive(Clone, Debug)]
pub struct Outgoing {
    tx: mpsc::Sender<Frame>,
}

impl Outgoing {
    /// Queues a stanza; waits when the queue is full (back-pressure), drops it only when
    /// the link is gone for good.
    pub async fn send(&self, stanza: Element) {
        self.send_frame(Frame::Stanza(stanza)).await;
    }

    /// Queues receipts (in their order, as one entry of the queue).
    pub async fn send_receipts(&self, receipts: Vec<Receipt>) {
        if !receipts.is_empty() {
            self.send_frame(Frame::Receipts(receipts)).await;
        }
    }

    async fn send_frame(&self, frame: Frame) {
        if self.tx.send(frame).await.is_err() {
            tracing::debug!("link closed; stanza dropped");
        }
    }

    /// A detached handle for tests: returns the receiving end too.
    pub fn channel(capacity: usize) -> (Outgoing, mpsc::Receiver<Frame>) {
        let (tx, rx) = mpsc::channel(capacity);
        (Outgoing { tx }, rx)
    }
}

/// A running link's handles.
pub struct Link {
    pub outgoing: Outgoing,
    /// True while the handshake has succeeded and the stream is up.
    pub connected: watch::Receiver<bool>,
}

/// Starts a link task. Incoming stanzas go to `inbound`; the task ends when `shutdown`
/// turns true (closing the stream politely) or with a fatal error.
pub fn spawn(
    cfg: LinkConfig,
    inbound: mpsc::Sender<Element>,
    metrics: Metrics,
    shutdown: watch::Receiver<bool>,
) -> (Link, tokio::task::JoinHandle<Result<(), LinkError>>) {
    let (out_tx, out_rx) = mpsc::channel(4096);
    let (conn_tx, conn_rx) = watch::channel(false);
    let keepalive = out_tx.clone();
    let handle = tokio::spawn(run(
        cfg, inbound, out_rx, keepalive, conn_tx, metrics, shutdown,
    ));
    (
        Link {
            outgoing: Outgoing { tx: out_tx },
            connected: conn_rx,
        },
        handle,
    )
}

async fn run(
    cfg: LinkConfig,
    inbound: mpsc::Sender<Element>,
    mut out_rx: mpsc::Receiver<Frame>,
    keepalive: mpsc::Sender<Frame>,
    connected: watch::Sender<bool>,
    metrics: Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), LinkError> {
    let mut failures: u32 = 0;
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let (ended, rx) = connect_once(
            &cfg,
            &inbound,
            out_rx,
            &keepalive,
            &connected,
            &metrics,
            &mut shutdown,
        )
        .await;
        out_rx = rx;
        let was_up = *connected.borrow();
        connected.send_replace(false);
        metrics.set_connected(cfg.bridge, false);
        match ended {
            Ended::Shutdown => return Ok(()),
            Ended::Fatal(why) => {
                tracing::error!(domain = %cfg.domain, "component link refused: {why}");
                return Err(LinkError::Fatal(why));
            }
            Ended::Retry(why) => {
                failures = if was_up {
                    1
                } else {
                    failures.saturating_add(1)
                };
                let delay = backoff(failures, cfg.max_backoff);
                metrics.reconnect(cfg.bridge);
                tracing::warn!(domain = %cfg.domain, "component link down: {why}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return Ok(()),
                }
            }
        }
    }
}

/// Jittered exponential backoff: 0.5–1 × min(2^(n-1) s, cap).
pub fn backoff(failures: u32, cap: Duration) -> Duration {
    let base = Duration::from_secs(1u64 << failures.saturating_sub(1).min(16)).min(cap);
    let jitter = 0.5 + rand::random::<f64>() * 0.5;
    base.mul_f64(jitter)
}

/// The XEP-0114 handshake value: hex SHA-1 of stream id + secret.
pub fn handshake_digest(stream_id: &str, secret: &str) -> String {
    let mut h = Sha1::new();
    h.update(stream_id.as_bytes());
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

/// Reads the condition out of a `<stream:error>`.
fn stream_error_condition(e: &Element) -> String {
    let cond = e
        .elements()
        .find(|c| c.ns == NS_STREAM_ERRORS && c.name != "text")
        .map(|c| c.name.to_string())
        .unwrap_or_else(|| "undefined-condition".to_owned());
    match e.child_text("text", NS_STREAM_ERRORS) {
        Some(t) if !t.is_empty() => format!("{cond} ({t})"),
        _ => cond,
    }
}

async fn connect_once(
    cfg: &LinkConfig,
    inbound: &mpsc::Sender<Element>,
    out_rx: mpsc::Receiver<Frame>,
    keepalive: &mpsc::Sender<Frame>,
    connected: &watch::Sender<bool>,
    metrics: &Metrics,
    shutdown: &mut watch::Receiver<bool>,
) -> (Ended, mpsc::Receiver<Frame>) {
    let addr = format!("{}:{}", cfg.host, cfg.port);
    let stream = match timeout(Duration::from_secs(10), TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return (
                Ended::Retry(format!("cannot connect to {addr}: {e}")),
                out_rx,
            );
        }
        Err(_) => {
            return (
                Ended::Retry(format!("timed out connecting to {addr}")),
                out_rx,
            );
        }
    };
    let _ = stream.set_nodelay(true);
    let (read_half, write_half) = stream.into_split();
    let mut reader = StreamReader::new(read_half, cfg.limits);
    let mut writer = BufWriter::new(write_half);

    match timeout(
        Duration::from_secs(15),
        handshake(cfg, &mut reader, &mut writer),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(ended)) => return (ended, out_rx),
        Err(_) => return (Ended::Retry("handshake timed out".into()), out_rx),
    }
    tracing::info!(domain = %cfg.domain, "component link up ({addr})");
    connected.send_replace(true);
    metrics.set_connected(cfg.bridge, true);

    // The single writer: owns the socket's write half until told to stop, then hands the
    // queue back so stanzas queued meanwhile go out on the next connection.
    let (stop_tx, stop_rx) = oneshot::channel::<Option<String>>();
    let writer_task = tokio::spawn(write_loop(
        writer,
        out_rx,
        stop_rx,
        metrics.stanza_counter(cfg.bridge, "out"),
    ));

    let mut last_seen = Instant::now();
    let mut seen = false;
    let mut pinged = false;
    let stanzas_in = metrics.stanza_counter(cfg.bridge, "in");
    // Check often enough to ping on time and to notice death within dead_after.
    let step = cfg
        .ping_after
        .min(cfg.dead_after.saturating_sub(cfg.ping_after))
        .min(Duration::from_secs(5))
        .max(Duration::from_millis(100))
        / 2;
    let mut tick = tokio::time::interval(step);
    let self_ping = Element::new("iq", NS_COMPONENT)
        .with_attr("type", "get")
        .with_attr("from", &cfg.domain)
        .with_attr("to", &cfg.domain)
        .with_attr("id", "ferry-keepalive")
        .with_child(Element::new("ping", crate::stanza::ns::PING));

    let ended = loop {
        tokio::select! {
            ev = reader.next() => {
                // Read at the next tick: a clock read per stanza costs more than the rest
                // of counting it.
                seen = true;
                match ev {
                    Ok(StreamEvent::Stanza(e)) => {
                        if e.is("error", NS_STREAM) {
                            let cond = stream_error_condition(&e);
                            break Ended::Retry(format!("server closed the stream: {cond}"));
                        }
                        stanzas_in.add(1);
                        if inbound.send(e).await.is_err() {
                            break Ended::Shutdown;
                        }
                    }
                    Ok(StreamEvent::Close) => break Ended::Retry("server closed the stream".into()),
                    Ok(StreamEvent::Open(_)) => break Ended::Retry("unexpected stream header".into()),
                    Err(XmlError::Eof) => break Ended::Retry("connection closed by server".into()),
                    Err(XmlError::Io(e)) => break Ended::Retry(format!("connection error: {e}")),
                    Err(e) => {
                        let cond = e.condition().unwrap_or("undefined-condition");
                        tracing::warn!(domain = %cfg.domain, "closing stream: {e}");
                        let _ = stop_tx.send(Some(xml::stream_error(cond, &e.to_string())));
                        let rx = finish_writer(writer_task).await;
                        return (Ended::Retry(format!("bad input from server: {e}")), rx);
                    }
                }
            }
            now = tick.tick() => {
                if std::mem::take(&mut seen) {
                    // Traffic came since the last tick: count it as from that tick, so the
                    // link is never thought alive for longer than it was.
                    last_seen = now.checked_sub(step).unwrap_or(now);
                    pinged = false;
                }
                let idle = last_seen.elapsed();
                if idle >= cfg.dead_after {
                    break Ended::Retry(format!("no traffic for {}s", idle.as_secs()));
                }
                if idle >= cfg.ping_after && !pinged {
                    pinged = true;
                    // Through the writer's queue like every other stanza; if the queue is
                    // full, traffic is flowing anyway.
                    let _ = keepalive.try_send(Frame::Stanza(self_ping.clone()));
                }
            }
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    let _ = stop_tx.send(Some("</stream:stream>".to_owned()));
                    let rx = finish_writer(writer_task).await;
                    // Give the server a moment to close its side; don't wait forever. What
                    // it still delivers goes to the router, which stores messages (they
                    // are sent on the next start) for as long as this link holds its
                    // sender: nothing read is thrown away.
                    let _ = timeout(Duration::from_secs(2), async {
                        loop {
                            match reader.next().await {
                                Ok(StreamEvent::Stanza(e)) => {
                                    stanzas_in.add(1);
                                    if inbound.send(e).await.is_err() {
                                        break;
                                    }
                                }
                                Ok(StreamEvent::Open(_)) => {}
                                _ => break,
                            }
                        }
                    }).await;
                    tracing::info!(domain = %cfg.domain, "component link closed");
                    return (Ended::Shutdown, rx);
                }
            }
        }
    };
    let _ = stop_tx.send(None);
    (ended, finish_writer(writer_task).await)
}

async fn finish_writer(
    task: tokio::task::JoinHandle<mpsc::Receiver<Frame>>,
) -> mpsc::Receiver<Frame> {
    match task.await {
        Ok(rx) => rx,
        Err(e) => {
            // The writer cannot panic by design; if it did, start over with a fresh queue
            // rather than take the process down.
            tracing::error!("writer task failed: {e}");
            mpsc::channel(1).1
        }
    }
}

async fn handshake(
    cfg: &LinkConfig,
    reader: &mut StreamReader<tokio::net::tcp::OwnedReadHalf>,
    writer: &mut BufWriter<OwnedWriteHalf>,
) -> Result<(), Ended> {
    let io = |e: std::io::Error| Ended::Retry(format!("connection error: {e}"));
    writer
        .write_all(xml::stream_header(&cfg.domain).as_bytes())
        .await
        .map_err(io)?;
    writer.flush().await.map_err(io)?;
    let id = match reader.next().await {
        Ok(StreamEvent::Open(h)) => h.attr("id").unwrap_or_default().to_owned(),
        Ok(_) => return Err(Ended::Retry("server did not open a stream".into())),
        Err(e) => return Err(Ended::Retry(format!("opening stream: {e}"))),
    };
    let digest = handshake_digest(&id, &cfg.secret);
    writer
        .write_all(format!("<handshake>{digest}</handshake>").as_bytes())
        .await
        .map_err(io)?;
    writer.flush().await.map_err(io)?;
    match reader.next().await {
        Ok(StreamEvent::Stanza(e)) if e.is("handshake", NS_COMPONENT) => Ok(()),
        Ok(StreamEvent::Stanza(e)) if e.is("error", NS_STREAM) => {
            let cond = stream_error_condition(&e);
            if cond.starts_with("not-authorized") {
                Err(Ended::Fatal(format!(
                    "the XMPP server refused the component secret for {} ({cond})",
                    cfg.domain
                )))
            } else if cond.starts_with("host-unknown") {
                Err(Ended::Fatal(format!(
                    "the XMPP server has no component named {} ({cond})",
                    cfg.domain
                )))
            } else {
                // conflict (another instance holds the domain) and the rest: try again.
                Err(Ended::Retry(format!("handshake refused: {cond}")))
            }
        }
        Ok(StreamEvent::Close) | Err(XmlError::Eof) => Err(Ended::Retry(
            "server closed the stream during handshake".into(),
        )),
        Ok(_) => Err(Ended::Retry("unexpected reply to handshake".into())),
        Err(e) => Err(Ended::Retry(format!("handshake: {e}"))),
    }
}

/// Writes queued stanzas, batching whatever is ready into one write, until stopped.
async fn write_loop(
    mut writer: BufWriter<OwnedWriteHalf>,
    mut rx: mpsc::Receiver<Frame>,
    mut stop: oneshot::Receiver<Option<String>>,
    stanzas_out: Counter,
) -> mpsc::Receiver<Frame> {
    let mut buf = String::with_capacity(16 * 1024);
    loop {
        tokio::select! {
            biased;
            last = &mut stop => {
                if let Ok(Some(text)) = last {
                    let _ = writer.write_all(text.as_bytes()).await;
                    let _ = writer.flush().await;
                    let _ = writer.shutdown().await;
                }
                return rx;
            }
            first = rx.recv() => {
                let Some(first) = first else { return rx };
                buf.clear();
                let mut n = first.write_to(&mut buf);
                let mut frames = 1;
                while frames < 256 {
                    match rx.try_recv() {
                        Ok(f) => { n += f.write_to(&mut buf); frames += 1; }
                        Err(_) => break,
                    }
                }
                if let Err(e) = writer.write_all(buf.as_bytes()).await {
                    tracing::warn!("write failed, {n} stanza(s) lost: {e}");
                    return rx;
                }
                if let Err(e) = writer.flush().await {
                    tracing::warn!("flush failed: {e}");
                    return rx;
                }
                stanzas_out.add(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_is_written_as_its_element_would_be() {
        let r = Receipt {
            from: "bob\\40x.org@gw.example".into(),
            to: "alice@example.org/phone & <co>".into(),
            row: 42,
            of: "id'\"1".into(),
        };
        let mut direct = String::new();
        assert_eq!(
            Frame::Receipts(vec![r.clone(), r.clone()]).write_to(&mut direct),
            2
        );
        let mut via_element = String::new();
        r.to_element().write_to(&mut via_element, NS_COMPONENT);
        assert_eq!(direct, via_element.repeat(2));
        let back = xml::parse_element(&via_element, NS_COMPONENT).expect("well-formed");
        assert_eq!(back.attr("to"), Some("alice@example.org/phone & <co>"));
        assert_eq!(
            back.child("received", crate::stanza::ns::RECEIPTS)
                .and_then(|e| e.attr("id")),
            Some("id'\"1")
        );
    }
}
