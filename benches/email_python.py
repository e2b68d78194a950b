"""The Python side of `benches/email.rs`: raw mail bytes -> what a bridge needs, with the
standard library's `email` package (policy.default, the modern API), over a corpus of .eml
files, looping for at least the given number of seconds.

Per message: `email.message_from_bytes(raw, policy=email.policy.default)`; the headers a
bridge reads (Subject, From with its display name, Message-ID, In-Reply-To, References);
then every part (`msg.walk()`), and for each non-multipart part `part.get_content()` (the
decoded text, or the bytes of an attachment), catching errors as a real consumer must.
Nothing is printed per message.

Usage: python3 email_python.py CORPUS_DIR [MIN_SECONDS]
Prints one line: `python messages=N bytes=B seconds=S passes=P msgs_per_s=X mb_per_s=Y
median_pass_ms=M errors=E parts=Q`, then `python version=...`.
"""

import email
import email.policy
import os
import sys
import time


def read_corpus(folder):
    names = sorted(n for n in os.listdir(folder) if n.endswith(".eml"))
    return [open(os.path.join(folder, n), "rb").read() for n in names]


def one(raw):
    """Returns (errors, parts) for one message."""
    errors = 0
    parts = 0
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    keep = []
    for name in ("subject", "from", "message-id", "in-reply-to", "references"):
        try:
            value = msg[name]
            if value is not None:
                keep.append(str(value))
                if name == "from":
                    # The display name and address, as a bridge shows the contact.
                    for a in getattr(value, "addresses", ()):
                        keep.append(a.display_name)
                        keep.append(a.addr_spec)
        except Exception:  # noqa: BLE001 - a real consumer skips a broken header
            errors += 1
    for part in msg.walk():
        if part.is_multipart():
            continue
        parts += 1
        try:
            content = part.get_content()
            keep.append(content if isinstance(content, (str, bytes)) else str(content))
            part.get_filename()
        except Exception:  # noqa: BLE001 - a real consumer skips a broken part
            errors += 1
    return errors, parts


def main():
    folder = sys.argv[1]
    min_seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    corpus = read_corpus(folder)
    total_bytes = sum(len(r) for r in corpus)
    # Warm-up pass (imports, caches), not timed.
    for raw in corpus:
        one(raw)
    passes = []
    errors = 0
    parts = 0
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        for raw in corpus:
            e, p = one(raw)
            errors += e
            parts += p
        passes.append(time.perf_counter() - t0)
        if time.perf_counter() - start >= min_seconds:
            break
    elapsed = time.perf_counter() - start
    messages = len(passes) * len(corpus)
    median = sorted(passes)[len(passes) // 2]
    print(
        "python messages=%d bytes=%d seconds=%.3f passes=%d msgs_per_s=%.1f mb_per_s=%.3f "
        "median_pass_ms=%.2f errors=%d parts=%d"
        % (
            messages,
            total_bytes * len(passes),
            elapsed,
            len(passes),
            messages / elapsed,
            total_bytes * len(passes) / elapsed / 1e6,
            median * 1e3,
            errors // len(passes),
            parts // len(passes),
        )
    )
    print("python version=%s" % sys.version.split()[0])


if __name__ == "__main__":
    main()
