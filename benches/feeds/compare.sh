#!/usr/bin/env bash
# Feed bytes → messages: ferry's `parse` bench beside Python's feedparser on the same
# corpus, in one run, and the ratio between them (target: ferry at least 40× faster).
#
#   bash benches/feeds/compare.sh            # the corpus in bridges/rss/tests/fixtures
#   CORPUS=/path/to/feeds bash benches/feeds/compare.sh
#   FERRY_BENCH_ITERS=30 FEEDPARSER_ITERS=5 bash benches/feeds/compare.sh
#
# feedparser is installed from PyPI into a venv under target/ when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."

corpus=$(cd "${CORPUS:-bridges/rss/tests/fixtures/corpus/feeds}" && pwd)  # absolute: cargo bench runs in the crate's dir
venv=${FEEDPARSER_VENV:-target/feedparser-venv}
ferry_iters=${FERRY_BENCH_ITERS:-30}
fp_iters=${FEEDPARSER_ITERS:-5}

if ! "$venv/bin/python" -c 'import feedparser' 2>/dev/null; then
  echo "installing feedparser into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet feedparser
fi

echo "machine: $(nproc) cores, $(uname -sr), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
echo "corpus: $corpus ($(find "$corpus" -type f | wc -l) files, $(du -sh "$corpus" | cut -f1))"
echo "feedparser $("$venv/bin/python" -c 'import feedparser; print(feedparser.__version__)'), $("$venv/bin/python" --version 2>&1)"
echo

cargo bench -q -p ferry-rss --bench parse --no-run 2>/dev/null || cargo bench -p ferry-rss --bench parse --no-run
ferry_out=$(FERRY_BENCH_CORPUS="$corpus" FERRY_BENCH_ITERS="$ferry_iters" \
  cargo bench -q -p ferry-rss --bench parse)
echo "$ferry_out" | grep -v '^ferry:' || true
ferry_line=$(echo "$ferry_out" | grep '^ferry:')
echo "$ferry_line"

fp_line=$("$venv/bin/python" benches/feeds/feedparser_bench.py --quiet --iterations "$fp_iters" "$corpus")
echo "$fp_line"
echo

python3 - "$ferry_line" "$fp_line" <<'PY'
import sys
def fields(line):
    return dict(kv.split("=", 1) for kv in line.split()[1:])
f, p = fields(sys.argv[1]), fields(sys.argv[2])
by_rate = float(f["feeds_per_s"]) / float(p["feeds_per_s"])
by_median = float(p["median_ms"]) / float(f["median_ms"])
print(f"ferry read {f['read']}/{f['feeds']} feeds ({f['entries']} entries), "
      f"feedparser {p['read']}/{p['feeds']} ({p['entries']} entries)")
print(f"ferry:      {float(f['feeds_per_s']):9.1f} feeds/s {float(f['entries_per_s']):10.1f} entries/s "
      f"{float(f['mb_per_s']):8.2f} MB/s  (median pass {f['median_ms']} ms)")
print(f"feedparser: {float(p['feeds_per_s']):9.1f} feeds/s {float(p['entries_per_s']):10.1f} entries/s "
      f"{float(p['mb_per_s']):8.2f} MB/s  (median pass {p['median_ms']} ms)")
print(f"ratio: {by_rate:.1f}x by throughput, {by_median:.1f}x by median pass (target: 40x)")
PY
