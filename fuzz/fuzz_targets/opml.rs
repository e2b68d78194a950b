//! OPML bytes → outlines → ferry's own OPML, which must read back the same.
//!
//! Run: `RUSTC_BOOTSTRAP=1 cargo fuzz run opml -- -max_total_time=60` from the repository
//! root.

#![no_main]

use ferry_rss::opml;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(outlines) = opml::parse(data) {
        assert!(outlines.len() <= opml::MAX_OUTLINES);
        let doc = opml::write("fuzz", &outlines);
        let again = opml::parse(doc.as_bytes()).expect("ferry's own OPML reads back");
        assert_eq!(again.len(), outlines.len());
    }
});
