//! The fuzz targets' bodies (`fuzz/fuzz_targets/{feed,opml}.rs`) run in CI over every
//! fixture and a few thousand deterministic mutations of them: bytes → `parse_feed` →
//! every `Entry::body()`, and bytes → `opml::parse` → `opml::write`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ferry_rss::opml;
use ferry_rss::parse::{MAX_ENTRIES, MAX_KEY_BYTES, SUMMARY_CHARS, TITLE_CHARS, parse_feed};

/// What the feed fuzz target checks for one input.
fn feed_body(data: &[u8]) {
    if let Ok(feed) = parse_feed(data, "https://fuzz.example/feed") {
        assert!(feed.entries.len() <= MAX_ENTRIES);
        for e in &feed.entries {
            let body = e.body();
            assert!(!body.is_empty());
            assert!(e.key.len() <= MAX_KEY_BYTES);
            assert!(e.summary.chars().count() <= SUMMARY_CHARS);
            assert!(
                e.title
                    .as_ref()
                    .is_none_or(|t| t.chars().count() <= TITLE_CHARS)
            );
            assert!(
                !body.chars().any(|c| c < ' ' && c != '\n'),
                "{body:?} {e:?}"
            );
        }
    }
}

/// What the OPML fuzz target checks for one input.
fn opml_body(data: &[u8]) {
    if let Ok(outlines) = opml::parse(data) {
        assert!(outlines.len() <= opml::MAX_OUTLINES);
        let doc = opml::write("fuzz", &outlines);
        let again = opml::parse(doc.as_bytes()).expect("ferry's own OPML reads back");
        assert_eq!(again.len(), outlines.len());
    }
}

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

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the parsers, spliced in by the mutations.
const TOKENS: &[&[u8]] = &[
    b"<",
    b">",
    b"</",
    b"/>",
    b"&",
    b"&amp;",
    b"&#",
    b"&#x",
    b";",
    b"\"",
    b"'",
    b"<![CDATA[",
    b"]]>",
    b"<!DOCTYPE x [<!ENTITY a \"b\">]>",
    b"<item>",
    b"</item>",
    b"<entry>",
    b"</entry>",
    b"<description>",
    b"</description>",
    b"<content type=\"xhtml\">",
    b"</content>",
    b"<br>",
    b"<p>",
    b"\xff",
    b"\xc3",
    b"\x00",
    b"{",
    b"}",
    b"\"items\":[",
    b"<outline xmlUrl=\"",
    b"<author>\xc2\xabx@example.org\xc2\xbb</author>",
    b"\xe2\x80\x99x@example.org",
    b"<?xml version=\"1.0\" encoding=\"latin1\"?>",
    b"<?xml version=\"1.0\"         encoding=\"windows-1252\"        standalone=\"yes\"?>",
    b"encoding=\"utf-16\"",
    b"encoding=\"shift_jis\"",
];

fn mutate(rng: &mut XorShift, input: &[u8]) -> Vec<u8> {
    let mut data = input.to_vec();
    for _ in 0..=rng.below(4) {
        let len = data.len();
        match rng.below(6) {
            0 if len > 0 => {
                // Flip a byte.
                let i = rng.below(len);
                data[i] = (rng.next() & 0xff) as u8;
            }
            1 if len > 0 => {
                // Cut the document short.
                data.truncate(rng.below(len));
            }
            2 if len > 1 => {
                // Delete a span.
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                data.drain(a..b);
            }
            3 => {
                // Splice in a token.
                let at = rng.below(len + 1);
                let t = TOKENS[rng.below(TOKENS.len())];
                data.splice(at..at, t.iter().copied());
            }
            4 if len > 2 => {
                // Duplicate a span.
                let a = rng.below(len);
                let b = (a + 1 + rng.below(256)).min(len);
                let span = data[a..b].to_vec();
                let at = rng.below(len + 1);
                data.splice(at..at, span);
            }
            _ => data.push((rng.next() & 0xff) as u8),
        }
    }
    data
}

fn fixture_files() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut out = Vec::new();
    collect(&root, &mut out);
    out.sort();
    out
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p
            .extension()
            .is_some_and(|x| matches!(x.to_str(), Some("xml" | "rdf" | "json" | "atom" | "opml")))
        {
            out.push(p);
        }
    }
}

#[test]
fn fuzz_bodies_hold_on_fixtures_and_mutations() {
    // `parse_feed` catches a panic in feed-rs so that a feed cannot take ferry down; the
    // fuzzer (whose panic hook aborts) and this test still count it as a failure.
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let files = fixture_files();
    assert!(files.len() >= 7, "fixtures missing: {files:?}");
    let inputs: Vec<Vec<u8>> = files.iter().filter_map(|p| std::fs::read(p).ok()).collect();
    for data in &inputs {
        feed_body(data);
        opml_body(data);
    }
    // Small inputs get most of the mutations (they are cheap); every file gets some.
    let mut rng = XorShift(0x5eed_f00d_dead_beef);
    let small: Vec<&Vec<u8>> = inputs.iter().filter(|d| d.len() < 16 * 1024).collect();
    let mut runs = 0;
    for data in &inputs {
        let m = mutate(&mut rng, data);
        feed_body(&m);
        runs += 1;
    }
    for _ in 0..3000 {
        let base = small[rng.below(small.len())];
        let m = mutate(&mut rng, base);
        feed_body(&m);
        opml_body(&m);
        runs += 1;
    }
    let opml_seed = opml::write(
        "seed",
        &[
            opml::Outline {
                url: "https://a.example/feed".into(),
                title: Some("A & B".into()),
            },
            opml::Outline {
                url: "https://b.example/rss".into(),
                title: None,
            },
        ],
    );
    for _ in 0..1000 {
        let m = mutate(&mut rng, opml_seed.as_bytes());
        opml_body(&m);
        runs += 1;
    }
    assert!(runs >= 4000);
    assert_eq!(
        PANICS.load(Ordering::SeqCst),
        0,
        "a parser panicked (see above)"
    );
}
