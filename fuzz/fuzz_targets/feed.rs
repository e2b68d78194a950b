//! Feed bytes → messages: `parse_feed`, then every entry's chat message.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run feed -- -max_total_time=60` from the repository
//! root (seed inputs: `bridges/rss/tests/fixtures`). The same checks run in CI over the
//! fixtures and deterministic mutations (`bridges/rss/tests/fuzz_body.rs`).

#![no_main]

use ferry_rss::parse::{MAX_ENTRIES, MAX_KEY_BYTES, SUMMARY_CHARS, TITLE_CHARS, parse_feed};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
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
            assert!(!body.chars().any(|c| c < ' ' && c != '\n'));
        }
    }
});
