//! The hand-written fixture feeds in `tests/fixtures/`: one per format and per kind of
//! breakage that ferry must read anyway.

use std::path::PathBuf;
use std::time::Duration;

use ferry_rss::parse::{Entry, Feed, parse_feed};

const FEED_URL: &str = "https://feeds.example.org/dir/feed";

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(name: &str) -> Feed {
    parse_feed(&fixture(name), FEED_URL).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn titles(feed: &Feed) -> Vec<&str> {
    feed.entries
        .iter()
        .map(|e| e.title.as_deref().unwrap_or("-"))
        .collect()
}

fn keys(feed: &Feed) -> Vec<&str> {
    feed.entries.iter().map(|e| e.key.as_str()).collect()
}

/// Whether feed-rs alone refuses the bytes (so ferry's fallback is what reads them).
fn feed_rs_refuses(bytes: &[u8]) -> bool {
    feed_rs::parser::parse(bytes).is_err()
}

#[test]
fn rss091_with_a_doctype_and_html_entities() {
    let feed = parse("rss091-doctype.xml");
    assert_eq!(feed.title.as_deref(), Some("Café Notes — Daily"));
    assert_eq!(feed.site_link.as_deref(), Some("http://cafe.example.com/"));
    assert_eq!(
        feed.icon.as_deref(),
        Some("http://cafe.example.com/images/logo.gif")
    );
    assert_eq!(feed.skip_hours, vec![1, 2, 3]);
    assert_eq!(feed.ttl, None);
    // No dates: document order.
    assert_eq!(titles(&feed), ["Crème brûlée & more", "Opening hours"]);
    assert_eq!(
        keys(&feed),
        [
            "link:http://cafe.example.com/2001/03/creme",
            // A relative link is resolved against the feed's URL.
            "link:https://feeds.example.org/2001/03/hours",
        ]
    );
    assert_eq!(feed.entries[0].summary, "Today’s special: crème brûlée…");
    assert_eq!(feed.entries[1].summary, "Open 7–11, © Café");
}

#[test]
fn rss091_doctype_with_an_internal_subset_is_not_expanded() {
    let doc = String::from_utf8(fixture("rss091-doctype.xml")).expect("utf-8");
    let doc = doc.replace(
        "\"http://my.netscape.com/publish/formats/rss-0.91.dtd\">",
        "\"http://my.netscape.com/publish/formats/rss-0.91.dtd\" [\
         <!ENTITY lol \"lollollollollollollollollollol\">\
         <!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">]>",
    );
    let doc = doc.replace(
        "<title>Opening hours</title>",
        "<title>&lol2; hours</title>",
    );
    let feed = parse_feed(doc.as_bytes(), FEED_URL).expect("parses");
    assert_eq!(feed.entries.len(), 2);
    let title = feed.entries[1].title.as_deref().unwrap_or_default();
    assert!(!title.contains("lollol"), "{title}");
    assert!(title.ends_with("hours"), "{title}");
}

#[test]
fn rss1_rdf() {
    let feed = parse("rss1.rdf");
    assert_eq!(feed.title.as_deref(), Some("RDF Site Summary"));
    assert_eq!(feed.site_link.as_deref(), Some("https://rdf.example.net/"));
    assert_eq!(
        feed.icon.as_deref(),
        Some("https://rdf.example.net/logo.png")
    );
    // Newest first, though the document lists the older item first.
    assert_eq!(titles(&feed), ["The newer item", "The older item"]);
    assert_eq!(
        keys(&feed),
        [
            "link:https://rdf.example.net/newer",
            "link:https://rdf.example.net/older"
        ]
    );
    let newer = &feed.entries[0];
    assert_eq!(newer.published_ms, Some(1_683_012_600_000)); // 2023-05-02T07:30:00Z
    assert_eq!(
        newer.summary,
        "Rich content with a link (https://rdf.example.net/more)."
    );
    assert_eq!(
        feed.entries[1].summary,
        "Plain description of the older item."
    );
}

#[test]
fn atom() {
    let feed = parse("atom.xml");
    assert_eq!(feed.title.as_deref(), Some("Atom & Eve"));
    // The alternate link, not the self link.
    assert_eq!(
        feed.site_link.as_deref(),
        Some("https://atom.example.org/blog/")
    );
    assert_eq!(
        feed.icon.as_deref(),
        Some("https://atom.example.org/favicon.png")
    );
    assert_eq!(feed.updated_ms, Some(1_709_467_200_000));
    assert_eq!(titles(&feed), ["Third post", "Second post", "First post"]);
    assert_eq!(
        keys(&feed),
        [
            "id:tag:atom.example.org,2024:3",
            "id:tag:atom.example.org,2024:2",
            "id:tag:atom.example.org,2024:1"
        ]
    );
    let links: Vec<_> = feed.entries.iter().map(|e| e.link.as_deref()).collect();
    assert_eq!(
        links,
        [
            Some("https://atom.example.org/blog/posts/3"),
            // xml:base applies; the "replies" link is not the entry's link.
            Some("https://atom.example.org/blog/posts/2"),
            Some("https://atom.example.org/blog/posts/1"),
        ]
    );
    // type="text" stays text; type="html" is converted, its script dropped.
    assert_eq!(feed.entries[0].summary, "Just plain text <not a tag>");
    assert_eq!(feed.entries[1].summary, "The second post.");
    assert_eq!(feed.entries[1].published_ms, Some(1_709_373_600_000));
    // XHTML content: paragraphs, a resolved link, a list.
    assert_eq!(
        feed.entries[2].summary,
        "Hello about me (https://atom.example.org/about).\n\n• one\n• two"
    );
    assert_eq!(
        feed.entries[2].body(),
        "First post\nhttps://atom.example.org/blog/posts/1\n\n\
         Hello about me (https://atom.example.org/about).\n\n• one\n• two"
    );
}

#[test]
fn json_feed() {
    let feed = parse("feed.json");
    assert_eq!(feed.title.as_deref(), Some("JSON Journal"));
    assert_eq!(feed.site_link.as_deref(), Some("https://json.example.com/"));
    assert!(
        feed.icon
            .as_deref()
            .is_some_and(|i| i.starts_with("https://json.example.com/")),
        "{:?}",
        feed.icon
    );
    assert_eq!(keys(&feed), ["id:3", "id:2", "id:1"]);
    let third = &feed.entries[0];
    assert_eq!(third.title, None);
    assert_eq!(third.link, None);
    // content_text is plain text: its "tags" are kept as written.
    assert_eq!(
        third.summary,
        "An untitled note without a link, in plain text <b>kept</b>"
    );
    assert_eq!(third.body(), third.summary);
    assert_eq!(feed.entries[1].summary, "Second item & its HTML");
    assert_eq!(feed.entries[2].summary, "A short summary");
    assert_eq!(feed.entries[2].published_ms, Some(1_706_788_800_000));
}

#[test]
fn rss2_guids_links_and_hashes() {
    let feed = parse("rss2-guid.xml");
    assert_eq!(feed.title.as_deref(), Some("GUID Gazette"));
    assert_eq!(feed.site_link.as_deref(), Some("https://guid.example.com/"));
    assert_eq!(
        feed.icon.as_deref(),
        Some("https://guid.example.com/logo.png")
    );
    assert_eq!(feed.ttl, Some(Duration::from_secs(120 * 60)));
    assert_eq!(feed.skip_hours, vec![0, 22, 23]);
    assert_eq!(
        titles(&feed),
        [
            "Permalink guid",
            "Not a permalink",
            "No guid",
            "Neither guid nor link"
        ]
    );
    let k = keys(&feed);
    assert_eq!(k[0], "id:https://guid.example.com/b");
    assert_eq!(k[1], "id:gazette-item-a");
    assert_eq!(k[2], "link:https://feeds.example.org/c");
    assert!(k[3].starts_with("hash:") && k[3].len() == 45, "{}", k[3]);
    // A permalink guid is the link when there is no <link>.
    assert_eq!(
        feed.entries[0].link.as_deref(),
        Some("https://guid.example.com/b")
    );
    assert_eq!(
        feed.entries[0].summary,
        "Only content:encoded here, with a relative link (https://guid.example.com/rel)."
    );
    assert_eq!(feed.entries[1].summary, "Item A text.\n\nSecond paragraph.");
    assert_eq!(feed.entries[2].summary, "Plain & simple");
    assert_eq!(feed.entries[3].link, None);
    assert_eq!(
        feed.entries[3].body(),
        "Neither guid nor link\n\nOnly words"
    );
    // The hash key is stable across parses.
    assert_eq!(parse("rss2-guid.xml").entries[3].key, k[3]);
}

#[test]
fn wrong_encoding_declaration() {
    let bytes = fixture("wrong-encoding.xml");
    assert!(
        feed_rs_refuses(&bytes),
        "the fixture should need the fallback"
    );
    let feed = parse("wrong-encoding.xml");
    assert_eq!(feed.title.as_deref(), Some("Café Crème “Quoted”"));
    let e = &feed.entries[0];
    assert_eq!(e.title.as_deref(), Some("Présentation – € 5"));
    assert_eq!(e.summary, "Voilà l’été");
    assert_eq!(e.key, "id:enc-1");
}

#[test]
fn broken_xml_stray_ampersands_entities_and_unclosed_tags() {
    let bytes = fixture("rss2-broken.xml");
    assert!(
        feed_rs_refuses(&bytes),
        "the fixture should need the fallback"
    );
    let feed = parse("rss2-broken.xml");
    assert_eq!(feed.title.as_deref(), Some("Tom & Jerry’s Broken Blog"));
    assert_eq!(titles(&feed), ["Fish & chips — a review", "Second …"]);
    let e = &feed.entries[0];
    assert_eq!(
        e.link.as_deref(),
        Some("https://broken.example.com/fish?a=1&b=2")
    );
    assert_eq!(e.summary, "Crispy\nand hot\n\n© 2024");
    assert_eq!(feed.entries[1].summary, "Fine & dandy");
}

#[test]
fn every_fixture_gives_messages() {
    for name in [
        "rss091-doctype.xml",
        "rss1.rdf",
        "atom.xml",
        "feed.json",
        "rss2-guid.xml",
        "wrong-encoding.xml",
        "rss2-broken.xml",
    ] {
        let feed = parse(name);
        assert!(!feed.entries.is_empty(), "{name}");
        for e in &feed.entries {
            let body = Entry::body(e);
            assert!(!body.trim().is_empty(), "{name}");
            assert!(!body.contains('\u{0}'), "{name}");
            assert!(e.key.len() <= 200, "{name}");
        }
    }
}
