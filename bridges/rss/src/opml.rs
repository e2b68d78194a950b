//! OPML import and export: the subscription lists feed readers trade.
//!
//! [`parse`] collects the `xmlUrl` of every `<outline>` at any depth (the attribute name
//! is matched case-insensitively, as readers write it in every case), without repeats and
//! at most [`MAX_OUTLINES`]; a document with a DOCTYPE is refused, so no entity is ever
//! defined, let alone expanded. [`write`] produces OPML 2.0.

use std::collections::HashSet;
use std::fmt;

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

use crate::html;

/// At most this many feeds are read from one document.
pub const MAX_OUTLINES: usize = 10_000;

/// One subscription of an OPML list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outline {
    /// The feed's address (`xmlUrl`).
    pub url: String,
    /// Its title (`title`, else `text`), when it has one.
    pub title: Option<String>,
}

/// Why a document could not be read as OPML.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpmlError(pub String);

impl fmt::Display for OpmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpmlError {}

/// Reads the feeds of an OPML document, in document order.
pub fn parse(bytes: &[u8]) -> Result<Vec<Outline>, OpmlError> {
    let text = crate::parse::repair::decode(bytes);
    let text = text.trim_start_matches('\u{feff}');
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = false;
    let mut seen_opml = false;
    let mut out: Vec<Outline> = Vec::new();
    let mut urls: HashSet<String> = HashSet::new();
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) => {
                if !out.is_empty() {
                    break; // keep what was read before the document broke
                }
                return Err(OpmlError(format!(
                    "broken xml at byte {}: {}",
                    reader.error_position(),
                    lower_first(&e.to_string())
                )));
            }
        };
        match event {
            Event::DocType(_) => {
                return Err(OpmlError(
                    "documents with a DOCTYPE are not accepted".to_owned(),
                ));
            }
            Event::Start(e) | Event::Empty(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if !seen_opml {
                    if !name.eq_ignore_ascii_case("opml") {
                        return Err(OpmlError("the root element is not <opml>".to_owned()));
                    }
                    seen_opml = true;
                    continue;
                }
                if name.eq_ignore_ascii_case("outline")
                    && let Some(o) = outline(&e)
                    && urls.insert(o.url.clone())
                {
                    out.push(o);
                    if out.len() >= MAX_OUTLINES {
                        break;
                    }
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_opml {
        return Err(OpmlError("no <opml> element found".to_owned()));
    }
    Ok(out)
}

/// The feed of an `<outline>`, if it has an `xmlUrl`.
fn outline(e: &BytesStart<'_>) -> Option<Outline> {
    let mut url = None;
    let mut title = None;
    let mut text = None;
    for a in e.attributes().with_checks(false).flatten() {
        let key = a.key.local_name();
        let key = key.as_ref();
        let value = || {
            // Entities are the XML ones and the common HTML ones; nothing is expanded
            // from a DTD (there is none).
            let raw: &str = &a.value;
            html::decode_entities(raw).trim().to_owned()
        };
        if key.eq_ignore_ascii_case("xmlurl") {
            url = Some(value());
        } else if key.eq_ignore_ascii_case("title") {
            title = Some(value());
        } else if key.eq_ignore_ascii_case("text") {
            text = Some(value());
        }
    }
    let url =
        url.filter(|u| !u.is_empty() && u.len() <= 2048 && !u.chars().any(char::is_control))?;
    let title = title
        .filter(|t| !t.is_empty())
        .or(text.filter(|t| !t.is_empty()))
        .map(|t| html::collapse_text(&t, 300));
    Some(Outline { url, title })
}

fn lower_first(s: &str) -> String {
    let s = s.trim().trim_end_matches('.');
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// An OPML 2.0 document listing `feeds` under `title`.
pub fn write(title: &str, feeds: &[Outline]) -> String {
    let mut s = String::with_capacity(200 + feeds.len() * 120);
    s.push_str(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">\n  <head>\n    <title>",
    );
    escape(title, &mut s);
    s.push_str("</title>\n  </head>\n  <body>\n");
    for f in feeds {
        let label = f
            .title
            .as_deref()
            .filter(|t| !t.is_empty())
            .unwrap_or(&f.url);
        s.push_str("    <outline type=\"rss\" text=\"");
        escape(label, &mut s);
        if f.title.as_deref().is_some_and(|t| !t.is_empty()) {
            s.push_str("\" title=\"");
            escape(label, &mut s);
        }
        s.push_str("\" xmlUrl=\"");
        escape(&f.url, &mut s);
        s.push_str("\"/>\n");
    }
    s.push_str("  </body>\n</opml>\n");
    s
}

/// Escapes text for an XML attribute or element; drops what XML cannot carry.
fn escape(t: &str, out: &mut String) {
    for c in t.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{fffe}' || c == '\u{ffff}' => {}
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_nested_outlines_any_case_without_repeats() {
        let doc = br#"<?xml version="1.0"?>
<opml version="1.0"><head><title>mine</title></head><body>
  <outline text="Tech">
    <outline text="XKCD" title="xkcd" type="rss" xmlUrl="https://xkcd.com/atom.xml"/>
    <outline text="Inner"><outline text="LWN" xmlurl=" https://lwn.net/headlines/rss "/></outline>
  </outline>
  <outline text="again" XMLURL="https://xkcd.com/atom.xml"/>
  <outline text="a folder with no feed"/>
  <outline text="Caf&eacute; &amp; co" xmlUrl="https://x.org/f?a=1&amp;b=2"></outline>
</body></opml>"#;
        let got = parse(doc).expect("opml");
        assert_eq!(
            got,
            vec![
                Outline {
                    url: "https://xkcd.com/atom.xml".into(),
                    title: Some("xkcd".into())
                },
                Outline {
                    url: "https://lwn.net/headlines/rss".into(),
                    title: Some("LWN".into())
                },
                Outline {
                    url: "https://x.org/f?a=1&b=2".into(),
                    title: Some("Café & co".into())
                },
            ]
        );
    }

    #[test]
    fn refuses_doctype_and_what_is_not_opml() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>
<opml><body><outline xmlUrl="https://x.org/&b;"/></body></opml>"#;
        let err = parse(bomb).expect_err("doctype");
        assert!(err.0.contains("DOCTYPE"), "{err}");
        assert!(parse(b"<rss><channel/></rss>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(b"not xml at all").is_err());
        assert_eq!(parse(b"<opml><body/></opml>"), Ok(vec![]));
    }

    #[test]
    fn reads_a_latin1_document() {
        let mut doc = b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><opml><body>".to_vec();
        doc.extend_from_slice(
            b"<outline title=\"Caf\xe9\" xmlUrl=\"https://x.org/\"/></body></opml>",
        );
        let got = parse(&doc).expect("opml");
        assert_eq!(got[0].title.as_deref(), Some("Caf\u{e9}"));
    }

    #[test]
    fn caps_the_number_of_outlines() {
        let mut doc = String::from("<opml><body>");
        for i in 0..(MAX_OUTLINES + 50) {
            doc.push_str(&format!("<outline xmlUrl=\"https://x.org/{i}\"/>"));
        }
        doc.push_str("</body></opml>");
        assert_eq!(parse(doc.as_bytes()).expect("opml").len(), MAX_OUTLINES);
    }

    #[test]
    fn keeps_what_was_read_before_the_document_broke() {
        let got = parse(b"<opml><body><outline xmlUrl=\"https://a.org/\"/><outline xmlUrl=\"x")
            .expect("partial");
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn write_round_trips() {
        let feeds = vec![
            Outline {
                url: "https://x.org/f?a=1&b=2".into(),
                title: Some("Tom & Jerry's <\"best\">\n feed".into()),
            },
            Outline {
                url: "https://y.org/atom.xml".into(),
                title: None,
            },
        ];
        let doc = write("ferry & feeds", &feeds);
        assert!(
            doc.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<opml version=\"2.0\">")
        );
        assert!(doc.contains("<title>ferry &amp; feeds</title>"));
        let back = parse(doc.as_bytes()).expect("round trip");
        assert_eq!(back[0].url, feeds[0].url);
        assert_eq!(
            back[0].title.as_deref(),
            Some("Tom & Jerry's <\"best\"> feed")
        );
        assert_eq!(
            back[1],
            Outline {
                url: "https://y.org/atom.xml".into(),
                title: Some("https://y.org/atom.xml".into())
            }
        );
        assert_eq!(back.len(), 2);
    }
}
