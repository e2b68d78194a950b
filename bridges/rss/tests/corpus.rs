//! The corpus of real-world feeds (`tests/fixtures/corpus/feeds`, copied from feedjira's
//! sample feeds, see `SOURCES.md` there): every feed that Python's feedparser reads,
//! ferry reads too.

use std::path::PathBuf;

use ferry_rss::parse::{MAX_KEY_BYTES, SUMMARY_CHARS, parse_feed};

/// Corpus files that feedparser gets no entries from either, so ferry need not.
/// `benches/feeds/feedparser_bench.py` lists what feedparser reads: with feedparser 6.0
/// it read every one of the 164 files (two of them, CoryForsyth and NotSoStupid, as
/// "bozo" documents that are not well-formed XML), so the list is empty.
const FEEDPARSER_FAILS_TOO: &[&str] = &[];

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/feeds")
}

#[test]
fn corpus_feeds_all_parse() {
    let dir = corpus_dir();
    let Ok(read_dir) = std::fs::read_dir(&dir) else {
        println!("skipped: no corpus at {}", dir.display());
        return;
    };
    let mut paths: Vec<PathBuf> = read_dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    let mut failures = Vec::new();
    let mut files = 0;
    let mut entries = 0;
    for path in &paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(path).expect("read corpus file");
        files += 1;
        let result = parse_feed(&bytes, "https://example.org/feed.xml");
        if FEEDPARSER_FAILS_TOO.contains(&name.as_str()) {
            continue;
        }
        match result {
            Ok(feed) if !feed.entries.is_empty() => {
                entries += feed.entries.len();
                assert!(feed.title.is_some(), "{name}: no title");
                for e in &feed.entries {
                    assert!(!e.body().is_empty(), "{name}");
                    assert!(e.key.len() <= MAX_KEY_BYTES, "{name}: {}", e.key);
                    assert!(e.summary.chars().count() <= SUMMARY_CHARS, "{name}");
                    if let Some(link) = &e.link {
                        assert!(link.starts_with("http"), "{name}: {link}");
                    }
                }
            }
            Ok(_) => failures.push(format!("{name}: no entries")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "not read: {failures:#?}");
    assert_eq!(files, 164, "the corpus should have its 164 files");
    // feedparser 6.0 finds 2254 entries in the corpus; ferry finds the same.
    assert_eq!(entries, 2254);
}
