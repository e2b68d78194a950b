//! A small XML tree for stanzas: elements with resolved namespaces, text, a serializer that
//! writes only what XML 1.0 allows, and (in [`reader`]) a streaming parser with limits.
//!
//! Namespaces are resolved when parsing; an element's `ns` is its full namespace URI and the
//! serializer writes `xmlns='…'` only where it differs from the parent's, so a tree can be
//! moved between streams without carrying prefixes along.

pub mod reader;

use std::fmt::Write as _;

pub use reader::{Limits, StreamEvent, StreamReader, XmlError, parse_element};

/// The namespace of stanzas on an XEP-0114 stream.
pub const NS_COMPONENT: &str = "jabber:component:accept";
/// The namespace of `<stream:stream>` and `<stream:error>`.
pub const NS_STREAM: &str = "http://etherx.jabber.org/streams";
/// RFC 6120 stream error conditions.
pub const NS_STREAM_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 stanza error conditions.
pub const NS_STANZA_ERRORS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";

/// The strings of the tree: up to 24 bytes are kept inline, without an allocation. Names,
/// namespaces, attribute names and most of a stanza's values (JIDs, ids, types) fit, so
/// parsing a message allocates for its element lists and long texts only.
pub type Str = compact_str::CompactString;

/// A child of an element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(Str),
}

/// An XML element with its namespace resolved.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Element {
    /// The local name, without prefix.
    pub name: Str,
    /// The resolved namespace URI ("" for none).
    pub ns: Str,
    /// Attributes other than namespace declarations, in document order. Names keep the
    /// `xml:` prefix where there is one (`xml:lang`).
    pub attrs: Vec<(Str, Str)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Self {
        Element {
            name: Str::new(name),
            ns: Str::new(ns),
            attrs: Vec::new(),
            children: Vec::new(),
        }
    }

    /// True when this is `name` in namespace `ns`.
    pub fn is(&self, name: &str, ns: &str) -> bool {
        self.name == name && self.ns == ns
    }

    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets (or replaces) an attribute.
    pub fn set_attr(&mut self, name: &str, value: impl Into<Str>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((Str::new(name), value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<Str> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    /// Builder form of [`Element::set_attr`].
    pub fn with_attr(mut self, name: &str, value: impl Into<Str>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: sets the attribute only when there is a value.
    pub fn with_opt_attr(mut self, name: &str, value: Option<impl Into<Str>>) -> Self {
        if let Some(v) = value {
            self.set_attr(name, v);
        }
        self
    }

    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    pub fn with_text(mut self, text: impl Into<Str>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// A child element `<name xmlns=ns>` holding only `text`.
    pub fn text_child(name: &str, ns: &str, text: impl Into<Str>) -> Self {
        Element::new(name, ns).with_text(text)
    }

    /// The child elements, in order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            Node::Text(_) => None,
        })
    }

    /// The first child element with this name and namespace.
    pub fn child(&self, name: &str, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(name, ns))
    }

    /// The first child element in this namespace, whatever its name.
    pub fn child_ns(&self, ns: &str) -> Option<&Element> {
        self.elements().find(|e| e.ns == ns)
    }

    /// The concatenated text of the direct text children.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for n in &self.children {
            if let Node::Text(t) = n {
                out.push_str(t);
            }
        }
        out
    }

    /// The text of a child element, if that child exists.
    pub fn child_text(&self, name: &str, ns: &str) -> Option<String> {
        self.child(name, ns).map(Element::text)
    }

    /// Serializes, writing `xmlns` where the namespace differs from `parent_ns`.
    pub fn write_to(&self, out: &mut String, parent_ns: &str) {
        out.push('<');
        out.push_str(&self.name);
        if self.ns != parent_ns {
            out.push_str(" xmlns=\"");
            escape_into(out, &self.ns, true);
            out.push('"');
        }
        for (k, v) in &self.attrs {
            out.push(' ');
            out.push_str(k);
            out.push_str("=\"");
            escape_into(out, v, true);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write_to(out, &self.ns),
                Node::Text(t) => escape_into(out, t, false),
            }
        }
        out.push_str("</");
        out.push_str(&self.name);
        out.push('>');
    }

    /// Serializes as a stanza on a component stream (default namespace
    /// `jabber:component:accept`).
    pub fn to_stanza_string(&self) -> String {
        let mut out = String::with_capacity(256);
        self.write_to(&mut out, NS_COMPONENT);
        out
    }
}

impl std::fmt::Display for Element {
    /// Standalone serialization: the root always declares its namespace.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::with_capacity(256);
        self.write_to(&mut out, "\u{0}");
        f.write_str(&out)
    }
}

/// True for characters XML 1.0 allows in a document.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// True when every character of `s` is one XML 1.0 allows. Plain ASCII text is settled
/// byte by byte; only text with other characters is decoded.
pub fn all_xml_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| (0x20..0x80).contains(&b) || matches!(b, b'\t' | b'\n' | b'\r'))
        || s.chars().all(is_xml_char)
}

/// Escapes text (or an attribute value) into `out`, dropping characters XML 1.0 forbids so
/// that foreign content can never break the stream. Works on bytes: only the few ASCII
/// bytes that need care stop the copy, and a non-ASCII character is decoded only to check
/// it (of those, only U+FFFE and U+FFFF are forbidden).
pub fn escape_into(out: &mut String, s: &str, attr: bool) {
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let (rep, len) = match b {
            b'&' => ("&amp;", 1),
            b'<' => ("&lt;", 1),
            b'>' => ("&gt;", 1),
            b'"' if attr => ("&quot;", 1),
            b'\'' if attr => ("&apos;", 1),
            b'\n' if attr => ("&#10;", 1),
            b'\r' => ("&#13;", 1),
            b'\t' if attr => ("&#9;", 1),
            b'\n' | b'\t' => {
                i += 1;
                continue;
            }
            0x00..=0x1F => ("", 1),
            0x80.. => {
                let Some(c) = s[i..].chars().next() else {
                    break;
                };
                if is_xml_char(c) {
                    i += c.len_utf8();
                    continue;
                }
                ("", c.len_utf8())
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.push_str(&s[start..i]);
        out.push_str(rep);
        i += len;
        start = i;
    }
    out.push_str(&s[start..]);
}

/// Escapes a string for use in hand-written XML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s, true);
    out
}

/// Writes the opening of a component stream (XEP-0114) to `to`.
pub fn stream_header(to: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<?xml version='1.0'?><stream:stream xmlns='{NS_COMPONENT}' xmlns:stream='{NS_STREAM}' to=\"{}\">",
        escape(to)
    );
    out
}

/// A `<stream:error>` with an RFC 6120 condition and text, followed by the stream close.
pub fn stream_error(condition: &str, text: &str) -> String {
    format!(
        "<stream:error><{condition} xmlns='{NS_STREAM_ERRORS}'/><text xmlns='{NS_STREAM_ERRORS}'>{}</text></stream:error></stream:stream>",
        escape(text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The escaping rules one character at a time, as the fast path must apply them.
    fn escape_by_chars(s: &str, attr: bool) -> String {
        let mut out = String::new();
        for c in s.chars() {
            match c {
                '&' => out.push_str("&amp;"),
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '"' if attr => out.push_str("&quot;"),
                '\'' if attr => out.push_str("&apos;"),
                '\n' if attr => out.push_str("&#10;"),
                '\r' => out.push_str("&#13;"),
                '\t' if attr => out.push_str("&#9;"),
                c if !is_xml_char(c) => {}
                c => out.push(c),
            }
        }
        out
    }

    #[test]
    fn escaping_matches_the_rules_character_by_character() {
        let samples = [
            "",
            "plain",
            "a & b < c > d \" e ' f",
            "tab\tline\nreturn\r",
            "\u{0}\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f}",
            "ünïcödé 中文 😀 \u{85} \u{d7ff} \u{e000} \u{fffd}",
            "forbidden \u{fffe} and \u{ffff} between",
            "\u{fffe}\u{ffff}",
            "mixed\u{1}😀<&>\u{ffff}\t",
        ];
        for s in samples {
            for attr in [false, true] {
                let mut fast = String::new();
                escape_into(&mut fast, s, attr);
                assert_eq!(fast, escape_by_chars(s, attr), "{s:?} attr={attr}");
            }
            assert_eq!(all_xml_chars(s), s.chars().all(is_xml_char), "{s:?}");
        }
    }

    #[test]
    fn serializes_with_minimal_xmlns() {
        let e = Element::new("message", NS_COMPONENT)
            .with_attr("to", "a@b")
            .with_child(Element::text_child("body", NS_COMPONENT, "hi & <bye>"))
            .with_child(Element::new("request", "urn:xmpp:receipts"));
        assert_eq!(
            e.to_stanza_string(),
            "<message to=\"a@b\"><body>hi &amp; &lt;bye&gt;</body><request xmlns=\"urn:xmpp:receipts\"/></message>"
        );
    }

    #[test]
    fn drops_characters_xml_forbids() {
        let mut s = String::new();
        escape_into(&mut s, "a\u{1}b\u{0}c\u{FFFE}d", false);
        assert_eq!(s, "abcd");
    }

    #[test]
    fn attribute_quotes_and_newlines_are_escaped() {
        let e = Element::new("x", "").with_attr("v", "it's \"q\"\n");
        assert_eq!(
            e.to_string(),
            "<x xmlns=\"\" v=\"it&apos;s &quot;q&quot;&#10;\"/>"
        );
    }

    #[test]
    fn round_trips_through_the_parser() {
        let src = "<iq type=\"get\" id=\"1\" from=\"a@b/c\" to=\"gw.b\"><query xmlns=\"http://jabber.org/protocol/disco#info\" node=\"x\"/><t xml:lang=\"en\">a&amp;b</t></iq>";
        let e = parse_element(src, NS_COMPONENT).expect("parses");
        assert_eq!(e.to_stanza_string(), src);
    }
}
