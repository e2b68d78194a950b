#!/usr/bin/env python3
"""Python feedparser on the same corpus as ferry's `parse` bench, for comparison.

For every feed file in a directory: parse the bytes with feedparser, then build the
same message text ferry builds per entry (title, link, summary), and report per file
whether feedparser got entries (and whether it flagged the feed as broken, "bozo"),
the entry count and the time. The summary line is machine-readable:

    feedparser: feeds=164 read=164 entries=2254 bytes=9360431 iterations=3 seconds=7.98 \
        median_ms=2660.0 feeds_per_s=61.7 entries_per_s=847.4 mb_per_s=3.52

Usage: feedparser_bench.py [--iterations N] [--quiet] [DIR]
(DIR defaults to bridges/rss/tests/fixtures/corpus/feeds in this repository.)
"""

import argparse
import os
import statistics
import sys
import time

try:
    import feedparser
except ImportError:  # pragma: no cover - told to the user
    sys.exit("feedparser is not installed: pip install feedparser (compare.sh makes a venv)")


def messages(parsed):
    """The per-entry message text, as ferry builds it: title, link, summary."""
    out = []
    for e in parsed.entries:
        parts = []
        title = e.get("title")
        link = e.get("link")
        if title:
            parts.append(title)
        if link:
            parts.append(link)
        head = "\n".join(parts)
        summary = e.get("summary") or ""
        body = head + ("\n\n" + summary[:500] if summary else "")
        out.append(body or link or "(untitled entry)")
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default_dir = os.path.join(here, "..", "..", "bridges", "rss", "tests", "fixtures", "corpus", "feeds")
    ap = argparse.ArgumentParser()
    ap.add_argument("dir", nargs="?", default=default_dir)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--quiet", action="store_true", help="only print the summary line")
    args = ap.parse_args()

    names = sorted(n for n in os.listdir(args.dir) if os.path.isfile(os.path.join(args.dir, n)))
    blobs = []
    for n in names:
        with open(os.path.join(args.dir, n), "rb") as f:
            blobs.append((n, f.read()))
    total_bytes = sum(len(b) for _, b in blobs)

    # One pass to report per file (also warms up imports and caches).
    read = 0
    entries_per_pass = 0
    for name, data in blobs:
        t0 = time.perf_counter()
        parsed = feedparser.parse(data)
        msgs = messages(parsed)
        dt = time.perf_counter() - t0
        n = len(parsed.entries)
        entries_per_pass += n
        if n > 0:
            read += 1
        state = ("bozo" if parsed.bozo else "ok") if n > 0 else "fail"
        if not args.quiet:
            why = ""
            if parsed.bozo:
                why = "\t" + str(parsed.get("bozo_exception", "")).replace("\n", " ")[:100]
            print(f"{name}\t{state}\t{n}\t{dt * 1000:.1f}ms{why}")
        assert len(msgs) == n

    passes = []
    for _ in range(args.iterations):
        t0 = time.perf_counter()
        for _, data in blobs:
            messages(feedparser.parse(data))
        passes.append(time.perf_counter() - t0)
    secs = sum(passes)
    median_ms = statistics.median(passes) * 1000
    feeds = len(blobs) * args.iterations
    entries = entries_per_pass * args.iterations
    print(
        f"feedparser: feeds={len(blobs)} read={read} entries={entries_per_pass} bytes={total_bytes} "
        f"iterations={args.iterations} seconds={secs:.3f} median_ms={median_ms:.1f} feeds_per_s={feeds / secs:.1f} "
        f"entries_per_s={entries / secs:.1f} mb_per_s={total_bytes * args.iterations / secs / 1e6:.2f}"
    )


if __name__ == "__main__":
    main()
