#!/usr/bin/env bash
# Runs ferry's whole test suite: the one command that README and CI both use.
# Extra arguments go to the test runner (e.g. `scripts/test.sh -E 'test(restart)'` with
# nextest). The suite always runs against SQLite, and against PostgreSQL at
# FERRY_TEST_PG_URL (set it to an empty string to skip those).
set -euo pipefail
cd "$(dirname "$0")/.."

export FERRY_TEST_PG_URL="${FERRY_TEST_PG_URL-postgres://postgres@127.0.0.1:5432/postgres}"

# Doctests first, and only when there are any, so that the runner's closing line is the
# main suite's and not "0 passed".
if grep -rqs --include='*.rs' -E '^\s*(//[/!]).*```' src bridges/*/src; then
  cargo test --workspace --doc
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --lib --bins --tests --no-fail-fast "$@"
else
  echo "test.sh: cargo-nextest not found, using cargo test (scripts/install-deps.sh installs it)" >&2
  cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
fi
