//! Lean HTML → readable plain text, for feed summaries (and later mail bodies).
//!
//! One pass over the bytes, no DOM, no regex: tags are stripped, `<script>`, `<style>`,
//! `<head>` and the like are dropped with their content, entities are decoded (every
//! numeric one and the common named ones), block elements become line breaks, list items
//! get a bullet, links keep their target as `text (https://url)`, runs of whitespace
//! collapse and the result is cut at a character budget with "…". Scanning stops as soon
//! as the budget is spent, so a long article costs no more than its first few hundred
//! characters. Broken HTML is read as well as it can be; nothing here panics.

use url::Url;

/// The ellipsis appended to a text that was cut.
pub const ELLIPSIS: char = '…';

/// HTML → plain text of at most `max_chars` characters (the "…" included).
pub fn to_text(html: &str, max_chars: usize) -> String {
    to_text_with_base(html, max_chars, None)
}

/// Like [`to_text`], resolving relative link targets against the URL `base` (links that
/// stay relative, or are not http(s)/mailto, are not shown). `base` is only parsed when a
/// relative link needs it.
pub fn to_text_with_base(html: &str, max_chars: usize, base: Option<&str>) -> String {
    if max_chars == 0 {
        return String::new();
    }
    let mut base = Base::Unparsed(base);
    let mut w = Writer::new(max_chars, html.len());
    let b = html.as_bytes();
    let mut i = 0;
    // The open link: where its text starts in the output, and its target.
    let mut link: Option<(usize, Option<String>)> = None;
    while i < b.len() && !w.full() {
        let c = b[i];
        match c {
            b'<' => i = tag(html, i, &mut w, &mut link, &mut base),
            b'&' => {
                let (decoded, next) = entity(b, i);
                match decoded {
                    Some(ch) => w.push_char(ch),
                    None => w.push_str("&"),
                }
                i = next;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0c' => {
                w.space();
                i += 1;
            }
            0..=0x1f | 0x7f => i += 1, // control characters have no place in a message
            0xc2 if matches!(b.get(i + 1), Some(0x80..=0xa0)) => {
                // U+0080-U+009F (C1 controls) are dropped, U+00A0 (no-break space) is a
                // space.
                if b[i + 1] == 0xa0 {
                    w.space();
                }
                i += 2;
            }
            _ => {
                // A run of ordinary text: everything up to the next special byte. Runs
                // end before ASCII bytes or a lead byte, so the slices are on char
                // boundaries.
                let start = i;
                i += 1;
                while i < b.len() && !matches!(b[i], b'<' | b'&' | 0..=0x20 | 0x7f | 0xc2) {
                    i += 1;
                }
                w.push_run(&html[start..i]);
            }
        }
    }
    w.finish()
}

/// Collapses runs of whitespace (and drops control characters) in plain text, and cuts
/// it at `max_chars` with "…" — [`to_text`] for text that is not HTML.
pub fn collapse_text(text: &str, max_chars: usize) -> String {
    if max_chars == 0 {
        return String::new();
    }
    let mut w = Writer::new(max_chars, text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() && !w.full() {
        match b[i] {
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => {
                w.space();
                i += 1;
            }
            0..=0x1f | 0x7f => i += 1,
            0xc2 if matches!(b.get(i + 1), Some(0x80..=0xa0)) => {
                if b[i + 1] == 0xa0 {
                    w.space();
                }
                i += 2;
            }
            _ => {
                let start = i;
                i += 1;
                while i < b.len() && !matches!(b[i], 0..=0x20 | 0x7f | 0xc2) {
                    i += 1;
                }
                w.push_run(&text[start..i]);
            }
        }
    }
    w.finish()
}

/// Builds the output: pending whitespace is only written once text follows it, so the
/// result is trimmed and collapsed as it is written.
struct Writer {
    out: String,
    chars: usize,
    max: usize,
    /// Newlines owed before the next text (0, 1 or 2).
    newlines: u8,
    /// A space owed before the next text.
    space: bool,
    /// Whether text was cut because the budget ran out.
    cut: bool,
}

impl Writer {
    fn new(max: usize, input_len: usize) -> Writer {
        Writer {
            out: String::with_capacity(input_len.min(max.saturating_mul(2)).min(4096) + 8),
            chars: 0,
            max,
            newlines: 0,
            space: false,
            cut: false,
        }
    }

    fn full(&self) -> bool {
        self.cut
    }

    fn space(&mut self) {
        self.space = true;
    }

    /// Owes `n` line breaks before the next text (a paragraph is 2).
    fn block(&mut self, n: u8) {
        self.newlines = self.newlines.max(n);
    }

    /// A `<br>`: one more line break, at most one blank line.
    fn line_break(&mut self) {
        self.newlines = (self.newlines + 1).min(2);
    }

    fn flush(&mut self) {
        if self.out.is_empty() {
            self.newlines = 0;
            self.space = false;
            return;
        }
        if self.newlines > 0 {
            let trimmed = self.out.trim_end_matches(' ').len();
            self.out.truncate(trimmed);
            let have = self.out.len() - self.out.trim_end_matches('\n').len();
            for _ in have..usize::from(self.newlines) {
                self.out.push('\n');
                self.chars += 1;
            }
        } else if self.space && !self.out.ends_with([' ', '\n']) {
            self.out.push(' ');
            self.chars += 1;
        }
        self.newlines = 0;
        self.space = false;
    }

    fn push_run(&mut self, s: &str) {
        if s.is_empty() || self.cut {
            return;
        }
        self.flush();
        self.out.push_str(s);
        self.chars += s.bytes().filter(|b| (b & 0xC0) != 0x80).count();
        if self.chars > self.max {
            self.cut = true;
        }
    }

    fn push_str(&mut self, s: &str) {
        self.push_run(s);
    }

    fn push_char(&mut self, c: char) {
        match c {
            ' ' | '\t' | '\n' | '\r' | '\x0c' | '\u{a0}' | '\u{2028}' | '\u{2029}' => self.space(),
            c if c.is_control() => {}
            c => {
                let mut buf = [0u8; 4];
                self.push_run(c.encode_utf8(&mut buf));
            }
        }
    }

    /// The output so far, for comparing a link's text with its target.
    fn since(&self, start: usize) -> &str {
        self.out.get(start..).unwrap_or_default()
    }

    fn finish(mut self) -> String {
        if self.chars > self.max {
            // Keep max - 1 characters and the ellipsis; prefer to end at a word break.
            let keep = self.max.saturating_sub(1);
            let end = self
                .out
                .char_indices()
                .nth(keep)
                .map_or(self.out.len(), |(i, _)| i);
            self.out.truncate(end);
            let floor = self
                .out
                .char_indices()
                .nth(keep.saturating_sub(keep / 8 + 1))
                .map_or(0, |(i, _)| i);
            if let Some(pos) = self.out[floor..].rfind([' ', '\n'])
                && floor + pos > 0
            {
                self.out.truncate(floor + pos);
            }
            let trimmed = self.out.trim_end().len();
            self.out.truncate(trimmed);
            self.out.push(ELLIPSIS);
            return self.out;
        }
        let trimmed = self.out.trim_end().len();
        self.out.truncate(trimmed);
        self.out
    }
}

/// Decodes the entity reference at `b[i] == b'&'`; returns what it is and where the text
/// goes on. An unknown or broken reference is a literal `&` (`None`).
fn entity(b: &[u8], i: usize) -> (Option<char>, usize) {
    let rest = &b[i + 1..];
    if rest.first() == Some(&b'#') {
        let (hex, digits_at) = match rest.get(1) {
            Some(b'x' | b'X') => (true, 2),
            _ => (false, 1),
        };
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
        if n == 0 {
            return (None, i + 1);
        }
        let mut end = i + 1 + digits_at + n;
        if b.get(end) == Some(&b';') {
            end += 1;
        }
        return (Some(numeric_char(value)), end);
    }
    let mut n = 0;
    while n < rest.len() && n < 32 && rest[n].is_ascii_alphanumeric() {
        n += 1;
    }
    if n == 0 {
        return (None, i + 1);
    }
    let name = &rest[..n];
    if rest.get(n) == Some(&b';') {
        if let Some(d) = named_entity(name) {
            return (Some(d), i + n + 2);
        }
    } else if matches!(name, b"amp" | b"lt" | b"gt" | b"quot" | b"nbsp") {
        // The legacy forms without a semicolon that browsers still accept.
        if let Some(d) = named_entity(name) {
            return (Some(d), i + n + 1);
        }
    }
    (None, i + 1)
}

/// The character of a numeric reference, as browsers read it: C1 codes are windows-1252,
/// and what is not a character becomes U+FFFD.
pub(crate) fn numeric_char(value: u32) -> char {
    if (0x80..=0x9f).contains(&value) {
        const CP1252: [char; 32] = [
            '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
            '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ',
            '\u{9d}', 'ž', 'Ÿ',
        ];
        return CP1252[(value - 0x80) as usize];
    }
    match char::from_u32(value) {
        Some('\0') | None => '\u{fffd}',
        Some(c) => c,
    }
}

/// The common HTML named entities (the Latin-1 set, typography, arrows, math and Greek
/// letters that show up in feeds).
pub(crate) fn named_entity(name: &[u8]) -> Option<char> {
    let c = match name {
        b"amp" | b"AMP" => '&',
        b"lt" | b"LT" => '<',
        b"gt" | b"GT" => '>',
        b"quot" | b"QUOT" => '"',
        b"apos" => '\'',
        b"nbsp" => '\u{a0}',
        b"ensp" => '\u{2002}',
        b"emsp" => '\u{2003}',
        b"thinsp" => '\u{2009}',
        b"zwnj" => '\u{200c}',
        b"zwj" => '\u{200d}',
        b"lrm" => '\u{200e}',
        b"rlm" => '\u{200f}',
        b"shy" => '\u{ad}',
        b"hellip" => '…',
        b"mdash" => '—',
        b"ndash" => '–',
        b"lsquo" => '‘',
        b"rsquo" => '’',
        b"sbquo" => '‚',
        b"ldquo" => '“',
        b"rdquo" => '”',
        b"bdquo" => '„',
        b"laquo" => '«',
        b"raquo" => '»',
        b"lsaquo" => '‹',
        b"rsaquo" => '›',
        b"bull" => '•',
        b"middot" => '·',
        b"prime" => '′',
        b"Prime" => '″',
        b"dagger" => '†',
        b"Dagger" => '‡',
        b"permil" => '‰',
        b"trade" => '™',
        b"copy" => '©',
        b"reg" => '®',
        b"deg" => '°',
        b"plusmn" => '±',
        b"times" => '×',
        b"divide" => '÷',
        b"minus" => '−',
        b"frac14" => '¼',
        b"frac12" => '½',
        b"frac34" => '¾',
        b"sup1" => '¹',
        b"sup2" => '²',
        b"sup3" => '³',
        b"micro" => 'µ',
        b"para" => '¶',
        b"sect" => '§',
        b"cent" => '¢',
        b"pound" => '£',
        b"yen" => '¥',
        b"euro" => '€',
        b"curren" => '¤',
        b"brvbar" => '¦',
        b"uml" => '¨',
        b"ordf" => 'ª',
        b"ordm" => 'º',
        b"not" => '¬',
        b"macr" => '¯',
        b"acute" => '´',
        b"cedil" => '¸',
        b"iexcl" => '¡',
        b"iquest" => '¿',
        b"circ" => 'ˆ',
        b"tilde" => '˜',
        b"larr" => '←',
        b"rarr" => '→',
        b"uarr" => '↑',
        b"darr" => '↓',
        b"harr" => '↔',
        b"lArr" => '⇐',
        b"rArr" => '⇒',
        b"hArr" => '⇔',
        b"le" => '≤',
        b"ge" => '≥',
        b"ne" => '≠',
        b"asymp" => '≈',
        b"equiv" => '≡',
        b"infin" => '∞',
        b"sum" => '∑',
        b"prod" => '∏',
        b"radic" => '√',
        b"part" => '∂',
        b"int" => '∫',
        b"loz" => '◊',
        b"spades" => '♠',
        b"clubs" => '♣',
        b"hearts" => '♥',
        b"diams" => '♦',
        b"fnof" => 'ƒ',
        b"oline" => '‾',
        b"frasl" => '⁄',
        b"Agrave" => 'À',
        b"Aacute" => 'Á',
        b"Acirc" => 'Â',
        b"Atilde" => 'Ã',
        b"Auml" => 'Ä',
        b"Aring" => 'Å',
        b"AElig" => 'Æ',
        b"Ccedil" => 'Ç',
        b"Egrave" => 'È',
        b"Eacute" => 'É',
        b"Ecirc" => 'Ê',
        b"Euml" => 'Ë',
        b"Igrave" => 'Ì',
        b"Iacute" => 'Í',
        b"Icirc" => 'Î',
        b"Iuml" => 'Ï',
        b"ETH" => 'Ð',
        b"Ntilde" => 'Ñ',
        b"Ograve" => 'Ò',
        b"Oacute" => 'Ó',
        b"Ocirc" => 'Ô',
        b"Otilde" => 'Õ',
        b"Ouml" => 'Ö',
        b"Oslash" => 'Ø',
        b"Ugrave" => 'Ù',
        b"Uacute" => 'Ú',
        b"Ucirc" => 'Û',
        b"Uuml" => 'Ü',
        b"Yacute" => 'Ý',
        b"THORN" => 'Þ',
        b"szlig" => 'ß',
        b"agrave" => 'à',
        b"aacute" => 'á',
        b"acirc" => 'â',
        b"atilde" => 'ã',
        b"auml" => 'ä',
        b"aring" => 'å',
        b"aelig" => 'æ',
        b"ccedil" => 'ç',
        b"egrave" => 'è',
        b"eacute" => 'é',
        b"ecirc" => 'ê',
        b"euml" => 'ë',
        b"igrave" => 'ì',
        b"iacute" => 'í',
        b"icirc" => 'î',
        b"iuml" => 'ï',
        b"eth" => 'ð',
        b"ntilde" => 'ñ',
        b"ograve" => 'ò',
        b"oacute" => 'ó',
        b"ocirc" => 'ô',
        b"otilde" => 'õ',
        b"ouml" => 'ö',
        b"oslash" => 'ø',
        b"ugrave" => 'ù',
        b"uacute" => 'ú',
        b"ucirc" => 'û',
        b"uuml" => 'ü',
        b"yacute" => 'ý',
        b"thorn" => 'þ',
        b"yuml" => 'ÿ',
        b"Yuml" => 'Ÿ',
        b"OElig" => 'Œ',
        b"oelig" => 'œ',
        b"Scaron" => 'Š',
        b"scaron" => 'š',
        b"Alpha" => 'Α',
        b"Beta" => 'Β',
        b"Gamma" => 'Γ',
        b"Delta" => 'Δ',
        b"Theta" => 'Θ',
        b"Lambda" => 'Λ',
        b"Pi" => 'Π',
        b"Sigma" => 'Σ',
        b"Phi" => 'Φ',
        b"Psi" => 'Ψ',
        b"Omega" => 'Ω',
        b"alpha" => 'α',
        b"beta" => 'β',
        b"gamma" => 'γ',
        b"delta" => 'δ',
        b"epsilon" => 'ε',
        b"zeta" => 'ζ',
        b"eta" => 'η',
        b"theta" => 'θ',
        b"iota" => 'ι',
        b"kappa" => 'κ',
        b"lambda" => 'λ',
        b"mu" => 'μ',
        b"nu" => 'ν',
        b"xi" => 'ξ',
        b"omicron" => 'ο',
        b"pi" => 'π',
        b"rho" => 'ρ',
        b"sigma" => 'σ',
        b"sigmaf" => 'ς',
        b"tau" => 'τ',
        b"upsilon" => 'υ',
        b"phi" => 'φ',
        b"chi" => 'χ',
        b"psi" => 'ψ',
        b"omega" => 'ω',
        b"NewLine" => '\n',
        b"Tab" => '\t',
        _ => return None,
    };
    Some(c)
}

/// How a tag affects the text.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Dropped with its content (`script`, `style`, …).
    Skip,
    /// A line break before and after (`div`, `li`, `tr`, …).
    Line,
    /// A blank line before and after (`p`, `h1`, `blockquote`, …).
    Paragraph,
    /// `<br>`.
    Break,
    /// A table cell: a space between cells.
    Cell,
    /// `<li>`: a line break and a bullet.
    Item,
    /// `<a>`.
    Anchor,
    /// Anything else: no effect on the text.
    Inline,
}

fn kind(name: &[u8]) -> Kind {
    match name {
        b"script" | b"style" | b"head" | b"noscript" | b"template" | b"svg" | b"iframe"
        | b"object" | b"select" | b"textarea" | b"title" => Kind::Skip,
        b"p" | b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" | b"blockquote" | b"pre" | b"ul"
        | b"ol" | b"dl" | b"table" | b"hr" | b"figure" | b"address" => Kind::Paragraph,
        b"div" | b"tr" | b"dt" | b"dd" | b"section" | b"article" | b"header" | b"footer"
        | b"nav" | b"aside" | b"main" | b"figcaption" | b"caption" | b"form" | b"fieldset"
        | b"center" | b"thead" | b"tbody" | b"tfoot" | b"details" | b"summary" => Kind::Line,
        b"br" => Kind::Break,
        b"td" | b"th" => Kind::Cell,
        b"li" => Kind::Item,
        b"a" => Kind::Anchor,
        _ => Kind::Inline,
    }
}

/// Handles the markup at `b[i] == b'<'`; returns where the text goes on.
fn tag(
    html: &str,
    i: usize,
    w: &mut Writer,
    link: &mut Option<(usize, Option<String>)>,
    base: &mut Base<'_>,
) -> usize {
    let b = html.as_bytes();
    let next = b.get(i + 1).copied().unwrap_or(0);
    if next == b'!' {
        if b[i..].starts_with(b"<!--") {
            return find(b, i + 4, b"-->").map_or(b.len(), |p| p + 3);
        }
        if b[i..].starts_with(b"<![CDATA[") {
            // CDATA in HTML (double-wrapped feed content): its text is text.
            let start = i + 9;
            let end = find(b, start, b"]]>").unwrap_or(b.len());
            plain(w, &html[start..end]);
            return (end + 3).min(b.len());
        }
        return skip_to_gt(b, i + 2);
    }
    if next == b'?' {
        return skip_to_gt(b, i + 2);
    }
    let closing = next == b'/';
    let name_at = if closing { i + 2 } else { i + 1 };
    if !b.get(name_at).is_some_and(u8::is_ascii_alphabetic) {
        // Not a tag: a literal "<" (or "</" followed by junk, which browsers drop).
        if closing {
            return skip_to_gt(b, name_at);
        }
        w.push_str("<");
        return i + 1;
    }
    let mut name_end = name_at;
    while name_end < b.len()
        && (b[name_end].is_ascii_alphanumeric() || matches!(b[name_end], b'-' | b':' | b'_'))
    {
        name_end += 1;
    }
    // Lowercased name without any namespace prefix, in a small buffer.
    let raw = &b[name_at..name_end];
    let local = match raw.iter().rposition(|&c| c == b':') {
        Some(p) => &raw[p + 1..],
        None => raw,
    };
    let mut buf = [0u8; 12];
    let name: &[u8] = if local.len() <= buf.len() {
        for (d, s) in buf.iter_mut().zip(local) {
            *d = s.to_ascii_lowercase();
        }
        &buf[..local.len()]
    } else {
        b""
    };
    let k = kind(name);
    // The end of the tag, minding quoted attribute values.
    let (attrs_end, after) = tag_end(b, name_end);
    if closing {
        match k {
            Kind::Line | Kind::Item => w.block(1),
            Kind::Paragraph => w.block(2),
            Kind::Cell => w.space(),
            Kind::Anchor => close_link(w, link),
            _ => {}
        }
        return after;
    }
    let self_closing = attrs_end > name_end && b[attrs_end - 1] == b'/';
    match k {
        Kind::Skip => {
            if self_closing {
                return after;
            }
            return skip_element(b, after, name);
        }
        Kind::Line => w.block(1),
        Kind::Paragraph => w.block(2),
        Kind::Break => w.line_break(),
        Kind::Cell => w.space(),
        Kind::Item => {
            w.block(1);
            w.push_str("• ");
            w.space = false;
        }
        Kind::Anchor => {
            close_link(w, link);
            let href = attr(&html[name_end..attrs_end], "href").and_then(|h| absolute(&h, base));
            w.flush_space_only();
            *link = Some((w.out.len(), href));
        }
        Kind::Inline => {}
    }
    after
}

impl Writer {
    /// Writes an owed space now (so a link's text starts after it).
    fn flush_space_only(&mut self) {
        if self.newlines == 0 && self.space && !self.out.is_empty() && !self.cut {
            self.flush();
        }
    }
}

/// Writes text that is not HTML (CDATA inside HTML): only whitespace is special.
fn plain(w: &mut Writer, text: &str) {
    for c in text.chars() {
        if w.full() {
            break;
        }
        w.push_char(c);
    }
}

/// Ends the open link: shows its target after its text when they differ.
fn close_link(w: &mut Writer, link: &mut Option<(usize, Option<String>)>) {
    let Some((start, href)) = link.take() else {
        return;
    };
    let Some(href) = href else {
        return;
    };
    let text = w.since(start).trim();
    if text.is_empty() || same_target(text, &href) {
        return;
    }
    w.space();
    let mut shown = String::with_capacity(href.len() + 2);
    shown.push('(');
    shown.push_str(&href);
    shown.push(')');
    w.push_run(&shown);
}

/// Whether a link's text already says where it goes.
fn same_target(text: &str, href: &str) -> bool {
    fn norm(s: &str) -> &str {
        let s = s.trim();
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .or_else(|| s.strip_prefix("mailto:"))
            .unwrap_or(s);
        let s = s.strip_prefix("www.").unwrap_or(s);
        s.trim_end_matches('/')
    }
    let (t, h) = (norm(text), norm(href));
    t.eq_ignore_ascii_case(h) || (t.ends_with('…') && h.starts_with(t.trim_end_matches('…')))
}

/// The base URL for relative links, parsed on first use.
enum Base<'a> {
    Unparsed(Option<&'a str>),
    Parsed(Option<Url>),
}

impl Base<'_> {
    fn get(&mut self) -> Option<&Url> {
        if let Base::Unparsed(raw) = *self {
            *self = Base::Parsed(raw.and_then(|r| Url::parse(r).ok()));
        }
        match self {
            Base::Parsed(u) => u.as_ref(),
            Base::Unparsed(_) => None,
        }
    }
}

/// A link target worth showing: absolute http(s) or mailto, else resolved against `base`.
fn absolute(href: &str, base: &mut Base<'_>) -> Option<String> {
    let href = href.trim();
    if href.is_empty() || href.starts_with('#') {
        return None;
    }
    let lower = href.get(..8).unwrap_or(href).to_ascii_lowercase();
    let plain = href.bytes().all(|b| b > b' ' && b != 0x7f);
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:")
    {
        if plain {
            return Some(href.to_owned());
        }
        // Whitespace or control characters: let the URL parser clean it up, or refuse it.
        let url = Url::parse(href).ok()?;
        return matches!(url.scheme(), "http" | "https" | "mailto").then(|| url.to_string());
    }
    if href.contains(':') && !href.starts_with('/') && !href.contains('/') {
        // Another scheme (javascript:, data:, …).
        return None;
    }
    let url = base.get()?.join(href).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

/// The value of attribute `want` (case-insensitive) in a tag's attribute text, decoded.
fn attr(attrs: &str, want: &str) -> Option<String> {
    let b = attrs.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i].is_ascii_whitespace() || b[i] == b'/') {
            i += 1;
        }
        let name_start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'=' | b'/' | b'>') {
            i += 1;
        }
        let name = &attrs[name_start..i];
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
                    let start = i + 1;
                    let end = b[start..]
                        .iter()
                        .position(|&c| c == q)
                        .map_or(b.len(), |p| start + p);
                    value = &attrs[start..end];
                    i = end + 1;
                }
                _ => {
                    let start = i;
                    while i < b.len() && !b[i].is_ascii_whitespace() {
                        i += 1;
                    }
                    value = &attrs[start..i];
                }
            }
        }
        if name.eq_ignore_ascii_case(want) {
            return Some(decode_entities(value));
        }
        if name_start == i {
            i += 1;
        }
    }
    None
}

/// Decodes entity references in an attribute value (no whitespace handling).
pub(crate) fn decode_entities(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut run = 0;
    while i < b.len() {
        if b[i] == b'&' {
            out.push_str(&s[run..i]);
            let (d, next) = entity(b, i);
            out.push(d.unwrap_or('&'));
            i = next;
            run = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&s[run..]);
    out
}

/// Where a tag's attributes end (at `>` or `/>`) and where the text after it starts.
fn tag_end(b: &[u8], from: usize) -> (usize, usize) {
    let mut i = from;
    let mut quote = 0u8;
    while i < b.len() {
        let c = b[i];
        if quote != 0 {
            if c == quote {
                quote = 0;
            }
        } else if c == b'"' || c == b'\'' {
            // Only a quote that opens an attribute value (after `=`) is a quote.
            let mut j = i;
            while j > from && b[j - 1].is_ascii_whitespace() {
                j -= 1;
            }
            if j > from && b[j - 1] == b'=' {
                quote = c;
            }
        } else if c == b'>' {
            return (i, i + 1);
        } else if c == b'<' {
            // An unclosed tag: it ends where the next one starts.
            return (i, i);
        }
        i += 1;
    }
    (b.len(), b.len())
}

fn skip_to_gt(b: &[u8], from: usize) -> usize {
    b.get(from..)
        .and_then(|r| r.iter().position(|&c| c == b'>'))
        .map_or(b.len(), |p| from + p + 1)
}

/// Skips an element's content up to its end tag (`</name`, any case), or to the end.
fn skip_element(b: &[u8], from: usize, name: &[u8]) -> usize {
    let mut i = from;
    while let Some(p) = find(b, i, b"</") {
        let at = p + 2;
        let candidate = b.get(at..at + name.len());
        if candidate.is_some_and(|c| c.eq_ignore_ascii_case(name))
            && !b
                .get(at + name.len())
                .is_some_and(|c| c.is_ascii_alphanumeric())
        {
            return skip_to_gt(b, at + name.len());
        }
        i = at;
    }
    b.len()
}

/// The position of `needle` in `hay` at or after `from`.
fn find(hay: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let first = *needle.first()?;
    let mut i = from;
    while i + needle.len() <= hay.len() {
        let p = hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&c| c == first)?;
        let at = i + p;
        if &hay[at..at + needle.len()] == needle {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_tags_and_decodes_entities() {
        assert_eq!(
            to_text(
                "<p>Caf&eacute; &amp; cr&#232;me &#x2014; &quot;ok&quot;</p>",
                100
            ),
            "Café & crème — \"ok\""
        );
        assert_eq!(
            to_text(
                "a&nbsp;b &hellip; &mdash;&ndash; &lsquo;x&rsquo; &ldquo;y&rdquo; &copy;&reg;&apos;",
                100
            ),
            "a b … —– ‘x’ “y” ©®'"
        );
        assert_eq!(
            to_text("&#146;quoted&#148; &#0; &#xD800;", 100),
            "’quoted” \u{fffd} \u{fffd}"
        );
        assert_eq!(
            to_text("AT&T &unknown; & more &amp", 100),
            "AT&T &unknown; & more &"
        );
        assert_eq!(to_text("a < b and c > d, x<3", 100), "a < b and c > d, x<3");
    }

    #[test]
    fn blocks_become_lines_and_whitespace_collapses() {
        let html = "<div>one</div><div>two</div>\n\n<p>three   four</p>\n<p>five<br>six<br/><br><br><br>seven</p>";
        assert_eq!(
            to_text(html, 200),
            "one\ntwo\n\nthree four\n\nfive\nsix\n\nseven"
        );
        assert_eq!(to_text("  <p>  </p> <b>x</b>  ", 100), "x");
        assert_eq!(to_text("<h1>Title</h1>Body", 100), "Title\n\nBody");
        assert_eq!(
            to_text(
                "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>",
                100
            ),
            "a b\nc"
        );
    }

    #[test]
    fn lists_get_bullets() {
        assert_eq!(
            to_text("<p>Items:</p><ul><li>one</li><li> two </li></ul>after", 100),
            "Items:\n\n• one\n• two\n\nafter"
        );
    }

    #[test]
    fn drops_script_style_head_and_comments() {
        let html = "<html><head><title>t</title><style>p{color:red}</style></head>\
                    <body><script>var x = '<p>no</p>';</script><!-- hidden -->shown\
                    <SCRIPT type=x>alert(1)</SCRIPT> too</body></html>";
        assert_eq!(to_text(html, 100), "shown too");
        assert_eq!(to_text("a<script>never closed", 100), "a");
    }

    #[test]
    fn links_keep_their_target() {
        assert_eq!(
            to_text(
                r#"see <a href="https://example.org/x?a=1&amp;b=2">the page</a>."#,
                200
            ),
            "see the page (https://example.org/x?a=1&b=2)."
        );
        assert_eq!(
            to_text(r#"<a href="https://example.org/">example.org</a>"#, 200),
            "example.org"
        );
        assert_eq!(
            to_text(
                r#"<a href='http://x.org/a'><img src=i.png></a> <a href="javascript:x()">js</a>"#,
                200
            ),
            "js"
        );
        let base = Some("https://blog.example/feed/");
        assert_eq!(
            to_text_with_base(
                r##"<a href="/post/1">post</a> <a href="#top">top</a>"##,
                200,
                base
            ),
            "post (https://blog.example/post/1) top"
        );
        assert_eq!(to_text(r#"<a href="/rel">rel</a>"#, 200), "rel");
        assert_eq!(to_text("<a href=\"http://a\u{1}b/\">x</a>", 200), "x");
        assert_eq!(
            to_text("<a href=\"https://a.org/x y\">x</a>", 200),
            "x (https://a.org/x%20y)"
        );
    }

    #[test]
    fn cuts_on_a_char_boundary_with_an_ellipsis() {
        let text = to_text("<p>ééééé ééééé ééééé</p>", 10);
        assert!(text.chars().count() <= 10, "{text}");
        assert!(text.ends_with('…'), "{text}");
        assert_eq!(text, "ééééé ééé…");
        let long = "word ".repeat(1000);
        let cut = to_text(&long, 500);
        assert!(cut.chars().count() <= 500);
        assert!(cut.starts_with("word word"));
        assert!(cut.ends_with("word…"));
        assert_eq!(to_text("exactly10!", 10), "exactly10!");
        assert_eq!(to_text("0123456789a", 10), "012345678…");
        assert_eq!(to_text("anything", 0), "");
    }

    #[test]
    fn cdata_and_broken_markup() {
        assert_eq!(to_text("<![CDATA[<b>x</b> y]]>z", 100), "<b>x</b> yz");
        assert_eq!(to_text("<p class=\"a>b\">quoted</p>", 100), "quoted");
        assert_eq!(to_text("<b>bold <i>unclosed", 100), "bold unclosed");
        assert_eq!(to_text("text <br", 100), "text");
        assert_eq!(to_text("<p>a<p>b</div></span>c", 100), "a\n\nb\nc");
        assert_eq!(to_text("<", 100), "<");
        assert_eq!(to_text("&", 100), "&");
        assert_eq!(to_text("&#", 100), "&#");
        assert_eq!(to_text("&#x;", 100), "&#x;");
    }

    #[test]
    fn collapse_text_is_plain() {
        assert_eq!(collapse_text("  a <b>\n\n c  ", 100), "a <b> c");
        assert_eq!(collapse_text("abcdefghijkl", 5), "abcd…");
        assert_eq!(collapse_text("a\u{0}b\u{85}c\u{a0}d\u{7f}", 50), "abc d");
    }

    /// A tiny deterministic generator for the never-panics tests.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn random_tag_soup_never_panics_and_respects_the_budget() {
        const PIECES: &[&str] = &[
            "<",
            ">",
            "</",
            "/>",
            "<p>",
            "</p>",
            "<a href=\"",
            "\">",
            "</a>",
            "<li>",
            "<br>",
            "<script>",
            "</script>",
            "<!--",
            "-->",
            "<![CDATA[",
            "]]>",
            "&",
            "&amp;",
            "&#",
            "&#x",
            "1",
            "f",
            ";",
            " ",
            "\n",
            "é",
            "€",
            "😀",
            "text",
            "\"",
            "'",
            "=",
            "<div ",
            "<style",
            "&nbsp",
            "&eacute;",
            "http://x.org/",
            "<A HREF=",
            "</A>",
            "<!DOCTYPE",
            "<?",
            "?>",
            "\u{0}",
            "\u{85}",
            "&#128512;",
            "&#99999999999;",
        ];
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..3000 {
            let mut s = String::new();
            let n = (rng.next() % 40) as usize;
            for _ in 0..n {
                s.push_str(PIECES[(rng.next() % PIECES.len() as u64) as usize]);
            }
            let max = (rng.next() % 60) as usize;
            let out = to_text(&s, max);
            assert!(
                out.chars().count() <= max,
                "round {round}: {s:?} -> {out:?}"
            );
            assert_eq!(out.trim(), out, "round {round}: {s:?}");
            assert!(!out.contains("\n\n\n"), "round {round}: {s:?}");
        }
        for _ in 0..2000 {
            let len = (rng.next() % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
            let s = String::from_utf8_lossy(&bytes);
            let out = to_text(&s, 30);
            assert!(out.chars().count() <= 30);
        }
    }
}
