//! Feed autodiscovery: from a site's address to its feed's. This module owns the lean HTML
//! scan for `<link rel="alternate" type="application/rss+xml" href=…>` (and `<base href>`),
//! the "does this body look like a feed" sniff, and the fallback over common feed paths.
//! Every request goes through a [`Fetcher`], so discovery obeys the same address, size and
//! time limits as fetching.

use url::Url;

use crate::fetch::{FetchError, FetchOutcome, Fetcher, Validators};

/// How much of an HTML page is scanned for feed links.
const SCAN_LIMIT: usize = 512 * 1024;

/// How much of a body is sniffed for a feed's root element or JSON Feed's version.
const SNIFF_LIMIT: usize = 64 * 1024;

/// Paths tried, in order, on the site's origin when the page names no feed.
pub const COMMON_PATHS: [&str; 7] = [
    "/feed",
    "/rss",
    "/atom.xml",
    "/feed.xml",
    "/rss.xml",
    "/index.xml",
    "/feed.json",
];

/// `type` values of feed links.
const FEED_TYPES: [&str; 4] = [
    "application/rss+xml",
    "application/atom+xml",
    "application/feed+json",
    "application/json",
];

/// Finds the feed of the site at `site_url`.
///
/// If the page itself is a feed, its (final) URL is the answer; otherwise the first feed
/// link in the page; otherwise the first of [`COMMON_PATHS`] on the page's origin that
/// answers 2xx with a body that looks like a feed. A page that answers with an error status
/// still gets the common paths tried. Refusals, time-outs and network errors on the site
/// itself are returned as they are; when nothing is found the error is
/// [`FetchError::NotFound`] ("no feed found on this site").
pub async fn discover(fetcher: &Fetcher, site_url: &str) -> Result<String, FetchError> {
    let none = Validators::default();
    let origin_of = match fetcher.fetch(site_url, &none).await {
        Ok(FetchOutcome::Fetched {
            body,
            final_url,
            content_type,
            ..
        }) => {
            if looks_like_feed(content_type.as_deref(), &body) {
                return Ok(final_url);
            }
            let html = text_prefix(&body, SCAN_LIMIT);
            if let Some(first) = find_feed_links(&html, &final_url).into_iter().next() {
                return Ok(first);
            }
            final_url
        }
        // Not asked conditionally, so not reachable; treat the page as empty.
        Ok(FetchOutcome::NotModified { .. }) => site_url.to_owned(),
        Err(FetchError::Status { .. }) => site_url.to_owned(),
        Err(e) => return Err(e),
    };
    let Ok(base) = Url::parse(&origin_of) else {
        return Err(FetchError::NotFound);
    };
    for path in COMMON_PATHS {
        let Ok(candidate) = base.join(path) else {
            continue;
        };
        match fetcher.fetch(candidate.as_str(), &none).await {
            Ok(FetchOutcome::Fetched {
                body,
                final_url,
                content_type,
                ..
            }) if looks_like_feed_body(content_type.as_deref(), &body) => return Ok(final_url),
            Err(e) if e.is_refusal() => return Err(e),
            _ => {}
        }
    }
    Err(FetchError::NotFound)
}

/// Whether a response looks like a feed: a feed-ish content type (XML, RSS, Atom, JSON
/// Feed) unless the body is plainly HTML, or a body that sniffs as one.
pub fn looks_like_feed(content_type: Option<&str>, body: &[u8]) -> bool {
    let mime = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let feedish_type = matches!(
        mime.as_str(),
        "application/rss+xml"
            | "application/atom+xml"
            | "application/feed+json"
            | "application/rdf+xml"
            | "application/xml"
            | "text/xml"
    );
    match sniff(body) {
        Sniff::Feed => true,
        Sniff::Html => false,
        Sniff::Unknown => feedish_type,
    }
}

/// Stricter, for guessed paths (sites often answer every path with a page): the body must
/// sniff as a feed, or carry a feed-only content type.
fn looks_like_feed_body(content_type: Option<&str>, body: &[u8]) -> bool {
    let mime = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match sniff(body) {
        Sniff::Feed => true,
        Sniff::Html => false,
        Sniff::Unknown => matches!(
            mime.as_str(),
            "application/rss+xml" | "application/atom+xml" | "application/feed+json"
        ),
    }
}

enum Sniff {
    Feed,
    Html,
    Unknown,
}

/// Looks at the first element of an XML/HTML body, or for JSON Feed's version URL.
fn sniff(body: &[u8]) -> Sniff {
    let head = text_prefix(body, SNIFF_LIMIT);
    let mut rest = head.trim_start_matches('\u{feff}').trim_start();
    if rest.starts_with('{') {
        let compact: String = rest.chars().filter(|c| *c != '\\').collect();
        return if compact.contains("\"version\"") && compact.contains("//jsonfeed.org/version/") {
            Sniff::Feed
        } else {
            Sniff::Unknown
        };
    }
    // Skip the XML declaration, processing instructions, comments and doctypes.
    loop {
        if rest.starts_with("<?") {
            let Some(end) = rest.find("?>") else {
                return Sniff::Unknown;
            };
            rest = rest[end + 2..].trim_start();
        } else if rest.starts_with("<!--") {
            let Some(end) = rest.find("-->") else {
                return Sniff::Unknown;
            };
            rest = rest[end + 3..].trim_start();
        } else if rest.starts_with("<!") {
            if rest
                .as_bytes()
                .get(..14)
                .is_some_and(|head| head.eq_ignore_ascii_case(b"<!doctype html"))
            {
                return Sniff::Html;
            }
            let Some(end) = rest.find('>') else {
                return Sniff::Unknown;
            };
            rest = rest[end + 1..].trim_start();
        } else {
            break;
        }
    }
    let Some(tag) = rest.strip_prefix('<') else {
        return Sniff::Unknown;
    };
    let name: String = tag
        .chars()
        .take_while(|c| !c.is_whitespace() && *c != '>' && *c != '/')
        .collect();
    let local = name.rsplit(':').next().unwrap_or_default();
    match name.to_ascii_lowercase().as_str() {
        "rss" | "feed" | "rdf:rdf" => Sniff::Feed,
        _ if local == "feed" || local == "RDF" => Sniff::Feed,
        "html" => Sniff::Html,
        _ => Sniff::Unknown,
    }
}

/// The first `limit` bytes (cut back to a character boundary), as text.
fn text_prefix(body: &[u8], limit: usize) -> String {
    let mut end = body.len().min(limit);
    // A UTF-8 character is at most 4 bytes: step back over a cut continuation.
    while end > 0 && end < body.len() && (body[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// The feed links of an HTML page, in document order, resolved against `base` (or the
/// page's first `<base href>`), http(s) only, without duplicates: `<link>` elements whose
/// `rel` list contains `alternate` and whose `type` is RSS, Atom, JSON Feed or JSON.
/// Attribute order, quoting, case and character references in values do not matter;
/// comments, `<script>` and `<style>` are skipped. Only the first 512 KiB are scanned.
pub fn find_feed_links(html: &str, base: &str) -> Vec<String> {
    let mut cut = html.len().min(SCAN_LIMIT);
    while !html.is_char_boundary(cut) {
        cut -= 1;
    }
    let html = &html[..cut];
    let bytes = html.as_bytes();

    let mut base_href: Option<String> = None;
    let mut hrefs: Vec<String> = Vec::new();
    let mut pos = 0;
    while let Some(offset) = html[pos..].find('<') {
        let start = pos + offset;
        let rest = &html[start..];
        if rest.starts_with("<!--") {
            pos = match rest.find("-->") {
                Some(end) => start + end + 3,
                None => break,
            };
            continue;
        }
        let name_len = bytes[start + 1..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if name_len == 0 {
            pos = start + 1;
            continue;
        }
        let name = html[start + 1..start + 1 + name_len].to_ascii_lowercase();
        let (attrs, end) = parse_attributes(html, start + 1 + name_len);
        pos = end;
        match name.as_str() {
            "script" | "style" | "textarea" | "title" => {
                pos = skip_raw_text(html, pos, &name);
            }
            "base" if base_href.is_none() => {
                base_href = attr(&attrs, "href").map(str::to_owned);
            }
            "link" => {
                let rel_ok = attr(&attrs, "rel").is_some_and(|rel| {
                    rel.split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case("alternate"))
                });
                let type_ok = attr(&attrs, "type").is_some_and(|t| {
                    let mime = t.split(';').next().unwrap_or_default().trim();
                    FEED_TYPES.iter().any(|f| mime.eq_ignore_ascii_case(f))
                });
                if rel_ok
                    && type_ok
                    && let Some(href) = attr(&attrs, "href")
                    && !href.trim().is_empty()
                {
                    hrefs.push(href.trim().to_owned());
                }
            }
            _ => {}
        }
    }

    let Ok(document) = Url::parse(base) else {
        return Vec::new();
    };
    let effective = base_href
        .and_then(|b| document.join(b.trim()).ok())
        .unwrap_or(document);
    let mut links: Vec<String> = Vec::new();
    for href in hrefs {
        let Ok(url) = effective.join(&href) else {
            continue;
        };
        if matches!(url.scheme(), "http" | "https") {
            let url = url.to_string();
            if !links.contains(&url) {
                links.push(url);
            }
        }
    }
    links
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Reads attributes from `pos` up to the tag's `>`; returns them (names lowercased, values
/// decoded, first of a name wins) and the position after the tag.
fn parse_attributes(html: &str, mut pos: usize) -> (Vec<(String, String)>, usize) {
    let bytes = html.as_bytes();
    let mut attrs: Vec<(String, String)> = Vec::new();
    loop {
        while pos < bytes.len() && (bytes[pos].is_ascii_whitespace() || bytes[pos] == b'/') {
            pos += 1;
        }
        if pos >= bytes.len() {
            return (attrs, pos);
        }
        if bytes[pos] == b'>' {
            return (attrs, pos + 1);
        }
        let name_start = pos;
        while pos < bytes.len()
            && !bytes[pos].is_ascii_whitespace()
            && !matches!(bytes[pos], b'=' | b'>' | b'/')
        {
            pos += 1;
        }
        // Non-ASCII bytes are never stopping points, so the slice stays on boundaries.
        let name = html[name_start..pos].to_ascii_lowercase();
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let mut value = String::new();
        if pos < bytes.len() && bytes[pos] == b'=' {
            pos += 1;
            while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
                pos += 1;
            }
            if pos < bytes.len() && matches!(bytes[pos], b'"' | b'\'') {
                let quote = bytes[pos];
                let value_start = pos + 1;
                let value_end = bytes[value_start..]
                    .iter()
                    .position(|b| *b == quote)
                    .map_or(bytes.len(), |i| value_start + i);
                value = decode_entities(&html[value_start..value_end]);
                pos = (value_end + 1).min(bytes.len());
            } else {
                let value_start = pos;
                while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() && bytes[pos] != b'>' {
                    pos += 1;
                }
                value = decode_entities(&html[value_start..pos]);
            }
        }
        // An empty name means a stray `=`, consumed above with its value.
        if !name.is_empty() && !attrs.iter().any(|(n, _)| *n == name) {
            attrs.push((name, value));
        }
    }
}

/// Skips the content of a raw-text element up to its end tag (ASCII case-insensitive).
fn skip_raw_text(html: &str, pos: usize, name: &str) -> usize {
    let bytes = html.as_bytes();
    let name = name.as_bytes();
    let mut from = pos;
    while let Some(offset) = html[from..].find("</") {
        let at = from + offset;
        let tag = &bytes[at + 2..];
        if tag.len() >= name.len() && tag[..name.len()].eq_ignore_ascii_case(name) {
            return at;
        }
        from = at + 2;
    }
    html.len()
}

/// Decodes the character references that matter in URLs: `&amp;`, `&lt;`, `&gt;`,
/// `&quot;`, `&apos;` and numeric ones. Others are left as they are.
fn decode_entities(value: &str) -> String {
    if !value.contains('&') {
        return value.to_owned();
    }
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(semi) = rest[1..].find(';').map(|j| j + 1).filter(|j| *j <= 10) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix('#')
                .and_then(|num| match num.strip_prefix(['x', 'X']) {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => num.parse::<u32>().ok(),
                })
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
