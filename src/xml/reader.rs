//! Streaming XMPP parser: turns bytes from a socket into stream events and whole stanzas,
//! enforcing limits while it reads, before anything is buffered without bound.
//!
//! Refused, with the RFC 6120 stream error condition a caller should send:
//! - a stanza larger than [`Limits::max_stanza_bytes`] or nested deeper than
//!   [`Limits::max_depth`] → `policy-violation` (checked on the raw bytes read, so one huge
//!   text node cannot be buffered whole);
//! - a DOCTYPE, processing instruction, comment, or entity reference other than the five
//!   predefined ones and character references → `restricted-xml`;
//! - anything not well-formed, or an unbound prefix → `not-well-formed`.

use std::borrow::Cow;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use quick_xml::XmlVersion;
use quick_xml::events::{BytesRef, BytesStart, Event};
use tokio::io::{AsyncRead, BufReader, ReadBuf};

use super::{Element, NS_STREAM, Node, Str, all_xml_chars, is_xml_char};

/// Bounds on what a peer may send.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest stanza, in bytes of XML as received.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting inside a stanza (the stanza itself is depth 1).
    pub max_depth: usize,
    /// Most attributes on one element.
    pub max_attrs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_stanza_bytes: 256 * 1024,
            max_depth: 48,
            max_attrs: 64,
        }
    }
}

/// Why the stream cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    #[error("stream closed by peer")]
    Eof,
    #[error("not well-formed: {0}")]
    NotWellFormed(String),
    #[error("restricted xml: {0}")]
    Restricted(&'static str),
    #[error("policy violation: {0}")]
    Policy(String),
}

impl XmlError {
    /// The RFC 6120 stream error condition to answer with, if the peer is still there.
    pub fn condition(&self) -> Option<&'static str> {
        match self {
            XmlError::Io(_) | XmlError::Eof => None,
            XmlError::NotWellFormed(_) => Some("not-well-formed"),
            XmlError::Restricted(_) => Some("restricted-xml"),
            XmlError::Policy(_) => Some("policy-violation"),
        }
    }
}

/// What the stream yields.
#[derive(Debug, PartialEq)]
pub enum StreamEvent {
    /// The peer's `<stream:stream>` header (attributes only).
    Open(Element),
    /// A complete top-level element (a stanza, `<handshake/>`, `<stream:error>`).
    Stanza(Element),
    /// The peer closed the stream with `</stream:stream>`.
    Close,
}

/// An element being built, and how many namespace bindings it declared.
struct Frame {
    element: Element,
    /// Its bindings are the last this many of [`Builder::scopes`].
    declared: usize,
}

/// The parser state shared by the streaming and the one-shot front ends.
struct Builder {
    limits: Limits,
    /// Bindings of the stream root (and the implicit ones of a one-shot parse).
    root_bindings: Vec<(Str, Str)>,
    /// (prefix, namespace) declared by the open elements of the current stanza, outermost
    /// first; `""` is the default namespace. One list for all of them: most elements
    /// declare nothing, and a list each would be an allocation each.
    scopes: Vec<(Str, Str)>,
    /// True once `<stream:stream>` was seen, or from the start for a one-shot parse.
    in_stream: bool,
    /// The open elements of the current stanza.
    stack: Vec<Frame>,
}

const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";

/// Room for attributes made when an element has any: a stanza's top element carries up to
/// six (`from`, `to`, `id`, `type`, `xml:lang` and its namespace).
const ATTRS_GUESS: usize = 6;

/// `prefix:local` split at its colon (a byte search: names are short).
fn split_prefix(qname: &str) -> Option<(&str, &str)> {
    let at = qname.bytes().position(|b| b == b':')?;
    Some((&qname[..at], &qname[at + 1..]))
}

/// Whether a name occurs twice (element attribute lists are short; no allocation).
fn has_duplicate<'a>(mut names: impl Iterator<Item = &'a str> + Clone) -> bool {
    while let Some(a) = names.next() {
        if names.clone().any(|b| a == b) {
            return true;
        }
    }
    false
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            limits,
            root_bindings: Vec::new(),
            scopes: Vec::new(),
            in_stream: false,
            stack: Vec::new(),
        }
    }

    fn resolve(&self, prefix: &str) -> Option<Str> {
        if prefix == "xml" {
            return Some(Str::const_new(NS_XML));
        }
        self.binding(prefix)
            .map(Str::new)
            .or_else(|| prefix.is_empty().then(Str::default))
    }

    /// The namespace `prefix` is bound to, innermost first.
    fn binding(&self, prefix: &str) -> Option<&str> {
        self.scopes
            .iter()
            .rev()
            .chain(self.root_bindings.iter().rev())
            // Most elements use the default namespace (prefix ""): settle those on the
            // lengths alone, without a call to memcmp per binding.
            .find(|(p, _)| p.len() == prefix.len() && (prefix.is_empty() || p == prefix))
            .map(|(_, ns)| ns.as_str())
    }

    /// Reads a start tag into an element, pushing the namespace bindings it declares onto
    /// [`Builder::scopes`] (the caller pops them when the element ends).
    fn open(&mut self, start: &BytesStart<'_>) -> Result<Frame, XmlError> {
        let outer = self.scopes.len();
        let mut attrs: Vec<(Str, Str)> = Vec::new();
        let mut all = start.attributes();
        // quick-xml's duplicate check allocates a vector per element; the same check is
        // made below on what was collected.
        all.with_checks(false);
        for (n, attr) in all.enumerate() {
            if n >= self.limits.max_attrs {
                return Err(XmlError::Policy("too many attributes".into()));
            }
            let attr = attr.map_err(|e| XmlError::NotWellFormed(e.to_string()))?;
            let key = attr.key.0;
            // Nearly every value is printable ASCII without a reference: one pass proves
            // it needs no normalising and holds only XML characters.
            let plain = attr
                .value
                .bytes()
                .all(|b| (0x20..0x80).contains(&b) && b != b'&');
            // Otherwise only a reference or a tab or line break makes normalising change
            // anything.
            let value = if !plain
                && attr
                    .value
                    .bytes()
                    .any(|b| matches!(b, b'&' | b'\t' | b'\n' | b'\r'))
            {
                attr.normalized_value(XmlVersion::Implicit1_0)
                    .map_err(|_| XmlError::Restricted("entity reference in attribute"))?
            } else {
                attr.value
            };
            if !plain && !all_xml_chars(&value) {
                return Err(XmlError::NotWellFormed("illegal character".into()));
            }
            if key == "xmlns" {
                self.scopes.push((Str::default(), Str::from(value)));
            } else if let Some(p) = key.strip_prefix("xmlns:") {
                self.scopes.push((Str::new(p), Str::from(value)));
            } else {
                if attrs.capacity() == 0 {
                    // Most stanza elements carry a few attributes: one allocation instead
                    // of a growing vector (and none for an element that only declares
                    // its namespace).
                    attrs.reserve_exact(ATTRS_GUESS);
                }
                attrs.push((Str::new(key), Str::from(value)));
            }
        }
        let declared = self.scopes.len() - outer;
        if has_duplicate(attrs.iter().map(|(k, _)| k.as_str()))
            || has_duplicate(self.scopes[outer..].iter().map(|(p, _)| p.as_str()))
        {
            return Err(XmlError::NotWellFormed("duplicate attribute".into()));
        }
        let qname = start.name().0;
        let (prefix, local) = split_prefix(qname).unwrap_or(("", qname));
        let ns = self
            .resolve(prefix)
            .ok_or_else(|| XmlError::NotWellFormed(format!("unbound prefix {prefix}")))?;
        for (k, _) in &attrs {
            if let Some((p, _)) = split_prefix(k)
                && p != "xml"
                && self.binding(p).is_none()
            {
                return Err(XmlError::NotWellFormed(format!("unbound prefix {p}")));
            }
        }
        Ok(Frame {
            element: Element {
                name: Str::new(local),
                ns,
                attrs,
                children: Vec::new(),
            },
            declared,
        })
    }

    /// Pops the bindings `frame` declared; returns its element.
    fn end(&mut self, frame: Frame) -> Element {
        let keep = self.scopes.len().saturating_sub(frame.declared);
        self.scopes.truncate(keep);
        frame.element
    }

    fn push_text(&mut self, text: Cow<'_, str>) -> Result<(), XmlError> {
        if !all_xml_chars(&text) {
            return Err(XmlError::NotWellFormed("illegal character".into()));
        }
        match self.stack.last_mut() {
            Some(frame) => {
                if let Some(Node::Text(t)) = frame.element.children.last_mut() {
                    t.push_str(&text);
                } else {
                    frame.element.children.push(Node::Text(Str::from(text)));
                }
                Ok(())
            }
            // Between stanzas only whitespace is allowed.
            None if text.chars().all(char::is_whitespace) => Ok(()),
            None => Err(XmlError::NotWellFormed("text outside a stanza".into())),
        }
    }

    fn reference(&mut self, r: &BytesRef<'_>) -> Result<(), XmlError> {
        let c = if r.is_char_ref() {
            match r.resolve_char_ref() {
                Ok(Some(c)) if is_xml_char(c) => c,
                _ => return Err(XmlError::NotWellFormed("bad character reference".into())),
            }
        } else {
            match &**r {
                "lt" => '<',
                "gt" => '>',
                "amp" => '&',
                "apos" => '\'',
                "quot" => '"',
                _ => return Err(XmlError::Restricted("entity reference")),
            }
        };
        let mut buf = [0u8; 4];
        self.push_text(Cow::Borrowed(c.encode_utf8(&mut buf)))
    }

    /// Feeds one event; returns a stream event when one is complete.
    fn event(&mut self, ev: Event<'_>) -> Result<Option<StreamEvent>, XmlError> {
        match ev {
            Event::Decl(_) if !self.in_stream && self.stack.is_empty() => Ok(None),
            Event::Start(start) if !self.in_stream => {
                let frame = self.open(&start)?;
                if !frame.element.is("stream", NS_STREAM) {
                    return Err(XmlError::NotWellFormed("expected <stream:stream>".into()));
                }
                self.in_stream = true;
                self.root_bindings = std::mem::take(&mut self.scopes);
                Ok(Some(StreamEvent::Open(frame.element)))
            }
            Event::Start(start) => {
                if self.stack.len() >= self.limits.max_depth {
                    return Err(XmlError::Policy("elements nested too deep".into()));
                }
                let frame = self.open(&start)?;
                self.stack.push(frame);
                Ok(None)
            }
            Event::Empty(start) if self.in_stream => {
                let frame = self.open(&start)?;
                let element = self.end(frame);
                Ok(self.close(element))
            }
            Event::End(_) if self.stack.is_empty() && self.in_stream => {
                Ok(Some(StreamEvent::Close))
            }
            Event::End(_) => match self.stack.pop() {
                Some(frame) => {
                    let element = self.end(frame);
                    Ok(self.close(element))
                }
                None => Err(XmlError::NotWellFormed("unexpected end tag".into())),
            },
            Event::Text(t) => self.push_text(t.xml10_content()).map(|()| None),
            Event::CData(t) => self.push_text(t.xml10_content()).map(|()| None),
            Event::GeneralRef(r) => self.reference(&r).map(|()| None),
            Event::DocType(_) => Err(XmlError::Restricted("DOCTYPE")),
            Event::PI(_) => Err(XmlError::Restricted("processing instruction")),
            Event::Comment(_) => Err(XmlError::Restricted("comment")),
            Event::Eof => Err(XmlError::Eof),
            Event::Decl(_) | Event::Empty(_) => {
                Err(XmlError::NotWellFormed("unexpected markup".into()))
            }
        }
    }

    /// Attaches a finished element to its parent, or yields it when it is top-level.
    fn close(&mut self, element: Element) -> Option<StreamEvent> {
        match self.stack.last_mut() {
            Some(parent) => {
                parent.element.children.push(Node::Element(element));
                None
            }
            None => Some(StreamEvent::Stanza(element)),
        }
    }
}

fn map_quick_err(e: quick_xml::Error) -> XmlError {
    match e {
        quick_xml::Error::Io(io) => XmlError::Io(io::Error::new(io.kind(), io.to_string())),
        quick_xml::Error::Escape(_) => XmlError::Restricted("entity reference"),
        other => XmlError::NotWellFormed(other.to_string()),
    }
}

/// Parses one standalone element (tests, benchmarks, fixtures); `default_ns` is the
/// namespace an unqualified root gets, as if it arrived on a stream with that default.
pub fn parse_element(xml: &str, default_ns: &str) -> Result<Element, XmlError> {
    let mut b = Builder::new(Limits::default());
    b.in_stream = true;
    b.root_bindings.push((Str::default(), Str::new(default_ns)));
    if xml.len() > b.limits.max_stanza_bytes {
        return Err(XmlError::Policy("stanza too large".into()));
    }
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        let ev = reader.read_event().map_err(map_quick_err)?;
        if let Event::Eof = ev {
            return Err(XmlError::NotWellFormed("incomplete element".into()));
        }
        match b.event(ev)? {
            Some(StreamEvent::Stanza(e)) => return Ok(e),
            Some(_) => return Err(XmlError::NotWellFormed("not an element".into())),
            None => {}
        }
    }
}

/// Counts the bytes pulled from the socket since the last reset, and fails the read when a
/// stanza would exceed its budget: this is what stops one huge token before it is buffered.
struct Budget<R> {
    inner: R,
    used: usize,
    limit: usize,
    exceeded: bool,
}

impl<R: AsyncRead + Unpin> AsyncRead for Budget<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.used >= self.limit {
            self.exceeded = true;
            return Poll::Ready(Err(io::Error::other("stanza size limit exceeded")));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.used += n;
        res
    }
}

/// Reads an XMPP stream from a socket half, yielding stream events within [`Limits`].
pub struct StreamReader<R> {
    reader: quick_xml::Reader<BufReader<Budget<R>>>,
    builder: Builder,
    buf: Vec<u8>,
    /// Byte offset where the current stanza began, for the exact size check.
    stanza_start: u64,
}

/// How much the socket read-ahead may overshoot the stanza limit before reads fail.
const READ_AHEAD: usize = 16 * 1024;

impl<R: AsyncRead + Unpin> StreamReader<R> {
    pub fn new(inner: R, limits: Limits) -> Self {
        let budget = Budget {
            inner,
            used: 0,
            limit: limits.max_stanza_bytes + 2 * READ_AHEAD,
            exceeded: false,
        };
        let mut reader =
            quick_xml::Reader::from_reader(BufReader::with_capacity(READ_AHEAD, budget));
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        StreamReader {
            reader,
            builder: Builder::new(limits),
            buf: Vec::with_capacity(4096),
            stanza_start: 0,
        }
    }

    /// The next stream event; an error ends the stream.
    pub async fn next(&mut self) -> Result<StreamEvent, XmlError> {
        loop {
            let at_top = self.builder.stack.is_empty();
            if at_top {
                self.stanza_start = self.reader.buffer_position();
                let budget = self.reader.get_mut().get_mut();
                budget.used = 0;
            }
            self.buf.clear();
            let ev = match self.reader.read_event_into_async(&mut self.buf).await {
                Ok(ev) => ev,
                Err(e) => {
                    if self.reader.get_ref().get_ref().exceeded {
                        return Err(XmlError::Policy("stanza too large".into()));
                    }
                    return Err(map_quick_err(e));
                }
            };
            let size = self.reader.buffer_position() - self.stanza_start;
            if size > self.builder.limits.max_stanza_bytes as u64 {
                return Err(XmlError::Policy("stanza too large".into()));
            }
            if let Some(out) = self.builder.event(ev)? {
                return Ok(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{NS_COMPONENT, NS_STREAM_ERRORS};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='abc' from='gw.example'>";

    async fn events(input: &str) -> (Vec<StreamEvent>, Option<XmlError>) {
        let mut r = StreamReader::new(input.as_bytes(), Limits::default());
        let mut out = Vec::new();
        loop {
            match r.next().await {
                Ok(ev) => out.push(ev),
                Err(XmlError::Eof) => return (out, None),
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn attribute_values_are_normalised_and_duplicates_refused() {
        let cases: [(&str, &[(&str, &str)]); 2] = [
            (
                "<message to='a@b' id='x&amp;y&#x41;' type='a\tb\nc'/>",
                &[("id", "x&yA"), ("type", "a b c"), ("to", "a@b")],
            ),
            // Past the printable-ASCII fast path: other characters are checked one by one.
            (
                "<message to='caf\u{e9}@b' id='\u{1F600}\u{7f}'/>",
                &[("to", "caf\u{e9}@b"), ("id", "\u{1F600}\u{7f}")],
            ),
        ];
        for (xml, want) in cases {
            let e = parse_element(xml, NS_COMPONENT).expect(xml);
            for (name, value) in want {
                assert_eq!(e.attr(name), Some(*value), "{xml}");
            }
        }
        for bad in [
            // Control characters, past the fast path too.
            "<message id='a\u{1}b'/>",
            "<message id='\u{1f}'/>",
            "<message to='a' id='1' to='b'/>",
            "<message xml:lang='en' xml:lang='de'/>",
            "<message xmlns='a' xmlns='b'/>",
            "<message xmlns:p='a' xmlns:p='b'/>",
        ] {
            let err = parse_element(bad, NS_COMPONENT).expect_err(bad);
            assert_eq!(err.condition(), Some("not-well-formed"), "{bad}: {err}");
        }
        // The same local name under two prefixes is two attributes.
        let e = parse_element("<message xmlns:p='urn:p' p:id='1' id='2'/>", NS_COMPONENT)
            .expect("parses");
        assert_eq!(e.attr("id"), Some("2"));
        assert_eq!(e.attr("p:id"), Some("1"));
    }

    #[tokio::test]
    async fn reads_header_stanzas_and_close() {
        let input = format!(
            "{HEADER}<handshake/>  <message to='a@b' id='m1'><body>x &lt; y &#x263A;</body></message><stream:error><conflict xmlns='{NS_STREAM_ERRORS}'/></stream:error></stream:stream>"
        );
        let (evs, err) = events(&input).await;
        assert!(err.is_none(), "{err:?}");
        assert!(matches!(&evs[0], StreamEvent::Open(e) if e.attr("id") == Some("abc")));
        assert!(matches!(&evs[1], StreamEvent::Stanza(e) if e.is("handshake", NS_COMPONENT)));
        let StreamEvent::Stanza(m) = &evs[2] else {
            panic!("not a stanza")
        };
        assert_eq!(
            m.child_text("body", NS_COMPONENT).as_deref(),
            Some("x < y ☺")
        );
        assert!(
            matches!(&evs[3], StreamEvent::Stanza(e) if e.is("error", NS_STREAM)
            && e.child("conflict", NS_STREAM_ERRORS).is_some())
        );
        assert_eq!(evs[4], StreamEvent::Close);
    }

    #[tokio::test]
    async fn stanza_split_across_reads_is_assembled() {
        let input = format!("{HEADER}<message><body>one</body></message>");
        let (client, mut server) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in input.as_bytes().chunks(5) {
                server.write_all(chunk).await.expect("write");
            }
        });
        let mut r = StreamReader::new(client, Limits::default());
        assert!(matches!(r.next().await, Ok(StreamEvent::Open(_))));
        let Ok(StreamEvent::Stanza(m)) = r.next().await else {
            panic!("no stanza")
        };
        assert_eq!(m.child_text("body", NS_COMPONENT).as_deref(), Some("one"));
        writer.await.expect("writer");
    }

    #[tokio::test]
    async fn doctype_is_restricted() {
        let input = "<?xml version='1.0'?><!DOCTYPE lol [<!ENTITY a 'aaaa'>]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";
        let (_, err) = events(input).await;
        assert_eq!(err.and_then(|e| e.condition()), Some("restricted-xml"));
    }

    #[tokio::test]
    async fn custom_entities_comments_and_pis_are_restricted() {
        for bad in [
            "<message><body>&lol;</body></message>",
            "<message foo='&lol;'/>",
            "<!-- hi --><message/>",
            "<message><?pi x?></message>",
        ] {
            let (_, err) = events(&format!("{HEADER}{bad}")).await;
            assert_eq!(
                err.and_then(|e| e.condition()),
                Some("restricted-xml"),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn oversized_stanza_is_a_policy_violation_without_buffering_it() {
        // One text node far larger than the limit: refused by the byte budget.
        let big = "a".repeat(2 * 1024 * 1024);
        let (_, err) = events(&format!("{HEADER}<message><body>{big}</body></message>")).await;
        assert_eq!(err.and_then(|e| e.condition()), Some("policy-violation"));
        // Just over the limit in many small events: refused by the exact count.
        let many = "<x/>".repeat(70 * 1024);
        let (_, err) = events(&format!("{HEADER}<message>{many}</message>")).await;
        assert_eq!(err.and_then(|e| e.condition()), Some("policy-violation"));
    }

    #[tokio::test]
    async fn a_stanza_just_under_the_limit_passes() {
        let body = "b".repeat(200 * 1024);
        let (evs, err) = events(&format!("{HEADER}<message><body>{body}</body></message>")).await;
        assert!(err.is_none(), "{err:?}");
        assert_eq!(evs.len(), 2);
    }

    #[tokio::test]
    async fn deep_nesting_is_a_policy_violation() {
        let deep = "<a>".repeat(10_000);
        let (_, err) = events(&format!("{HEADER}<message>{deep}")).await;
        assert_eq!(err.and_then(|e| e.condition()), Some("policy-violation"));
    }

    #[tokio::test]
    async fn malformed_input_is_not_well_formed() {
        for bad in [
            "<message></iq>",
            "<message><x:y/></message>",
            "text at top level",
            "<message><body>\u{1}</body></message>",
        ] {
            let (_, err) = events(&format!("{HEADER}{bad}")).await;
            assert_eq!(
                err.and_then(|e| e.condition()),
                Some("not-well-formed"),
                "{bad}"
            );
        }
    }

    #[test]
    fn prefixed_children_resolve_their_namespace() {
        let e = parse_element(
            "<message xmlns:r='urn:xmpp:receipts'><r:request/></message>",
            NS_COMPONENT,
        )
        .expect("parses");
        assert!(e.child("request", "urn:xmpp:receipts").is_some());
    }
}
