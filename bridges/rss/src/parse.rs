//! Feed bytes → entries: RSS 0.9x/1.0/2.0, Atom and JSON Feed through feed-rs, with a
//! repaired copy for the broken feeds found in the wild.
//!
//! [`parse_feed`] first hands the bytes to feed-rs as they are. When feed-rs refuses them
//! (or finds no entries in a document that has some), a cleaned-up copy is tried (see
//! [`repair`]): transcoded to UTF-8 when the bytes do not fit their declared encoding,
//! without its DOCTYPE (DTD entities are never expanded), with HTML named entities turned
//! into characters and stray `&` escaped, markup inside `<description>`/`<content>` made
//! opaque, and tags balanced. Entries come out newest first with a de-duplication key, a
//! resolved link and a short plain-text summary; [`Entry::body`] is the chat message.

use std::fmt;
use std::time::Duration;

use feed_rs::model;
use sha1::{Digest, Sha1};
use url::Url;

use crate::html;

pub(crate) mod repair;

/// At most this many entries are kept from one document (the newest).
pub const MAX_ENTRIES: usize = 500;
/// A summary is cut at this many characters (the "…" included).
pub const SUMMARY_CHARS: usize = 500;
/// A title is cut at this many characters.
pub const TITLE_CHARS: usize = 300;
/// De-duplication keys longer than this become `h:<sha1 hex>`.
pub const MAX_KEY_BYTES: usize = 200;

/// A parsed feed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Feed {
    /// The feed's title, as plain text.
    pub title: Option<String>,
    /// The site the feed belongs to.
    pub site_link: Option<String>,
    /// The feed's icon, logo or image URL, absolute.
    pub icon: Option<String>,
    /// RSS `<ttl>`: how long the feed may be cached.
    pub ttl: Option<Duration>,
    /// RSS `<skipHours>`: hours (0-23, UTC) in which the feed should not be polled.
    pub skip_hours: Vec<u8>,
    /// When the feed says it was last updated (ms since the Unix epoch).
    pub updated_ms: Option<i64>,
    /// The entries, newest first (by date when every entry has one, else in document
    /// order), at most [`MAX_ENTRIES`].
    pub entries: Vec<Entry>,
}

/// One entry of a feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The de-duplication key: `id:<guid/id>`, else `link:<link>`, else
    /// `hash:<sha1 hex of title and summary>`; a key longer than [`MAX_KEY_BYTES`] is
    /// `h:<sha1 hex of the key>`.
    pub key: String,
    /// The title, as plain text.
    pub title: Option<String>,
    /// The entry's link, absolute (resolved against the feed URL), http(s) only.
    pub link: Option<String>,
    /// A plain-text summary of the summary or content, at most [`SUMMARY_CHARS`].
    pub summary: String,
    /// When the entry was published (else updated), ms since the Unix epoch.
    pub published_ms: Option<i64>,
}

impl Entry {
    /// The chat message for this entry: title, link, a blank line and the summary (each
    /// only when there is one); never empty.
    pub fn body(&self) -> String {
        let title = self.title.as_deref().unwrap_or_default();
        let link = self.link.as_deref().unwrap_or_default();
        let summary = if self.summary == title {
            ""
        } else {
            self.summary.as_str()
        };
        let mut s = String::with_capacity(title.len() + link.len() + summary.len() + 3);
        s.push_str(title);
        if !link.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(link);
        }
        if !summary.is_empty() {
            if !s.is_empty() {
                s.push_str("\n\n");
            }
            s.push_str(summary);
        }
        if s.is_empty() {
            s.push_str("(untitled entry)");
        }
        s
    }
}

/// Why bytes could not be read as a feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

/// Parses a feed document fetched from `feed_url` (used to resolve relative links).
pub fn parse_feed(bytes: &[u8], feed_url: &str) -> Result<Feed, ParseError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ParseError("not a feed: the document is empty".to_owned()));
    }
    let base = Url::parse(feed_url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    let prepared = repair::prepare(bytes);
    let first_doc: Option<&[u8]> = match &prepared {
        repair::Prepared::AsIs => Some(bytes),
        repair::Prepared::Utf8(text) => Some(text.as_bytes()),
        repair::Prepared::Repair => None,
    };
    let mut first: Option<(model::Feed, &[u8])> = None;
    let mut first_error = None;
    if let Some(doc) = first_doc {
        match run_feed_rs(doc) {
            Ok(feed) if !feed.entries.is_empty() || !has_entry_markup(doc) => {
                return Ok(convert(feed, doc, base.as_ref()));
            }
            Ok(feed) => first = Some((feed, doc)),
            Err(e) => first_error = Some(e),
        }
    }
    // feed-rs refused the document, or found no entries where there are some: try a
    // repaired copy.
    let repaired = repair::repair(bytes);
    let second = run_feed_rs(repaired.as_bytes());
    match (first, second) {
        (Some((a, _)), Ok(b)) if b.entries.len() > a.entries.len() => {
            Ok(convert(b, repaired.as_bytes(), base.as_ref()))
        }
        (Some((a, doc)), _) => Ok(convert(a, doc, base.as_ref())),
        (None, Ok(b)) => Ok(convert(b, repaired.as_bytes(), base.as_ref())),
        (None, Err(e)) => Err(ParseError(format!(
            "not a feed: {}",
            first_error.unwrap_or(e)
        ))),
    }
}

/// feed-rs on a document; its error in ferry's words.
fn run_feed_rs(bytes: &[u8]) -> Result<model::Feed, String> {
    // An empty id stands for "none": the key then falls back to the link or a hash,
    // instead of feed-rs's generated (possibly random) ids. No base URI: feed-rs would
    // clone it into every element; relative links are resolved in `convert`.
    let parser = feed_rs::parser::Builder::new()
        .id_generator(|_, _, _| String::new())
        .build();
    // `repair::prepare` keeps away the inputs known to make feed-rs's XML reader panic;
    // this is the net for the ones not known yet: a feed must never take ferry down.
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parser.parse(bytes))) {
        Ok(Ok(feed)) => Ok(feed),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err("the feed parser failed on this document".to_owned()),
    }
}

/// feed-rs's error in ferry's words: lowercase, no trailing period.
fn describe(e: &feed_rs::parser::ParseFeedError) -> String {
    use feed_rs::parser::{ParseErrorKind, ParseFeedError};
    let s = match e {
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
            "no RSS, Atom or JSON Feed document found".to_owned()
        }
        other => other.to_string(),
    };
    let mut s = s.trim().trim_end_matches('.').to_owned();
    if let Some(first) = s.get(..1)
        && !s.starts_with("RSS")
    {
        let lower = first.to_ascii_lowercase();
        s.replace_range(..1, &lower);
    }
    s
}

/// Whether a document that gave no entries has markup that looks like some.
fn has_entry_markup(bytes: &[u8]) -> bool {
    memchr::memmem::find(bytes, b"<item").is_some()
        || memchr::memmem::find(bytes, b"<entry").is_some()
        || memchr::memmem::find(bytes, b":item").is_some()
        || memchr::memmem::find(bytes, b"\"items\"").is_some()
}

/// feed-rs's model → ferry's.
fn convert(feed: model::Feed, doc: &[u8], base: Option<&Url>) -> Feed {
    let title = feed
        .title
        .as_ref()
        .map(|t| html::to_text(&t.content, TITLE_CHARS))
        .filter(|t| !t.is_empty());
    let site_link = pick_link(&feed.links).and_then(|l| resolve(l, base));
    let icon = feed
        .icon
        .as_ref()
        .or(feed.logo.as_ref())
        .and_then(|i| resolve(&i.uri, base));
    let ttl = feed
        .ttl
        .filter(|m| *m > 0)
        .map(|m| Duration::from_secs(u64::from(m) * 60));
    let updated_ms = feed
        .updated
        .or(feed.published)
        .map(|d| d.timestamp_millis());
    let mut entries: Vec<Entry> = feed
        .entries
        .iter()
        .map(|e| convert_entry(e, base))
        .collect();
    if entries.iter().all(|e| e.published_ms.is_some()) {
        // Stable: entries with the same date keep their document order.
        entries.sort_by_key(|e| std::cmp::Reverse(e.published_ms));
    }
    entries.truncate(MAX_ENTRIES);
    Feed {
        title,
        site_link,
        icon,
        ttl,
        skip_hours: skip_hours(doc),
        updated_ms,
        entries,
    }
}

fn convert_entry(e: &model::Entry, base: Option<&Url>) -> Entry {
    let title = e
        .title
        .as_ref()
        .map(|t| html::to_text(&t.content, TITLE_CHARS))
        .filter(|t| !t.is_empty());
    let link = pick_link(&e.links)
        .and_then(|l| resolve(l, base))
        .or_else(|| {
            // An RSS guid that is a URL is a permalink (feedparser reads it so too).
            let id = e.id.trim();
            let lower = id.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
            (lower.starts_with("http://") || lower.starts_with("https://"))
                .then(|| resolve(id, base))
                .flatten()
        });
    let text_base = link.as_deref().or(base.map(Url::as_str));
    let mut summary = String::new();
    if let Some(s) = &e.summary {
        summary = text_of(&s.content, s.content_type.as_str(), text_base);
    }
    if summary.is_empty()
        && let Some(body) = e.content.as_ref().and_then(|c| c.body.as_ref())
    {
        let content_type = e.content.as_ref().map_or("", |c| c.content_type.as_str());
        summary = text_of(body, content_type, text_base);
    }
    if summary.is_empty()
        && let Some(d) = e.media.iter().find_map(|m| m.description.as_ref())
    {
        summary = text_of(&d.content, d.content_type.as_str(), text_base);
    }
    let published_ms = e.published.or(e.updated).map(|d| d.timestamp_millis());
    let key = entry_key(&e.id, link.as_deref(), title.as_deref(), &summary);
    Entry {
        key,
        title,
        link,
        summary,
        published_ms,
    }
}

/// Plain text of a text construct: HTML is converted, plain text only collapsed.
fn text_of(content: &str, content_type: &str, base: Option<&str>) -> String {
    if content_type.eq_ignore_ascii_case("text/plain") {
        html::collapse_text(content, SUMMARY_CHARS)
    } else {
        html::to_text_with_base(content, SUMMARY_CHARS, base)
    }
}

/// The de-duplication key of an entry (see [`Entry::key`]).
pub fn entry_key(id: &str, link: Option<&str>, title: Option<&str>, summary: &str) -> String {
    let id = id.trim();
    let key = if !id.is_empty() {
        format!("id:{id}")
    } else if let Some(link) = link.filter(|l| !l.is_empty()) {
        format!("link:{link}")
    } else {
        let mut h = Sha1::new();
        h.update(title.unwrap_or_default().as_bytes());
        h.update(b"\n");
        h.update(summary.as_bytes());
        format!("hash:{}", hex::encode(h.finalize()))
    };
    if key.len() > MAX_KEY_BYTES {
        format!("h:{}", hex::encode(Sha1::digest(key.as_bytes())))
    } else {
        key
    }
}

/// The page link among a feed's or entry's links: the first alternate (or untyped)
/// link that is not a comments link.
fn pick_link(links: &[model::Link]) -> Option<&str> {
    links
        .iter()
        .find(|l| {
            l.target.is_none()
                && !l.href.trim().is_empty()
                && l.rel
                    .as_deref()
                    .is_none_or(|r| r.trim().eq_ignore_ascii_case("alternate"))
        })
        .map(|l| l.href.as_str())
}

/// An absolute http(s) URL for `href`, resolved against `base` when relative.
fn resolve(href: &str, base: Option<&Url>) -> Option<String> {
    let href = href.trim();
    if href.is_empty() {
        return None;
    }
    let lower = href
        .get(..8)
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let plain = href
        .bytes()
        .all(|b| b > b' ' && b != 0x7f && b != b'"' && b != b'<' && b != b'>');
    if (lower.starts_with("http://") || lower.starts_with("https://")) && plain {
        return Some(href.to_owned());
    }
    let url = match Url::parse(href) {
        Ok(u) => u,
        Err(url::ParseError::RelativeUrlWithoutBase) => base?.join(href).ok()?,
        Err(_) => return None,
    };
    matches!(url.scheme(), "http" | "https").then(|| url.to_string())
}

/// RSS `<skipHours>`: the `<hour>`s listed (24 is read as 0), sorted, without repeats.
fn skip_hours(doc: &[u8]) -> Vec<u8> {
    let Some(start) = memchr::memmem::find(doc, b"<skipHours") else {
        return Vec::new();
    };
    let rest = &doc[start..];
    let section = match memchr::memmem::find(rest, b"</skipHours") {
        Some(end) => &rest[..end],
        None => &rest[..rest.len().min(4096)],
    };
    let mut hours = Vec::new();
    let mut i = 0;
    while let Some(p) = memchr::memmem::find(&section[i..], b"<hour") {
        let open = i + p + 5;
        let Some(gt) = memchr::memchr(b'>', &section[open..]) else {
            break;
        };
        let text_start = open + gt + 1;
        let text_end =
            memchr::memchr(b'<', &section[text_start..]).map_or(section.len(), |q| text_start + q);
        let text = String::from_utf8_lossy(&section[text_start..text_end]);
        if let Ok(h) = text.trim().parse::<u8>()
            && h <= 24
        {
            hours.push(h % 24);
        }
        i = text_end;
        if hours.len() > 48 {
            break;
        }
    }
    hours.sort_unstable();
    hours.dedup();
    hours
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://example.org/feed.xml";

    fn parse(doc: &str) -> Feed {
        parse_feed(doc.as_bytes(), URL).expect("parses")
    }

    #[test]
    fn rss2_basics() {
        let feed = parse(
            r#"<?xml version="1.0"?><rss version="2.0"><channel><title>T &amp; co</title>
            <link>https://example.org/</link><ttl>90</ttl>
            <skipHours><hour>0</hour><hour>23</hour><hour>24</hour><hour>x</hour></skipHours>
            <image><url>/logo.png</url><title>T</title><link>https://example.org/</link></image>
            <item><title>Old</title><link>/old</link><guid>g1</guid>
              <pubDate>Mon, 01 Jan 2024 00:00:00 GMT</pubDate>
              <description>&lt;p&gt;Hello &lt;b&gt;world&lt;/b&gt;&lt;/p&gt;</description></item>
            <item><title>New</title><link>https://example.org/new</link>
              <pubDate>Tue, 02 Jan 2024 00:00:00 GMT</pubDate></item>
            </channel></rss>"#,
        );
        assert_eq!(feed.title.as_deref(), Some("T & co"));
        assert_eq!(feed.site_link.as_deref(), Some("https://example.org/"));
        assert_eq!(feed.icon.as_deref(), Some("https://example.org/logo.png"));
        assert_eq!(feed.ttl, Some(Duration::from_secs(90 * 60)));
        assert_eq!(feed.skip_hours, vec![0, 23]);
        let titles: Vec<_> = feed.entries.iter().map(|e| e.title.clone()).collect();
        assert_eq!(titles, vec![Some("New".to_owned()), Some("Old".to_owned())]);
        let old = &feed.entries[1];
        assert_eq!(old.key, "id:g1");
        assert_eq!(old.link.as_deref(), Some("https://example.org/old"));
        assert_eq!(old.summary, "Hello world");
        assert_eq!(old.published_ms, Some(1_704_067_200_000));
        assert_eq!(feed.entries[0].key, "link:https://example.org/new");
    }

    #[test]
    fn keys_fall_back_to_a_hash_and_long_keys_are_hashed() {
        let feed = parse(
            r#"<rss version="2.0"><channel><title>x</title>
            <item><title>No id</title><description>words</description></item>
            </channel></rss>"#,
        );
        let e = &feed.entries[0];
        assert!(e.key.starts_with("hash:"), "{}", e.key);
        assert_eq!(e.key.len(), 5 + 40);
        assert_eq!(e.key, entry_key("", None, Some("No id"), "words"));
        let long = "x".repeat(300);
        let k = entry_key(&long, None, None, "");
        assert!(k.starts_with("h:") && k.len() == 42, "{k}");
        assert_ne!(k, entry_key(&"y".repeat(300), None, None, ""));
        assert_eq!(entry_key("  g  ", Some("l"), None, ""), "id:g");
        assert_eq!(
            entry_key("", Some("https://a/"), None, ""),
            "link:https://a/"
        );
    }

    #[test]
    fn body_is_title_link_summary_and_never_empty() {
        let mut e = Entry {
            key: "k".into(),
            title: Some("Title".into()),
            link: Some("https://x.org/1".into()),
            summary: "Some text".into(),
            published_ms: None,
        };
        assert_eq!(e.body(), "Title\nhttps://x.org/1\n\nSome text");
        e.summary = "Title".into();
        assert_eq!(e.body(), "Title\nhttps://x.org/1");
        e.title = None;
        e.summary.clear();
        assert_eq!(e.body(), "https://x.org/1");
        e.link = None;
        assert_eq!(e.body(), "(untitled entry)");
        e.summary = "only text".into();
        assert_eq!(e.body(), "only text");
    }

    #[test]
    fn not_a_feed_is_an_error() {
        for doc in [
            "",
            "   ",
            "<html><body>hi</body></html>",
            "hello",
            "{\"a\": 1}",
        ] {
            let err = parse_feed(doc.as_bytes(), URL).expect_err(doc);
            assert!(err.0.starts_with("not a feed"), "{doc}: {err}");
            assert!(!err.0.ends_with('.'));
        }
    }

    #[test]
    fn keeps_at_most_max_entries_the_newest() {
        let mut doc = String::from("<rss version=\"2.0\"><channel><title>x</title>");
        for i in 0..(MAX_ENTRIES + 20) {
            doc.push_str(&format!(
                "<item><guid>{i}</guid><pubDate>{}</pubDate></item>",
                chrono_like(i)
            ));
        }
        doc.push_str("</channel></rss>");
        let feed = parse(&doc);
        assert_eq!(feed.entries.len(), MAX_ENTRIES);
        assert_eq!(feed.entries[0].key, format!("id:{}", MAX_ENTRIES + 19));
    }

    /// An RFC 2822 date `i` minutes after 2024-01-01 00:00 UTC.
    fn chrono_like(i: usize) -> String {
        format!("Mon, 01 Jan 2024 {:02}:{:02}:00 GMT", (i / 60) % 24, i % 60)
    }

    #[test]
    fn undated_entries_keep_document_order() {
        let feed = parse(
            r#"<rss version="2.0"><channel><title>x</title>
            <item><guid>a</guid></item>
            <item><guid>b</guid><pubDate>Tue, 02 Jan 2024 00:00:00 GMT</pubDate></item>
            </channel></rss>"#,
        );
        let keys: Vec<_> = feed.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["id:a", "id:b"]);
    }

    #[test]
    fn repairs_stray_ampersands_and_html_entities() {
        let feed = parse(
            "<rss version=\"2.0\"><channel><title>Caf&eacute; & bar</title>\
             <item><title>A &mdash; B &bogus;</title><link>https://x.org/?a=1&b=2</link>\
             <description>x &nbsp; y</description></item></channel></rss>",
        );
        assert_eq!(feed.title.as_deref(), Some("Café & bar"));
        let e = &feed.entries[0];
        assert_eq!(e.title.as_deref(), Some("A — B &bogus;"));
        assert_eq!(e.link.as_deref(), Some("https://x.org/?a=1&b=2"));
        assert_eq!(e.summary, "x y");
    }

    #[test]
    fn repairs_broken_xhtml_in_content() {
        let feed = parse(
            r#"<?xml version="1.0" encoding="utf-8"?>
            <feed xmlns="http://www.w3.org/2005/Atom"><title>t</title><id>f</id>
            <entry><id>e1</id><title>One</title><updated>2024-01-01T00:00:00Z</updated>
              <content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Broken<br>
              <b>bold</p></div></content></entry>
            <entry><id>e2</id><title>Two</title><updated>2024-01-02T00:00:00Z</updated>
              <summary type="html"></summary></entry>
            </feed>"#,
        );
        assert_eq!(feed.entries.len(), 2);
        assert_eq!(feed.entries[1].key, "id:e1");
        assert_eq!(feed.entries[1].summary, "Broken\nbold");
        assert_eq!(feed.entries[0].title.as_deref(), Some("Two"));
    }

    #[test]
    fn reads_a_truncated_document_and_junk_before_the_root() {
        let feed = parse(
            "<b>Warning</b>: something in /var/www/x.php<br />\n<?xml version=\"1.0\"?>\
             <rss version=\"2.0\"><channel><title>x</title>\
             <item><title>kept</title><guid>1</guid></item><item><title>cut",
        );
        assert_eq!(feed.title.as_deref(), Some("x"));
        assert_eq!(feed.entries.len(), 2);
        assert!(feed.entries.iter().any(|e| e.key == "id:1"));
    }

    #[test]
    fn reads_unknown_rss_versions_and_atom_03() {
        let feed = parse(
            "<rss version=\"0.94\"><channel><title>x</title><item><title>a</title>\
             <link>https://x.org/a</link></item></channel></rss>",
        );
        assert_eq!(feed.entries.len(), 1);
        let feed = parse(
            r#"<feed version="0.3" xmlns="http://purl.org/atom/ns#"><title>Old Atom</title>
            <link rel="alternate" type="text/html" href="https://x.org/"/>
            <entry><title>e</title><link rel="alternate" type="text/html" href="https://x.org/e"/>
            <id>tag:x.org,2004:1</id><issued>2004-01-01T00:00:00Z</issued>
            <content type="text/html" mode="escaped">&lt;p&gt;hi&lt;/p&gt;</content></entry></feed>"#,
        );
        assert_eq!(feed.title.as_deref(), Some("Old Atom"));
        assert_eq!(feed.entries.len(), 1);
        let e = &feed.entries[0];
        assert_eq!(e.link.as_deref(), Some("https://x.org/e"));
        assert_eq!(e.summary, "hi");
        assert_eq!(e.published_ms, Some(1_072_915_200_000));
    }

    #[test]
    fn reads_encodings_and_prologs_that_go_wrong() {
        let item = "<rss version=\"2.0\"><channel><title>Café</title>\
                    <item><title>été</title><guid>1</guid></item></channel></rss>";
        // Blank lines (and a BOM) before the declaration.
        let doc = format!("\u{feff}\n\n  <?xml version=\"1.0\" encoding=\"utf-8\"?>\n{item}");
        assert_eq!(parse(&doc).entries.len(), 1);
        // Declared UTF-16, written in UTF-8.
        let doc = format!("<?xml version=\"1.0\" encoding=\"UTF-16\"?>{item}");
        assert_eq!(parse(&doc).title.as_deref(), Some("Café"));
        // Really UTF-16, with a BOM.
        let mut bytes = vec![0xff, 0xfe];
        bytes.extend(doc.encode_utf16().flat_map(u16::to_le_bytes));
        let feed = parse_feed(&bytes, URL).expect("utf-16");
        assert_eq!(feed.entries[0].title.as_deref(), Some("été"));
        // Declared ISO-8859-1, and it is.
        let mut bytes = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>".to_vec();
        bytes.extend(
            item.chars()
                .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?')),
        );
        let feed = parse_feed(&bytes, URL).expect("latin-1");
        assert_eq!(feed.title.as_deref(), Some("Café"));
        // An unknown encoding name.
        let doc = format!("<?xml version=\"1.0\" encoding=\"x-klingon\"?>{item}");
        assert_eq!(parse(&doc).entries.len(), 1);
    }

    #[test]
    fn late_encoding_declarations_do_not_crash() {
        // Each of these made feed-rs 3.0 (quick-xml 0.42) panic on the bytes as they are
        // (found by `cargo fuzz run feed`).
        let item = "<rss version=\"2.0\"><channel><title>x</title>\
                    <item><title>a</title><guid>1</guid></item></channel></rss>";
        let docs = [
            format!(
                "{}<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>{item}",
                "\n".repeat(80)
            ),
            format!(
                "<?xml version=\"1.0\"     encoding=\"ISO-8859-1\"    standalone=\"yes\"   ?>{item}"
            ),
            item.replace(
                "<item>",
                "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><item>",
            ),
        ];
        for doc in &docs {
            let feed = parse(doc);
            assert_eq!(feed.entries.len(), 1, "{doc}");
            assert_eq!(feed.entries[0].key, "id:1");
        }
    }

    #[test]
    fn authors_beside_non_ascii_text_do_not_crash() {
        // feed-rs 3.0 slices these author texts inside a character (found by the fuzzer).
        let feed = parse(
            "<rss version=\"2.0\"><channel><title>x</title><managingEditor>Jörg «j@x.de»</managingEditor>\
             <item><title>a</title><guid>1</guid><author>Ivan’ivan@x.org (Ivan)</author></item>\
             </channel></rss>",
        );
        assert_eq!(feed.entries.len(), 1);
        assert_eq!(feed.entries[0].title.as_deref(), Some("a"));
        let feed = parse(
            r#"{"version": "https://jsonfeed.org/version/1.1", "title": "j",
                "authors": [{"name": "Zoë «z@x.org»"}],
                "items": [{"id": "1", "title": "t", "content_text": "c",
                           "author": {"name": "’z@x.org"}}]}"#,
        );
        assert_eq!(feed.entries.len(), 1);
        assert_eq!(feed.entries[0].key, "id:1");
    }

    #[test]
    fn only_http_links_are_kept() {
        let feed = parse(
            r#"<rss version="2.0"><channel><title>x</title>
            <item><title>a</title><link>javascript:alert(1)</link></item>
            <item><title>b</title><guid>https://x.org/b</guid></item>
            </channel></rss>"#,
        );
        assert_eq!(feed.entries[0].link, None);
        assert_eq!(feed.entries[1].link.as_deref(), Some("https://x.org/b"));
        assert_eq!(
            resolve("a b", Url::parse(URL).ok().as_ref()).as_deref(),
            Some("https://example.org/a%20b")
        );
        assert_eq!(resolve("mailto:x@y", None), None);
    }
}
