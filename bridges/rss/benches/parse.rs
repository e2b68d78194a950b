//! Feed bytes → messages throughput on the corpus of real-world feeds
//! (`tests/fixtures/corpus/feeds`): `parse_feed`, then `Entry::body()` for every entry and
//! its de-duplication key looked up in a per-feed set, as the engine does.
//!
//! Run: `cargo bench -p ferry-rss --bench parse` (`FERRY_BENCH_ITERS=N` for more or fewer
//! iterations, `FERRY_BENCH_CORPUS=DIR` for another corpus). The last line is
//! machine-readable, in the same form as `benches/feeds/feedparser_bench.py`'s.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferry_rss::parse::parse_feed;

fn main() {
    let dir = std::env::var_os("FERRY_BENCH_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus/feeds")
        });
    let iterations: usize = std::env::var("FERRY_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .max(1);
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(e) => {
            eprintln!("cannot read {}: {e}", dir.display());
            std::process::exit(1);
        }
    };
    paths.retain(|p| p.is_file());
    paths.sort();
    let blobs: Vec<(String, Vec<u8>)> = paths
        .iter()
        .filter_map(|p| {
            let name = p.file_name()?.to_string_lossy().into_owned();
            std::fs::read(p).ok().map(|b| (name, b))
        })
        .collect();
    let bytes: usize = blobs.iter().map(|(_, b)| b.len()).sum();

    // One pass to count what is read (and to warm up).
    let mut read = 0;
    let mut entries_per_pass = 0;
    let mut failed = Vec::new();
    for (name, b) in &blobs {
        match parse_feed(b, "https://example.org/feed") {
            Ok(f) if !f.entries.is_empty() => {
                read += 1;
                entries_per_pass += f.entries.len();
            }
            Ok(_) => failed.push(format!("{name}: no entries")),
            Err(e) => failed.push(format!("{name}: {e}")),
        }
    }
    for f in &failed {
        println!("not read: {f}");
    }

    let mut times: Vec<Duration> = Vec::with_capacity(iterations);
    let mut sink = 0usize;
    for _ in 0..iterations {
        let t0 = Instant::now();
        for (_, b) in &blobs {
            if let Ok(feed) = parse_feed(b, "https://example.org/feed") {
                let mut seen: HashSet<&str> = HashSet::with_capacity(feed.entries.len());
                for e in &feed.entries {
                    if seen.insert(e.key.as_str()) {
                        sink += e.body().len();
                    }
                }
            }
        }
        times.push(t0.elapsed());
    }
    std::hint::black_box(sink);

    // For scale: feed-rs alone on the same bytes (no fallback, no text, no keys).
    let mut raw_times: Vec<Duration> = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t0 = Instant::now();
        for (_, b) in &blobs {
            if let Ok(feed) = feed_rs::parser::parse(&b[..]) {
                sink += feed.entries.len();
            }
        }
        raw_times.push(t0.elapsed());
    }
    std::hint::black_box(sink);
    raw_times.sort();
    let raw_median = raw_times
        .get(raw_times.len() / 2)
        .copied()
        .unwrap_or_default();
    let total: Duration = times.iter().sum();
    let secs = total.as_secs_f64();
    let best = times.iter().min().copied().unwrap_or_default();
    let mut sorted = times.clone();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let feeds = blobs.len() * iterations;
    let entries = entries_per_pass * iterations;
    println!(
        "per pass: mean {:.1} ms, median {:.1} ms, best {:.1} ms ({} feeds, {} entries, {:.2} MB)",
        secs * 1000.0 / iterations as f64,
        median.as_secs_f64() * 1000.0,
        best.as_secs_f64() * 1000.0,
        blobs.len(),
        entries_per_pass,
        bytes as f64 / 1e6
    );
    println!(
        "feed-rs alone: median {:.1} ms per pass (ferry adds {:.0}%)",
        raw_median.as_secs_f64() * 1000.0,
        (median.as_secs_f64() / raw_median.as_secs_f64().max(1e-9) - 1.0) * 100.0
    );
    println!(
        "ferry: feeds={} read={} entries={} bytes={} iterations={} seconds={:.3} median_ms={:.1} feeds_per_s={:.1} entries_per_s={:.1} mb_per_s={:.2}",
        blobs.len(),
        read,
        entries_per_pass,
        bytes,
        iterations,
        secs,
        median.as_secs_f64() * 1000.0,
        feeds as f64 / secs,
        entries as f64 / secs,
        (bytes * iterations) as f64 / secs / 1e6
    );
}
