//! HTML mail bodies → readable plain text: a small hand-written, tolerant tokenizer
//! (`html_to_text`) with no dependency, one forward pass, no recursion.
//!
//! What it keeps: the text, with whitespace collapsed as a browser would; line breaks for
//! block elements (a blank line between paragraphs, never more than one); `- ` for list
//! items; links as `text <url>` (just the url when the text is the url, the address for
//! `mailto:`, nothing for `javascript:`); the `alt` text of images; decoded character
//! references. What it drops: `<script>`, `<style>`, `<head>`, `<title>`, `<template>`,
//! comments, declarations and every other tag. The output has no control character but `\n`.

/// The longest character reference looked at (`&` … `;`), so that a stray `&` costs O(1).
const MAX_ENTITY_LEN: usize = 32;
/// Deepest list indentation written (deeper lists are drawn at this depth).
const MAX_LIST_INDENT: usize = 8;

/// Converts an HTML mail body to readable plain text (see the module doc).
///
/// Runs in time linear in `html.len()` whatever the markup, broken or deeply nested.
pub fn html_to_text(html: &str) -> String {
    let mut conv = Converter {
        src: html,
        bytes: html.as_bytes(),
        pos: 0,
        out: Out::default(),
        pre: 0,
        lists: 0,
        link: None,
    };
    conv.run();
    if let Some(link) = conv.link.take() {
        conv.close_link(link);
    }
    conv.out.finish()
}

/// An `<a href>` whose text is being written: its target and where its text starts.
struct OpenLink {
    /// What to show after the text: the url, the mailto address, or nothing.
    target: Option<String>,
    start: usize,
}

struct Converter<'a> {
    src: &'a str,
    bytes: &'a [u8],
    pos: usize,
    out: Out,
    /// Depth of `<pre>` (whitespace kept inside).
    pre: usize,
    /// Depth of `<ul>`/`<ol>` (list items indented by it).
    lists: usize,
    link: Option<OpenLink>,
}

impl Converter<'_> {
    fn run(&mut self) {
        while self.pos < self.bytes.len() {
            let rest = &self.bytes[self.pos..];
            let next = rest
                .iter()
                .position(|&b| b == b'<' || b == b'&')
                .map_or(self.bytes.len(), |i| self.pos + i);
            if next > self.pos {
                // `<` and `&` are ASCII, so both ends are char boundaries.
                let text = &self.src[self.pos..next];
                self.text(text);
                self.pos = next;
                continue;
            }
            match self.bytes[self.pos] {
                b'&' => {
                    let (decoded, len) = decode_entity(&self.src[self.pos..]);
                    self.pos += len;
                    match decoded {
                        Decoded::Char(c) => self.text_char(c),
                        Decoded::Literal => self.text("&"),
                    }
                }
                _ => self.markup(),
            }
        }
    }

    fn text(&mut self, text: &str) {
        for c in text.chars() {
            self.text_char(c);
        }
    }

    fn text_char(&mut self, c: char) {
        if self.pre > 0 {
            match c {
                '\n' => self.out.line_break(),
                '\r' => {}
                '\t' | ' ' => self.out.push_literal(c),
                c if c.is_whitespace() => self.out.push_literal(' '),
                c => self.out.push_char(c),
            }
        } else {
            self.out.push_char(c);
        }
    }

    /// At a `<`: a tag, a comment, a declaration, or a literal `<`.
    fn markup(&mut self) {
        let rest = &self.bytes[self.pos..];
        if rest.starts_with(b"<!--") {
            self.pos = find(self.bytes, self.pos + 4, b"-->").map_or(self.bytes.len(), |i| i + 3);
            return;
        }
        match rest.get(1) {
            Some(b'!' | b'?') => {
                self.pos =
                    find_byte(self.bytes, self.pos + 2, b'>').map_or(self.bytes.len(), |i| i + 1);
                return;
            }
            Some(b'/') if rest.get(2).is_some_and(u8::is_ascii_alphabetic) => {}
            Some(b) if b.is_ascii_alphabetic() => {}
            _ => {
                self.text("<");
                self.pos += 1;
                return;
            }
        }
        let tag = parse_tag(self.src, self.pos);
        self.pos = tag.end;
        self.element(&tag);
    }

    fn element(&mut self, tag: &Tag) {
        let name = tag.name.as_str();
        if !tag.closing && matches!(name, "script" | "style" | "head" | "title" | "template") {
            self.skip_raw(name);
            return;
        }
        match (name, tag.closing) {
            ("br", _) => self.out.line_break(),
            ("p" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "blockquote" | "table", _)
            | ("hr", false) => self.out.paragraph(),
            ("pre", closing) => {
                self.out.paragraph();
                if closing {
                    self.pre = self.pre.saturating_sub(1);
                } else {
                    self.pre += 1;
                }
            }
            ("ul" | "ol", closing) => {
                if closing {
                    self.lists = self.lists.saturating_sub(1);
                } else {
                    self.lists += 1;
                }
                if self.lists == 0 || !closing && self.lists == 1 {
                    self.out.paragraph();
                } else {
                    self.out.block();
                }
            }
            ("li", false) => {
                self.out.block();
                let indent = self.lists.clamp(1, MAX_LIST_INDENT) - 1;
                for _ in 0..indent {
                    self.out.push_literal(' ');
                    self.out.push_literal(' ');
                }
                self.out.push_literal('-');
                self.out.push_literal(' ');
            }
            (
                "div" | "tr" | "li" | "dl" | "dt" | "dd" | "section" | "article" | "header"
                | "footer" | "nav" | "aside" | "main" | "form" | "address" | "figure"
                | "figcaption" | "center" | "caption" | "tbody" | "thead" | "tfoot" | "body"
                | "html",
                _,
            ) => self.out.block(),
            ("td" | "th", _) => self.out.space(),
            ("img", false) => {
                if let Some(alt) = tag.attr("alt") {
                    self.out.space();
                    self.text(&alt);
                    self.out.space();
                }
            }
            ("a", false) => {
                if let Some(link) = self.link.take() {
                    self.close_link(link);
                }
                if let Some(href) = tag.attr("href") {
                    let start = self.out.len();
                    self.link = Some(OpenLink {
                        target: link_target(&href),
                        start,
                    });
                }
            }
            ("a", true) => {
                if let Some(link) = self.link.take() {
                    self.close_link(link);
                }
            }
            _ => {}
        }
    }

    fn close_link(&mut self, link: OpenLink) {
        let Some(target) = link.target else { return };
        let text = self.out.text_since(link.start);
        let text = text.trim();
        if text.is_empty() {
            self.out.push_str(&target);
        } else if !same_target(text, &target) {
            self.out.space();
            self.out.push_char('<');
            self.out.push_str(&target);
            self.out.push_char('>');
        }
    }

    /// Skips the content of a raw-text element up to its end tag (or, for `<head>`, up to
    /// `<body` when `</head>` is missing). Without either, everything left is skipped.
    fn skip_raw(&mut self, name: &str) {
        let name = name.as_bytes();
        let mut i = self.pos;
        while let Some(lt) = find_byte(self.bytes, i, b'<') {
            let after = &self.bytes[lt + 1..];
            let closes = after.first() == Some(&b'/') && starts_with_ci(&after[1..], name);
            let body = !closes && name == b"head" && starts_with_ci(after, b"body");
            if closes || body {
                let name_end = if closes {
                    lt + 2 + name.len()
                } else {
                    lt + 1 + b"body".len()
                };
                let whole_name = self
                    .bytes
                    .get(name_end)
                    .is_none_or(|b| !b.is_ascii_alphanumeric());
                if whole_name {
                    self.pos = if closes {
                        find_byte(self.bytes, name_end, b'>').map_or(self.bytes.len(), |j| j + 1)
                    } else {
                        lt
                    };
                    return;
                }
            }
            i = lt + 1;
        }
        self.pos = self.bytes.len();
    }
}

/// What to show for a link target; `None` when nothing should be.
fn link_target(href: &str) -> Option<String> {
    // Browsers drop ASCII whitespace and controls inside urls.
    let href: String = href
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    if href.is_empty() || href.starts_with('#') {
        return None;
    }
    let lower = href.to_ascii_lowercase();
    if lower.starts_with("javascript:")
        || lower.starts_with("data:")
        || lower.starts_with("vbscript:")
    {
        return None;
    }
    if lower.starts_with("mailto:") {
        let addr = &href["mailto:".len()..];
        let addr = addr.split('?').next().unwrap_or_default();
        return (!addr.is_empty()).then(|| addr.to_owned());
    }
    Some(href)
}

/// Whether a link's text already says where it goes.
fn same_target(text: &str, target: &str) -> bool {
    fn bare(s: &str) -> &str {
        let s = ["https://", "http://", "mailto:"]
            .into_iter()
            .find_map(|p| {
                s.get(..p.len())
                    .filter(|head| head.eq_ignore_ascii_case(p))
                    .map(|_| &s[p.len()..])
            })
            .unwrap_or(s);
        s.trim_end_matches('/')
    }
    text == target || bare(text).eq_ignore_ascii_case(bare(target))
}

/// The text being built: whitespace collapsed, at most one blank line in a row.
#[derive(Default)]
struct Out {
    s: String,
    /// A space is due before the next visible character (unless a line starts).
    space: bool,
}

impl Out {
    fn len(&self) -> usize {
        self.s.len()
    }

    fn text_since(&self, start: usize) -> &str {
        self.s.get(start..).unwrap_or_default()
    }

    fn trailing_newlines(&self) -> usize {
        self.s.bytes().rev().take_while(|&b| b == b'\n').count()
    }

    fn at_line_start(&self) -> bool {
        self.s.is_empty() || self.s.ends_with('\n')
    }

    /// A character of text: whitespace collapses, controls are dropped.
    fn push_char(&mut self, c: char) {
        if c.is_whitespace() {
            self.space = true;
            return;
        }
        if c.is_control() || c == '\u{feff}' {
            return;
        }
        if self.space && !self.at_line_start() && !self.s.ends_with(' ') {
            self.s.push(' ');
        }
        self.space = false;
        self.s.push(c);
    }

    fn push_str(&mut self, s: &str) {
        for c in s.chars() {
            self.push_char(c);
        }
    }

    /// A character written as is (list bullets, `<pre>` spaces).
    fn push_literal(&mut self, c: char) {
        if self.space && !self.at_line_start() && !self.s.ends_with(' ') {
            self.s.push(' ');
        }
        self.space = false;
        self.s.push(c);
    }

    fn space(&mut self) {
        self.space = true;
    }

    fn trim_line_end(&mut self) {
        let kept = self.s.trim_end_matches([' ', '\t']).len();
        self.s.truncate(kept);
        self.space = false;
    }

    /// `<br>`: always ends the line (a second one in a row makes a blank line).
    fn line_break(&mut self) {
        self.trim_line_end();
        if !self.s.is_empty() && self.trailing_newlines() < 2 {
            self.s.push('\n');
        }
    }

    /// A block boundary: the next text starts a line.
    fn block(&mut self) {
        self.newlines(1);
    }

    /// A paragraph boundary: the next text starts after a blank line.
    fn paragraph(&mut self) {
        self.newlines(2);
    }

    fn newlines(&mut self, n: usize) {
        self.trim_line_end();
        if self.s.is_empty() {
            return;
        }
        for _ in self.trailing_newlines()..n {
            self.s.push('\n');
        }
    }

    fn finish(mut self) -> String {
        self.trim_line_end();
        let kept = self.s.trim_end().len();
        self.s.truncate(kept);
        let start = self.s.len() - self.s.trim_start().len();
        self.s.split_off(start)
    }
}

/// A start or end tag, with the attributes the converter uses.
struct Tag {
    name: String,
    closing: bool,
    attrs: Vec<(String, String)>,
    /// Just past the `>` (or the end of input).
    end: usize,
}

impl Tag {
    fn attr(&self, name: &str) -> Option<String> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| decode_entities(v))
    }
}

/// Parses the tag starting at `src[start] == '<'`; tolerant of anything.
fn parse_tag(src: &str, start: usize) -> Tag {
    let b = src.as_bytes();
    let mut i = start + 1;
    let closing = b.get(i) == Some(&b'/');
    if closing {
        i += 1;
    }
    let name_start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b':' | b'_')) {
        i += 1;
    }
    let name = src[name_start..i].to_ascii_lowercase();
    let keep_attrs = !closing && (name == "a" || name == "img");
    let mut attrs = Vec::new();
    loop {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        match b.get(i) {
            None => break,
            Some(b'>') => {
                i += 1;
                break;
            }
            Some(_) => {}
        }
        let an_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'>' | b'=' | b'/') {
            i += 1;
        }
        // A lone `/` or `=` in an odd place: step over it so the loop always advances.
        if i == an_start {
            i += 1;
            continue;
        }
        let attr_name = &src[an_start..i];
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        let mut value = "";
        if b.get(i) == Some(&b'=') {
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            match b.get(i) {
                Some(&q @ (b'"' | b'\'')) => {
                    let v_start = i + 1;
                    let v_end = find_byte(b, v_start, q).unwrap_or(b.len());
                    value = &src[v_start..v_end];
                    i = (v_end + 1).min(b.len());
                }
                _ => {
                    let v_start = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                        i += 1;
                    }
                    value = &src[v_start..i];
                }
            }
        }
        if keep_attrs {
            attrs.push((attr_name.to_ascii_lowercase(), value.to_owned()));
        }
    }
    Tag {
        name,
        closing,
        attrs,
        end: i,
    }
}

enum Decoded {
    Char(char),
    /// Not a reference we know: the `&` is text.
    Literal,
}

/// Decodes the character reference at the start of `s` (which starts with `&`); returns
/// what it stands for and how many bytes it takes (1 for a literal `&`).
fn decode_entity(s: &str) -> (Decoded, usize) {
    let b = s.as_bytes();
    let window = &b[..b.len().min(MAX_ENTITY_LEN)];
    let Some(semi) = window.iter().position(|&c| c == b';') else {
        return (Decoded::Literal, 1);
    };
    let body = &s[1..semi];
    let c = if let Some(num) = body.strip_prefix('#') {
        let (digits, radix) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16),
            None => (num, 10),
        };
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            None
        } else {
            // Zero, surrogates and numbers past U+10FFFF (or past u32) stand for U+FFFD.
            Some(
                u32::from_str_radix(digits, radix)
                    .ok()
                    .filter(|&code| code != 0)
                    .and_then(char::from_u32)
                    .unwrap_or('\u{fffd}'),
            )
        }
    } else {
        named_entity(body)
    };
    match c {
        Some(c) => (Decoded::Char(c), semi + 1),
        None => (Decoded::Literal, 1),
    }
}

fn named_entity(name: &str) -> Option<char> {
    Some(match name {
        "amp" | "AMP" => '&',
        "lt" | "LT" => '<',
        "gt" | "GT" => '>',
        "quot" | "QUOT" => '"',
        "apos" => '\'',
        "nbsp" => ' ',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "laquo" => '«',
        "raquo" => '»',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "deg" => '°',
        "times" => '×',
        "shy" | "zwnj" | "zwj" => '\u{200b}',
        _ => return None,
    })
}

/// Decodes every character reference in an attribute value.
fn decode_entities(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while let Some(off) = s[i..].find('&') {
        out.push_str(&s[i..i + off]);
        i += off;
        let (decoded, len) = decode_entity(&s[i..]);
        match decoded {
            Decoded::Char(c) => out.push(c),
            Decoded::Literal => out.push('&'),
        }
        i += len;
    }
    out.push_str(&s[i..]);
    out
}

fn find_byte(b: &[u8], from: usize, needle: u8) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&c| c == needle)
        .map(|i| from + i)
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| from + i)
}

fn starts_with_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.len() >= needle.len() && hay[..needle.len()].eq_ignore_ascii_case(needle)
}

#[cfg(test)]
mod tests {
    use super::html_to_text;

    #[test]
    fn paragraphs_and_whitespace() {
        let html = "<html><head><title>T</title><style>p { color: red }</style></head>\
            <body><p>Hello,\n   world!</p><p>Second   para</p><div>a</div><div>b</div></body></html>";
        assert_eq!(html_to_text(html), "Hello, world!\n\nSecond para\n\na\nb");
    }

    #[test]
    fn blank_lines_collapse() {
        let html = "one<br><br><br><br>two<p></p><p></p><p>three</p>";
        assert_eq!(html_to_text(html), "one\n\ntwo\n\nthree");
        assert_eq!(html_to_text("a<br>b"), "a\nb");
    }

    #[test]
    fn script_style_comments_skipped() {
        let html = "a<script>var x = '<p>no</p>';</script>b<!-- <p>hidden</p> -->c\
            <STYLE type=text/css>.x{}</STYLE>d<!DOCTYPE html>e";
        assert_eq!(html_to_text(html), "abcde");
        assert_eq!(html_to_text("x<script>never closed <b>"), "x");
        assert_eq!(html_to_text("x<!-- never closed"), "x");
    }

    #[test]
    fn head_without_end_tag() {
        let html = "<html><head><meta charset=utf-8><title>t</title><body><p>Body text</p>";
        assert_eq!(html_to_text(html), "Body text");
    }

    #[test]
    fn lists() {
        let html =
            "<p>Items:</p><ul><li>one</li><li>two<ul><li>two.a</li></ul></li></ul><p>after</p>";
        assert_eq!(
            html_to_text(html),
            "Items:\n\n- one\n- two\n  - two.a\n\nafter"
        );
    }

    #[test]
    fn links() {
        assert_eq!(
            html_to_text(r#"See <a href="https://example.org/x?a=1&amp;b=2">the docs</a>."#),
            "See the docs <https://example.org/x?a=1&b=2>."
        );
        assert_eq!(
            html_to_text(r#"<a href="https://example.org/">https://example.org/</a>"#),
            "https://example.org/"
        );
        assert_eq!(
            html_to_text(r#"<a href="https://example.org/">example.org</a>"#),
            "example.org"
        );
        assert_eq!(
            html_to_text(r#"Mail <a href="mailto:bob@example.org?subject=hi">Bob</a>"#),
            "Mail Bob <bob@example.org>"
        );
        assert_eq!(
            html_to_text(r#"<a href='mailto:bob@example.org'>bob@example.org</a>"#),
            "bob@example.org"
        );
        assert_eq!(
            html_to_text(r#"<a href="javascript:alert(1)">click</a>"#),
            "click"
        );
        assert_eq!(html_to_text(r##"<a href="#top">top</a>"##), "top");
        assert_eq!(
            html_to_text(r#"<a href="https://e.org/i"><img src=x></a>"#),
            "https://e.org/i"
        );
        assert_eq!(html_to_text(r#"<a name=x>anchor</a>"#), "anchor");
        // An unclosed link still shows its target.
        assert_eq!(
            html_to_text(r#"<a href=https://e.org>text"#),
            "text <https://e.org>"
        );
    }

    #[test]
    fn images_and_tables() {
        assert_eq!(
            html_to_text(r#"Logo: <img src="l.png" alt="ACME &amp; Co">!"#),
            "Logo: ACME & Co !"
        );
        let html = "<table><tr><td>a</td><td>b</td></tr><tr><th>c</th><td>d</td></tr></table>after";
        assert_eq!(html_to_text(html), "a b\nc d\n\nafter");
    }

    #[test]
    fn entities() {
        assert_eq!(
            html_to_text("a &amp; b &lt;c&gt; &quot;d&quot; &apos;e&apos;"),
            "a & b <c> \"d\" 'e'"
        );
        assert_eq!(
            html_to_text("x&nbsp;y &#65;&#x42;&#X43; &#128512;"),
            "x y ABC 😀"
        );
        assert_eq!(
            html_to_text("&unknown; &amp &#xZZ; AT&T"),
            "&unknown; &amp &#xZZ; AT&T"
        );
        assert_eq!(
            html_to_text("&#0;&#xD800;&#99999999999;"),
            "\u{fffd}\u{fffd}\u{fffd}"
        );
        assert_eq!(html_to_text("tab&#9;and&#10;newline"), "tab and newline");
    }

    #[test]
    fn pre_keeps_whitespace() {
        let html = "<p>code:</p><pre>fn main() {\n    x();\n}</pre><p>end</p>";
        assert_eq!(
            html_to_text(html),
            "code:\n\nfn main() {\n    x();\n}\n\nend"
        );
    }

    #[test]
    fn broken_markup() {
        assert_eq!(html_to_text("a < b and c<3"), "a < b and c<3");
        assert_eq!(html_to_text("<p class=\"x>y\">text</p>"), "text");
        assert_eq!(html_to_text("<p unterminated=\"forever"), "");
        assert_eq!(html_to_text("text <b"), "text");
        assert_eq!(html_to_text("</>"), "</>");
        assert_eq!(html_to_text("<"), "<");
        assert_eq!(html_to_text("&"), "&");
        assert_eq!(html_to_text(""), "");
        assert_eq!(html_to_text("<o:p>x</o:p> <v:shape/>y"), "x y");
        assert_eq!(html_to_text("<p a=1 / = b>x"), "x");
    }

    #[test]
    fn no_controls_in_output() {
        let out = html_to_text("a\u{0}b\u{7}c\r\nd\u{1b}[31me");
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert_eq!(out, "abc d[31me");
    }

    #[test]
    fn deep_nesting_is_linear() {
        let n = 200_000;
        let mut html = String::new();
        for _ in 0..n {
            html.push_str("<div><ul><li><a href=x>");
        }
        html.push_str("deep");
        let start = std::time::Instant::now();
        let out = html_to_text(&html);
        assert!(out.contains("deep"));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));

        let stray = "&".repeat(100_000) + &"<!".repeat(100_000) + &"<a".repeat(100_000);
        let start = std::time::Instant::now();
        let _ = html_to_text(&stray);
        let _ = html_to_text(&"<script>".repeat(100_000));
        let _ = html_to_text(&"<head><".repeat(100_000));
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }
}
