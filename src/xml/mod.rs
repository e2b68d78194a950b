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

/// A child of an element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
}

/// An XML element with its namespace resolved.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Element {
    /// The local name, without prefix.
    pub name: String,
    /// The resolved namespace URI ("" for none).
    pub ns: String,
    /// Attributes other than namespace declarations, in document order. Names keep the
    /// `xml:` prefix where there is one (`xml:lang`).
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Node>,
}

impl Element {
    pub fn new(name: &str, ns: &str) -> Self {
        Element {
            name: name.to_owned(),
            ns: ns.to_owned(),
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
    pub fn set_attr(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.attrs.iter_mut().find(|(k, _)| k == name) {
            Some(slot) => slot.1 = value,
            None => self.attrs.push((name.to_owned(), value)),
        }
    }

    pub fn remove_attr(&mut self, name: &str) -> Option<String> {
        let pos = self.attrs.iter().position(|(k, _)| k == name)?;
        Some(self.attrs.remove(pos).1)
    }

    /// Builder form of [`Element::set_attr`].
    pub fn with_attr(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set_attr(name, value);
        self
    }

    /// Builder: sets the attribute only when there is a value.
    pub fn with_opt_attr(mut self, name: &str, value: Option<impl Into<String>>) -> Self {
        if let Some(v) = value {
            self.set_attr(name, v);
        }
        self
    }

    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(text.into()));
        self
    }

    pub fn push(&mut self, child: Element) {
        self.children.push(Node::Element(child));
    }

    /// A child element `<name xmlns=ns>` holding only `text`.
    pub fn text_child(name: &str, ns: &str, text: impl Into<String>) -> Self {
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

/// Escapes text (or an attribute value) into `out`, dropping characters XML 1.0 forbids so
/// that foreign content can never break the stream.
pub fn escape_into(out: &mut String, s: &str, attr: bool) {
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let rep = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' if attr => "&quot;",
            '\'' if attr => "&apos;",
            '\n' if attr => "&#10;",
            '\r' => "&#13;",
            '\t' if attr => "&#9;",
            c if !is_xml_char(c) => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        out.push_str(rep);
        start = i + c.len_utf8();
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
