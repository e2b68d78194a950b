//! A cleaned-up copy of a broken feed document, for a second try with feed-rs.
//!
//! One pass over the text, like the loose parsers of feedparser and browsers:
//! - the bytes are decoded in their declared encoding when they fit it, else as UTF-8
//!   with windows-1252 for the bytes that are not UTF-8; the copy is declared UTF-8;
//! - the DOCTYPE, comments and processing instructions are dropped (DTD entities are
//!   never expanded), and so is anything outside the root feed element;
//! - HTML named entities become characters, unknown ones and stray `&` are escaped,
//!   numeric references that are not XML characters are replaced, control characters
//!   dropped;
//! - start tags are rewritten with well-formed, quoted, escaped attributes; HTML void
//!   elements (`<br>`, `<img>`) are closed;
//! - markup inside `<description>`, `<content:encoded>`, `<summary>` and `<content>` is
//!   wrapped in CDATA (it is HTML for the summary, not feed structure), and empty ones
//!   dropped;
//! - end tags are balanced against the open elements: a stray one is dropped, a missing
//!   one inserted, and a truncated document is closed;
//! - unknown RSS versions are read as 2.0, and Atom 0.3 and RSS 0.90 namespaces as
//!   Atom 1.0 and RSS 1.0.

use std::borrow::Cow;

use encoding_rs::Encoding;

use crate::html::{named_entity, numeric_char};

/// Elements deeper than this are dropped.
const MAX_DEPTH: usize = 256;
/// Attributes of one tag past this many are dropped.
const MAX_ATTRIBUTES: usize = 64;

/// The repaired document, as UTF-8 XML text.
pub(super) fn repair(bytes: &[u8]) -> String {
    let text = decode(bytes);
    let text = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    if text.starts_with(['{', '[']) {
        // JSON Feed: the encoding could be wrong, and the authors (see `email_hazard`)
        // are not needed.
        return match serde_json::from_str::<serde_json::Value>(text) {
            Ok(mut v) => {
                drop_authors(&mut v);
                if let Some(items) = v.get_mut("items").and_then(|i| i.as_array_mut()) {
                    items.iter_mut().for_each(drop_authors);
                }
                v.to_string()
            }
            Err(_) => text.to_owned(),
        };
    }
    Repair::new(text).run()
}

fn drop_authors(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.remove("author");
        o.remove("authors");
    }
}

/// The document as text: in its declared encoding when the bytes fit it, else UTF-8
/// with windows-1252 for the bytes that are not UTF-8.
pub(crate) fn decode(bytes: &[u8]) -> Cow<'_, str> {
    if let Some((enc, bom)) = Encoding::for_bom(bytes) {
        return enc.decode_without_bom_handling(&bytes[bom..]).0;
    }
    match bytes {
        [b'<', 0, ..] => {
            return encoding_rs::UTF_16LE.decode_without_bom_handling(bytes).0;
        }
        [0, b'<', ..] => {
            return encoding_rs::UTF_16BE.decode_without_bom_handling(bytes).0;
        }
        _ => {}
    }
    if let Some(enc) = declared_encoding(bytes).and_then(|l| Encoding::for_label(l.as_bytes()))
        && enc != encoding_rs::UTF_8
        && enc.is_ascii_compatible()
        && let Some(s) = enc.decode_without_bom_handling_and_without_replacement(bytes)
    {
        return s;
    }
    if let Ok(s) = std::str::from_utf8(bytes) {
        return Cow::Borrowed(s);
    }
    let mut s = String::with_capacity(bytes.len() + bytes.len() / 8);
    for chunk in bytes.utf8_chunks() {
        s.push_str(chunk.valid());
        for &b in chunk.invalid() {
            s.push(numeric_char(u32::from(b)));
        }
    }
    Cow::Owned(s)
}

/// How a document goes to feed-rs for a first try.
pub(super) enum Prepared {
    /// As it is.
    AsIs,
    /// Transcoded to UTF-8, without its XML declaration.
    Utf8(String),
    /// Only the repaired copy is safe to read.
    Repair,
}

/// Keeps feed-rs's XML reader (quick-xml 0.42) away from what makes it panic: an XML
/// declaration that switches the encoding after the first 64 bytes were decoded (one
/// that starts late, is long, or comes a second time). A document that declares an
/// encoding other than UTF-8, or is UTF-16, is transcoded here instead; one with two
/// declarations is only read repaired.
pub(super) fn prepare(bytes: &[u8]) -> Prepared {
    let mut decls = memchr::memmem::find_iter(bytes, b"<?xml").filter(|&p| is_decl(bytes, p));
    let first = decls.next();
    if decls.next().is_some() {
        return Prepared::Repair;
    }
    let utf16 = Encoding::for_bom(bytes).is_some_and(|(e, _)| e != encoding_rs::UTF_8)
        || matches!(bytes, [b'<', 0, ..] | [0, b'<', ..]);
    let other_encoding = first
        .and_then(|at| encoding_label(&bytes[at..]))
        .and_then(|l| Encoding::for_label(l.as_bytes()))
        .is_some_and(|enc| enc != encoding_rs::UTF_8);
    if utf16 || other_encoding {
        let text = transcode(bytes);
        if email_hazard(text.as_bytes()) {
            return Prepared::Repair;
        }
        return Prepared::Utf8(text);
    }
    if email_hazard(bytes) {
        return Prepared::Repair;
    }
    Prepared::AsIs
}

/// Whether the document may have an e-mail address right beside a non-ASCII character
/// (or a reference to one): feed-rs 3.0 slices author texts such as `«x@example.org»`
/// inside a character and panics. Such a document is read repaired, without its author
/// elements (ferry does not use them). It errs on the safe side: the address may be in
/// any element, and an `@` written as a reference counts as a hazard.
fn email_hazard(doc: &[u8]) -> bool {
    fn local(c: u8) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
    }
    fn domain(c: u8) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-')
    }
    /// A numeric reference (`&#8217;`, `&#xAB;`) to a non-ASCII character at `b`.
    fn non_ascii_ref(b: &[u8]) -> bool {
        let Some(rest) = b.strip_prefix(b"&#") else {
            return false;
        };
        let (digits, radix) = match rest.first() {
            Some(b'x' | b'X') => (&rest[1..], 16),
            _ => (rest, 10),
        };
        let end = digits
            .iter()
            .position(|c| !c.is_ascii_hexdigit())
            .unwrap_or(digits.len())
            .min(8);
        std::str::from_utf8(&digits[..end])
            .ok()
            .and_then(|d| u32::from_str_radix(d, radix).ok())
            .is_some_and(|v| v >= 0x80)
    }
    if memchr::memmem::find(doc, b"&#64;").is_some()
        || memchr::memmem::find(doc, b"&#x40;").is_some()
        || memchr::memmem::find(doc, b"\\u0040").is_some()
    {
        return true;
    }
    memchr::memchr_iter(b'@', doc).any(|at| {
        let mut l = at;
        while l > 0 && local(doc[l - 1]) {
            l -= 1;
        }
        let mut r = at + 1;
        while r < doc.len() && domain(doc[r]) {
            r += 1;
        }
        let dom = &doc[at + 1..r];
        let has_tld = dom.iter().enumerate().any(|(i, &c)| {
            c == b'.'
                && dom[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphabetic())
                    .count()
                    >= 2
        });
        if l == at || !has_tld {
            return false; // not an address the author regex would find
        }
        // Optional delimiters around the address in feed-rs's regex.
        if doc[..l].ends_with(b"mailto:") {
            l -= 7;
        }
        if doc[..l].ends_with(b"<[(") {
            l -= 3;
        }
        if doc[r..].starts_with(b">])") {
            r += 3;
        }
        let before = match l.checked_sub(1).map(|i| doc[i]) {
            Some(c) if c >= 0x80 || c == b'\\' => true,
            Some(b';') => {
                let from = l.saturating_sub(12);
                memchr::memrchr(b'&', &doc[from..l])
                    .is_some_and(|p| non_ascii_ref(&doc[from + p..l]))
            }
            _ => false,
        };
        let after = match doc.get(r) {
            Some(&c) if c >= 0x80 || c == b'\\' => true,
            Some(b'&') => non_ascii_ref(&doc[r..]),
            _ => false,
        };
        (before || after) && in_person_text(doc, at)
    })
}

/// Whether the text at `at` is (or may be) the text of an element feed-rs reads as a
/// person: in XML, the nearest start tag before it is one; JSON is not looked into.
fn in_person_text(doc: &[u8], at: usize) -> bool {
    if doc.iter().find(|c| !c.is_ascii_whitespace()) == Some(&b'{') {
        return true;
    }
    let mut end = at;
    while let Some(lt) = memchr::memrchr(b'<', &doc[..end]) {
        let tag = &doc[lt + 1..];
        if tag.starts_with(b"![CDATA[") {
            end = lt;
            continue;
        }
        let name_end = tag
            .iter()
            .position(|&c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'))
            .unwrap_or(tag.len());
        let name = &tag[..name_end];
        let local = name.rsplit(|&c| c == b':').next().unwrap_or(name);
        return local == b"name" || PERSONS.iter().any(|p| p.as_bytes() == local);
    }
    false
}

/// Whether `<?xml` at `p` starts an XML declaration (not `<?xml-stylesheet`).
fn is_decl(b: &[u8], p: usize) -> bool {
    matches!(b.get(p + 5), Some(b' ' | b'\t' | b'\r' | b'\n' | b'?'))
}

/// The document as UTF-8 text declared so, without any other XML declaration.
fn transcode(bytes: &[u8]) -> String {
    let text = decode(bytes);
    let mut out = String::with_capacity(text.len() + 40);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>");
    let b = text.as_bytes();
    let mut run = 0;
    for p in memchr::memmem::find_iter(b, b"<?xml") {
        if p < run || !is_decl(b, p) {
            continue;
        }
        out.push_str(&text[run..p]);
        run = find(b, p, b"?>").map_or(b.len(), |e| e + 2);
    }
    out.push_str(&text[run..]);
    out
}

/// The `encoding` of the document's (first) XML declaration.
fn declared_encoding(bytes: &[u8]) -> Option<String> {
    let at = memchr::memmem::find_iter(bytes, b"<?xml").find(|&p| is_decl(bytes, p))?;
    encoding_label(&bytes[at..])
}

/// The `encoding` of the XML declaration that `decl` starts with.
fn encoding_label(decl: &[u8]) -> Option<String> {
    let end = memchr::memmem::find(&decl[..decl.len().min(1024)], b"?>")?;
    let decl = &decl[..end];
    let at = memchr::memmem::find(decl, b"encoding")? + 8;
    let rest = &decl[at..];
    let q = rest.iter().position(|&c| c == b'"' || c == b'\'')?;
    let quote = rest[q];
    let value = &rest[q + 1..];
    let close = value.iter().position(|&c| c == quote)?;
    Some(String::from_utf8_lossy(&value[..close]).trim().to_owned())
}

struct Repair<'a> {
    s: &'a str,
    out: String,
    /// The open elements, by qualified name.
    stack: Vec<&'a str>,
    /// Whether the root feed element has been seen (and so text is kept).
    root_seen: bool,
    /// The root element has closed: the rest is ignored.
    done: bool,
    /// An Atom 0.3 document: its element names are mapped to Atom 1.0's.
    atom03: bool,
    /// Content elements whose end tag could not be found (no more look-ahead for them).
    no_wrap: Vec<&'a str>,
    /// The last end tag found for a content element: (name, where it starts, where the
    /// text after it starts). A later search from before it finds it again, so it is
    /// reused: the look-ahead stays linear however many start tags share one end tag.
    last_close: Vec<(&'a str, usize, usize)>,
}

/// Elements whose inner markup is HTML for the summary.
const WRAPPED: &[&str] = &[
    "description",
    "content:encoded",
    "summary",
    "content",
    "body",
];

/// Elements about people (by local name), whose text feed-rs may choke on.
const PERSONS: &[&str] = &["author", "managingEditor", "webMaster", "creator", "owner"];

/// HTML elements that have no end tag.
const VOID: &[&str] = &[
    "br", "hr", "img", "input", "meta", "area", "col", "embed", "param", "wbr", "basefont",
    "frame", "keygen",
];

impl<'a> Repair<'a> {
    fn new(s: &'a str) -> Repair<'a> {
        Repair {
            s,
            out: String::with_capacity(s.len() + 256),
            stack: Vec::new(),
            root_seen: false,
            done: false,
            atom03: false,
            no_wrap: Vec::new(),
            last_close: Vec::new(),
        }
    }

    fn run(mut self) -> String {
        self.out
            .push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
        let s = self.s;
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() && !self.done {
            match b[i] {
                b'<' => i = self.markup(i),
                b'&' => i = self.reference(i),
                0..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f => i += 1,
                0xef if matches!(b.get(i + 1..i + 3), Some([0xbf, 0xbe | 0xbf])) => i += 3,
                _ => {
                    let start = i;
                    i += 1;
                    while i < b.len()
                        && !matches!(b[i], b'<' | b'&' | 0..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0xef)
                    {
                        i += 1;
                    }
                    self.text(&s[start..i]);
                }
            }
        }
        while let Some(name) = self.stack.pop() {
            self.close(name);
        }
        self.out
    }

    fn text(&mut self, t: &str) {
        if !self.stack.is_empty() {
            self.out.push_str(t);
        }
    }

    fn close(&mut self, name: &str) {
        self.out.push_str("</");
        self.out.push_str(rename(self.atom03, name));
        self.out.push('>');
    }

    /// An `&` in text: a reference feed-rs can read, a character, or an escaped `&`.
    fn reference(&mut self, i: usize) -> usize {
        let b = self.s.as_bytes();
        let rest = &b[i + 1..];
        if rest.first() == Some(&b'#') {
            let hex = matches!(rest.get(1), Some(b'x' | b'X'));
            let digits_at = if hex { 2 } else { 1 };
            let mut value: u32 = 0;
            let mut n = 0;
            for &d in rest.iter().skip(digits_at).take(8) {
                let v = match d {
                    b'0'..=b'9' => u32::from(d - b'0'),
                    b'a'..=b'f' if hex => u32::from(d - b'a' + 10),
                    b'A'..=b'F' if hex => u32::from(d - b'A' + 10),
                    _ => break,
                };
                value = value
                    .saturating_mul(if hex { 16 } else { 10 })
                    .saturating_add(v);
                n += 1;
            }
            if n > 0 {
                let mut end = i + 1 + digits_at + n;
                if b.get(end) == Some(&b';') {
                    end += 1;
                }
                let c = numeric_char(value);
                self.push_char_escaped(c);
                return end;
            }
            self.text("&amp;");
            return i + 1;
        }
        let mut n = 0;
        while n < rest.len() && n < 32 && rest[n].is_ascii_alphanumeric() {
            n += 1;
        }
        if n > 0 && rest.get(n) == Some(&b';') {
            let name = &rest[..n];
            if matches!(name, b"amp" | b"lt" | b"gt" | b"quot" | b"apos") {
                let end = i + n + 2;
                let t = &self.s[i..end];
                self.text(t);
                return end;
            }
            if let Some(c) = named_entity(name) {
                self.push_char_escaped(c);
                return i + n + 2;
            }
        }
        self.text("&amp;");
        i + 1
    }

    /// A decoded character, escaped where XML needs it; not an XML character: dropped.
    fn push_char_escaped(&mut self, c: char) {
        let mut buf = [0u8; 4];
        let t: &str = match c {
            '<' => "&lt;",
            '&' => "&amp;",
            '>' => "&gt;",
            '\t' | '\n' | '\r' => c.encode_utf8(&mut buf),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => return,
            c => c.encode_utf8(&mut buf),
        };
        if !self.stack.is_empty() {
            self.out.push_str(t);
        }
    }

    /// Markup at `b[i] == b'<'`; returns where to go on.
    fn markup(&mut self, i: usize) -> usize {
        let s = self.s;
        let b = s.as_bytes();
        let rest = &b[i..];
        if rest.starts_with(b"<!--") {
            return find(b, i + 4, b"-->").map_or(b.len(), |p| p + 3);
        }
        if rest.starts_with(b"<![CDATA[") {
            let end = find(b, i + 9, b"]]>");
            let stop = end.map_or(b.len(), |p| p + 3);
            if !self.stack.is_empty() {
                self.out.push_str(&s[i..stop]);
                if end.is_none() {
                    self.out.push_str("]]>");
                }
            }
            return stop;
        }
        if rest.starts_with(b"<!") {
            return skip_declaration(b, i + 2);
        }
        if rest.starts_with(b"<?") {
            return find(b, i + 2, b"?>").map_or(b.len(), |p| p + 2);
        }
        if rest.starts_with(b"</") {
            let name_end = name_end(b, i + 2);
            let name = &s[i + 2..name_end];
            let after = b[name_end..]
                .iter()
                .position(|&c| c == b'>')
                .map_or(b.len(), |p| name_end + p + 1);
            self.end_tag(name);
            return after;
        }
        let first = rest.get(1).copied().unwrap_or(0);
        if first.is_ascii_alphabetic() || first == b'_' || first >= 0x80 {
            return self.start_tag(i);
        }
        self.text("&lt;");
        i + 1
    }

    fn end_tag(&mut self, name: &str) {
        let pos = self
            .stack
            .iter()
            .rposition(|open| *open == name)
            .or_else(|| {
                self.stack
                    .iter()
                    .rposition(|open| open.eq_ignore_ascii_case(name))
            });
        let Some(pos) = pos else {
            return; // a stray end tag
        };
        while self.stack.len() > pos {
            if let Some(open) = self.stack.pop() {
                self.close(open);
            }
        }
        if self.stack.is_empty() {
            self.done = true;
        }
    }

    fn start_tag(&mut self, i: usize) -> usize {
        let s = self.s;
        let b = s.as_bytes();
        let name_end = name_end(b, i + 1);
        let name = &s[i + 1..name_end];
        // The end of the tag, minding quoted attribute values.
        let mut j = name_end;
        let mut quote = 0u8;
        let mut after_eq = false;
        while j < b.len() {
            let c = b[j];
            if quote != 0 {
                if c == quote {
                    quote = 0;
                }
            } else if (c == b'"' || c == b'\'') && after_eq {
                quote = c;
            } else if c == b'>' {
                break;
            } else if c == b'<' {
                break; // an unclosed tag ends where the next one starts
            }
            if !c.is_ascii_whitespace() {
                after_eq = c == b'=';
            }
            j += 1;
        }
        if j >= b.len() {
            return b.len(); // a tag cut off by the end of the document
        }
        let after = if b[j] == b'>' { j + 1 } else { j };
        let attrs_text = &s[name_end..j];
        let self_closing = attrs_text.trim_end().ends_with('/');

        let local = name.rsplit(':').next().unwrap_or(name);
        if !self.root_seen {
            if !matches!(local, "rss" | "feed" | "RDF" | "rdf") {
                return after; // junk before the feed (an HTML error page, a PHP warning)
            }
            self.root_seen = true;
        }
        if self.stack.len() >= MAX_DEPTH {
            return after;
        }
        if !self_closing && PERSONS.contains(&local) && !self.stack.is_empty() {
            // Author elements are dropped with their content (see `email_hazard`).
            let close = format!("</{name}");
            if let Some(p) = find(b, after, close.as_bytes()) {
                return b[p..]
                    .iter()
                    .position(|&c| c == b'>')
                    .map_or(b.len(), |q| p + q + 1);
            }
        }
        let is_void = !name.contains(':') && VOID.iter().any(|v| v.eq_ignore_ascii_case(name));
        let attrs = self.attributes(attrs_text, self.stack.is_empty() && local == "rss");
        if self_closing || is_void {
            self.out.push('<');
            self.out.push_str(rename(self.atom03, name));
            self.out.push_str(&attrs);
            self.out.push_str("/>");
            return after;
        }
        if WRAPPED.contains(&name)
            && !self.no_wrap.contains(&name)
            && let Some(next) = self.wrap(name, &attrs, after)
        {
            return next;
        }
        self.out.push('<');
        self.out.push_str(rename(self.atom03, name));
        self.out.push_str(&attrs);
        self.out.push('>');
        self.stack.push(name);
        after
    }

    /// A content element whose inner markup is HTML: written with the markup in CDATA,
    /// or dropped when empty. `None` when it is left to the general path.
    fn wrap(&mut self, name: &'a str, attrs: &str, inner_start: usize) -> Option<usize> {
        let s = self.s;
        let b = s.as_bytes();
        let mut close = self
            .last_close
            .iter()
            .find(|(n, at, _)| *n == name && *at >= inner_start)
            .map(|&(_, at, after)| (at, after));
        let mut from = if close.is_some() {
            b.len()
        } else {
            inner_start
        };
        while let Some(p) = find(b, from, b"</") {
            let at = p + 2;
            if b[at..].starts_with(name.as_bytes()) {
                let e = at + name.len();
                if let Some(t) = b[e..].iter().position(|c| !c.is_ascii_whitespace())
                    && b[e + t] == b'>'
                {
                    close = Some((p, e + t + 1));
                    break;
                }
            }
            from = at;
        }
        let Some((inner_end, after)) = close else {
            self.no_wrap.push(name);
            return None;
        };
        match self.last_close.iter_mut().find(|(n, _, _)| *n == name) {
            Some(slot) => *slot = (name, inner_end, after),
            None => self.last_close.push((name, inner_end, after)),
        }
        let inner = &s[inner_start..inner_end];
        if inner.trim().is_empty() {
            return Some(after); // feed-rs refuses empty Atom text constructs
        }
        if !inner.contains('<') || inner.contains("<![CDATA[") {
            return None;
        }
        self.out.push('<');
        self.out.push_str(name);
        // The markup is now escaped HTML, whatever it was declared as (the attributes
        // are normalised: ` name="value"` each).
        match attrs.find(" type=\"") {
            Some(p) => {
                let value_start = p + 7;
                let value_end = attrs[value_start..]
                    .find('"')
                    .map_or(attrs.len(), |q| value_start + q);
                self.out.push_str(&attrs[..p]);
                self.out.push_str(" type=\"html");
                self.out.push_str(&attrs[value_end..]);
            }
            None => self.out.push_str(attrs),
        }
        self.out.push_str("><![CDATA[");
        let mut rest = inner;
        while let Some(p) = rest.find("]]>") {
            self.out.push_str(&rest[..p]);
            self.out.push_str("]]]]><![CDATA[>");
            rest = &rest[p + 3..];
        }
        self.out.push_str(rest);
        self.out.push_str("]]></");
        self.out.push_str(name);
        self.out.push('>');
        Some(after)
    }

    /// A tag's attributes rewritten well-formed: ` name="escaped value"` each, repeats
    /// dropped; the root `<rss>` gets a version feed-rs reads.
    fn attributes(&mut self, text: &str, rss_root: bool) -> String {
        let b = text.as_bytes();
        let mut out = String::with_capacity(text.len() + 16);
        let mut seen: Vec<&str> = Vec::new();
        let mut i = 0;
        let mut rss_version = "2.0";
        while i < b.len() {
            while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
                i += 1;
            }
            let name_start = i;
            while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'/') {
                i += 1;
            }
            let name = &text[name_start..i];
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            let mut value: Option<&str> = None;
            if b.get(i) == Some(&b'=') {
                i += 1;
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                match b.get(i) {
                    Some(&q @ (b'"' | b'\'')) => {
                        let start = i + 1;
                        let end = b[start..]
                            .iter()
                            .position(|&c| c == q)
                            .map_or(b.len(), |p| start + p);
                        value = Some(&text[start..end]);
                        i = (end + 1).min(b.len());
                    }
                    _ => {
                        let start = i;
                        while i < b.len() && !b[i].is_ascii_whitespace() {
                            i += 1;
                        }
                        value = Some(&text[start..i]);
                    }
                }
            }
            if name.is_empty() {
                if name_start == i {
                    i += 1;
                }
                continue;
            }
            let valid_name = name.bytes().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':' | b'.') || c >= 0x80
            }) && !name.as_bytes()[0].is_ascii_digit();
            if !valid_name || seen.contains(&name) || seen.len() >= MAX_ATTRIBUTES {
                continue;
            }
            seen.push(name);
            if rss_root && name == "version" {
                // feed-rs reads 0.91, 0.92 and 2.0; 0.93, 0.94, 2.01 are read as 2.0.
                let v = value.unwrap_or_default().trim();
                if matches!(v, "0.91" | "0.92") {
                    rss_version = if v == "0.91" { "0.91" } else { "0.92" };
                }
                continue;
            }
            let value = value.unwrap_or(name);
            let value = match value.trim() {
                "http://purl.org/atom/ns#" => {
                    self.atom03 = true;
                    "http://www.w3.org/2005/Atom"
                }
                "http://my.netscape.com/rdf/simple/0.9/" => "http://purl.org/rss/1.0/",
                _ => value,
            };
            out.push(' ');
            out.push_str(name);
            out.push_str("=\"");
            escape_attr(value, &mut out);
            out.push('"');
        }
        if rss_root {
            out.insert_str(0, &format!(" version=\"{rss_version}\""));
        }
        out
    }
}

/// Atom 0.3 element names as Atom 1.0's.
fn rename(atom03: bool, name: &str) -> &str {
    if !atom03 {
        return name;
    }
    match name {
        "issued" => "published",
        "modified" => "updated",
        "tagline" => "subtitle",
        "copyright" => "rights",
        other => other,
    }
}

/// Writes an attribute value escaped: references fixed as in text, `<` and `"` escaped.
fn escape_attr(v: &str, out: &mut String) {
    let b = v.as_bytes();
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let replacement: Option<Cow<'_, str>> = match c {
            b'<' => Some("&lt;".into()),
            b'"' => Some("&quot;".into()),
            b'\t' | b'\n' | b'\r' => Some(" ".into()),
            0..=0x1f => Some("".into()),
            b'&' => {
                let rest = &b[i + 1..];
                let mut n = 0;
                while n < rest.len()
                    && n < 32
                    && (rest[n].is_ascii_alphanumeric() || rest[n] == b'#')
                {
                    n += 1;
                }
                let name = &rest[..n];
                if n > 0 && rest.get(n) == Some(&b';') {
                    if matches!(name, b"amp" | b"lt" | b"gt" | b"quot" | b"apos") {
                        None
                    } else if let Some(ch) = named_entity(name) {
                        out.push_str(&v[run..i]);
                        escape_char_into(ch, out);
                        i += n + 2;
                        run = i;
                        continue;
                    } else if name.first() == Some(&b'#') {
                        out.push_str(&v[run..i]);
                        let digits = &v[i + 2..i + 1 + n];
                        let value = match digits.strip_prefix(['x', 'X']) {
                            Some(h) => u32::from_str_radix(h, 16).ok(),
                            None => digits.parse::<u32>().ok(),
                        };
                        if let Some(value) = value {
                            escape_char_into(numeric_char(value), out);
                        }
                        i += n + 2;
                        run = i;
                        continue;
                    } else {
                        Some("&amp;".into())
                    }
                } else {
                    Some("&amp;".into())
                }
            }
            _ => None,
        };
        if let Some(r) = replacement {
            out.push_str(&v[run..i]);
            out.push_str(&r);
            run = i + 1;
        }
        i += 1;
    }
    out.push_str(&v[run..]);
}

fn escape_char_into(c: char, out: &mut String) {
    match c {
        '<' => out.push_str("&lt;"),
        '&' => out.push_str("&amp;"),
        '"' => out.push_str("&quot;"),
        c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
        c => out.push(c),
    }
}

/// The end of an element name starting at `from`.
fn name_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len()
        && !b[i].is_ascii_whitespace()
        && !matches!(b[i], b'>' | b'/' | b'<' | b'"' | b'\'' | b'=')
    {
        i += 1;
    }
    i
}

/// Skips `<!DOCTYPE …>` (with its internal subset) or another `<!…>` declaration.
fn skip_declaration(b: &[u8], from: usize) -> usize {
    let mut depth = 0usize;
    let mut quote = 0u8;
    let mut i = from;
    while i < b.len() {
        let c = b[i];
        if quote != 0 {
            if c == quote {
                quote = 0;
            }
        } else {
            match c {
                b'"' | b'\'' => quote = c,
                b'[' => depth += 1,
                b']' => depth = depth.saturating_sub(1),
                b'>' if depth == 0 => return i + 1,
                _ => {}
            }
        }
        i += 1;
    }
    b.len()
}

fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay.get(from..)?, needle).map(|p| from + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_the_declaration_and_decodes_wrong_encodings() {
        // Declared UTF-8, but a windows-1252 byte (é) and a curly quote in the text.
        let doc = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><rss><channel><title>Caf\xe9 \x93x\x94 \xc3\xa9</title></channel></rss>";
        let out = repair(doc);
        assert!(
            out.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"),
            "{out}"
        );
        assert!(out.contains("<title>Café “x” é</title>"), "{out}");
        // Declared ISO-8859-1 and fits it.
        let doc = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><rss><channel><title>\xe9</title></channel></rss>";
        assert!(repair(doc).contains("<title>é</title>"));
    }

    #[test]
    fn prepare_keeps_feed_rs_off_late_encoding_switches() {
        let item = "<rss version=\"2.0\"><channel><title>x</title></channel></rss>";
        assert!(matches!(prepare(item.as_bytes()), Prepared::AsIs));
        let utf8 = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>{item}");
        assert!(matches!(prepare(utf8.as_bytes()), Prepared::AsIs));
        let styled = format!("<?xml version=\"1.0\"?><?xml-stylesheet href=\"s.xsl\"?>{item}");
        assert!(matches!(prepare(styled.as_bytes()), Prepared::AsIs));
        let latin = format!("\n\n<?xml version=\"1.0\"   encoding=\"ISO-8859-1\"  ?>{item}");
        match prepare(latin.as_bytes()) {
            Prepared::Utf8(t) => {
                assert_eq!(
                    t,
                    format!("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n\n{item}")
                );
            }
            _ => panic!("a latin-1 document is transcoded"),
        }
        let twice =
            format!("<?xml version=\"1.0\"?>{item}<?xml version=\"1.0\" encoding=\"latin1\"?>");
        assert!(matches!(prepare(twice.as_bytes()), Prepared::Repair));
        let utf16: Vec<u8> = item.encode_utf16().flat_map(u16::to_le_bytes).collect();
        assert!(matches!(prepare(&utf16), Prepared::Utf8(t) if t.ends_with("</rss>")));
    }

    #[test]
    fn spots_email_addresses_beside_non_ascii_text() {
        assert!(!email_hazard(b"<author>x@example.org (X)</author>"));
        // Beside non-ASCII text, but not in an element about a person.
        assert!(!email_hazard(
            "<description>«x@example.org»</description>".as_bytes()
        ));
        assert!(email_hazard(
            "<dc:creator><![CDATA[«x@example.org»]]></dc:creator>".as_bytes()
        ));
        assert!(!email_hazard(
            "<author>Jörg x@example.org</author>".as_bytes()
        ));
        assert!(email_hazard(
            "<author>Jörg «x@example.org»</author>".as_bytes()
        ));
        assert!(email_hazard("<author>x@example.org’s</author>".as_bytes()));
        assert!(email_hazard(b"<author>&#8217;x@example.org</author>"));
        assert!(email_hazard(
            br#"{"author": {"name": "\u00abx@example.org"}}"#
        ));
        assert!(!email_hazard(b"<p>&lt;code&gt;@extractor = x.org</p>"));
        assert!(!email_hazard(b"<author>&gt;x@example.org&lt;</author>"));
        assert!(email_hazard(b"<author>x@example.org&#xbb;</author>"));
        assert!(email_hazard(
            "<author>«mailto:x@example.org»</author>".as_bytes()
        ));
        assert!(email_hazard("<p>«x&#64;example.org»</p>".as_bytes()));
        assert!(!email_hazard(
            "<author>é @handle, a@b, «nobody@localhost»</author>".as_bytes()
        ));
        let out = repair("<rss><channel><item><author>Jörg «x@y.org»</author><title>t</title><dc:creator>z</dc:creator></item></channel></rss>".as_bytes());
        assert!(!out.contains("author") && !out.contains("creator"), "{out}");
        assert!(out.contains("<title>t</title>"), "{out}");
    }

    #[test]
    fn drops_doctype_and_fixes_references() {
        let out = repair(
            b"<!DOCTYPE rss PUBLIC \"-//Netscape Communications//DTD RSS 0.91//EN\" \"x.dtd\" [<!ENTITY boom \"bang\">]>\
              <rss version=\"0.91\"><channel><title>a &eacute; & &boom; &amp; &#233; &#0; &#x1;</title></channel></rss>",
        );
        assert!(!out.contains("DOCTYPE"), "{out}");
        assert!(!out.contains("bang"), "{out}");
        assert!(out.contains("<rss version=\"0.91\">"), "{out}");
        assert!(
            out.contains("<title>a é &amp; &amp;boom; &amp; é \u{fffd} </title>"),
            "{out}"
        );
    }

    #[test]
    fn balances_tags_and_closes_a_truncated_document() {
        let out = repair(
            b"<rss version=\"9\"><channel><item><title>a</b></title><br><x></item><item><title>cut",
        );
        assert_eq!(
            out,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<rss version=\"2.0\"><channel><item><title>a</title><br/><x></x></item><item><title>cut</title></item></channel></rss>"
        );
    }

    #[test]
    fn wraps_html_content_in_cdata() {
        let out = repair(
            b"<feed xmlns=\"http://www.w3.org/2005/Atom\"><entry><content type=\"xhtml\"><p>a<br>]]>b</content><summary></summary></entry></feed>",
        );
        assert!(
            out.contains("<content type=\"html\"><![CDATA[<p>a<br>]]]]><![CDATA[>b]]></content>"),
            "{out}"
        );
        assert!(!out.contains("<summary"), "{out}");
    }

    #[test]
    fn fixes_attributes() {
        let out =
            repair(b"<rss><channel><link href=a&b x=1 x=2 'bad' y='q\"<'>t</link></channel></rss>");
        assert!(
            out.contains("<link href=\"a&amp;b\" x=\"1\" y=\"q&quot;&lt;\">t</link>"),
            "{out}"
        );
    }

    #[test]
    fn many_content_tags_sharing_one_end_tag_stay_linear() {
        // Each <description> is closed by its item's end tag; the one </description> is
        // at the very end, so every look-ahead for it would cross the whole document.
        let mut doc = String::from("<rss><channel>");
        for _ in 0..50_000 {
            doc.push_str("<item><description><![CDATA[x]]></item>");
        }
        doc.push_str("</description></channel></rss>");
        let started = std::time::Instant::now();
        let out = repair(doc.as_bytes());
        assert!(out.ends_with("</rss>"), "{}", &out[out.len() - 40..]);
        // Quadratic look-ahead would take minutes here.
        assert!(started.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn never_panics_on_random_input() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let pieces: &[&[u8]] = &[
            b"<",
            b">",
            b"</",
            b"/>",
            b"<rss>",
            b"<item>",
            b"</item>",
            b"<description>",
            b"</description>",
            b"&",
            b"&#",
            b"x",
            b";",
            b"\"",
            b"'",
            b"=",
            b"<![CDATA[",
            b"]]>",
            b"<!DOCTYPE [",
            b"]",
            b"<?",
            b"?>",
            b"\xff",
            b"\xc3",
            b"\xa9",
            b" ",
            b"<feed ",
            b"xmlns=\"http://purl.org/atom/ns#\"",
            b"<content type='xhtml'>",
            b"</content>",
        ];
        for _ in 0..3000 {
            let mut doc = Vec::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 30) as usize;
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                doc.extend_from_slice(pieces[(x % pieces.len() as u64) as usize]);
            }
            let out = repair(&doc);
            assert!(out.starts_with("<?xml"));
        }
    }
}
