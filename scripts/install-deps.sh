#!/usr/bin/env bash
# Installs what ferry's tests need on a Debian machine: the real servers the integration
# tests run (as Debian packages), a running PostgreSQL on 127.0.0.1:5432, cargo-nextest,
# rustfmt and clippy. Idempotent: anything already there is left alone, so a second run
# costs a few seconds. Runs as root (or through sudo); never asks anything.
set -euo pipefail

# Debian packages the tests need. Append here; keep one per line.
PACKAGES=(
  prosody
  lua-unbound
  kannel
  kannel-extras
  dovecot-imapd
  dovecot-lmtpd
  dovecot-submissiond
  opensmtpd
  openssl
)

PG_URL_HOST=127.0.0.1
PG_PORT=5432

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo -n)
else
  echo "install-deps: run as root (or with sudo) to install packages" >&2
  SUDO=()
fi
export DEBIAN_FRONTEND=noninteractive

log() { printf 'install-deps: %s\n' "$*"; }

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

# --- Debian packages -------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
  installed "$p" || missing+=("$p")
done
# PostgreSQL only when there is neither a client nor a server on the machine.
if ! command -v psql >/dev/null 2>&1 && ! compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null; then
  missing+=(postgresql)
fi
# Node.js and npm (for the Prism mock) only when npm is missing: some machines carry
# NodeSource's nodejs, which bundles npm and conflicts with Debian's.
if ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  "${SUDO[@]}" apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null
else
  log "Debian packages present"
fi

# --- System mail daemons ------------------------------------------------------------------
# The mail tests run their own Dovecot and OpenSMTPD in the foreground on free loopback
# ports (tests/common/mail.rs). The system instances the packages start (on 25, 143, 993,
# 587) are not used: stop them and keep them from starting at boot. Works with systemd,
# with SysV init scripts, and in containers that have neither (there they never started).
for svc in dovecot opensmtpd; do
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    "${SUDO[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
  else
    if [ -x "/etc/init.d/$svc" ]; then
      "${SUDO[@]}" "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null 2>&1; then
      "${SUDO[@]}" update-rc.d "$svc" disable >/dev/null 2>&1 || true
    fi
  fi
done
# A daemon started outside any init system: end it through its own pid file.
for pidfile in /run/dovecot/master.pid /run/smtpd.pid; do
  if [ -s "$pidfile" ]; then
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && "${SUDO[@]}" kill -0 "$pid" 2>/dev/null; then
      log "stopping the system daemon with pid $pid ($pidfile)"
      "${SUDO[@]}" kill "$pid" 2>/dev/null || true
    fi
  fi
done

# --- PostgreSQL at 127.0.0.1:5432, trust auth for user postgres --------------------------
if command -v pg_isready >/dev/null 2>&1; then
  if ! pg_isready -q -h "$PG_URL_HOST" -p "$PG_PORT"; then
    if [ -d /etc/postgresql ] && command -v pg_ctlcluster >/dev/null 2>&1; then
      version=$(ls /etc/postgresql | sort -V | tail -n 1)
      log "starting PostgreSQL $version"
      "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    fi
    for _ in $(seq 1 60); do
      pg_isready -q -h "$PG_URL_HOST" -p "$PG_PORT" && break
      sleep 0.5
    done
  fi
  if pg_isready -q -h "$PG_URL_HOST" -p "$PG_PORT"; then
    # The tests connect as postgres without a password over loopback.
    if ! psql -h "$PG_URL_HOST" -p "$PG_PORT" -U postgres -w -Atqc 'select 1' postgres >/dev/null 2>&1; then
      hba=$(ls /etc/postgresql/*/main/pg_hba.conf 2>/dev/null | sort -V | tail -n 1 || true)
      if [ -n "$hba" ]; then
        log "allowing trust auth on 127.0.0.1 in $hba"
        "${SUDO[@]}" sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        version=$(basename "$(dirname "$(dirname "$hba")")")
        "${SUDO[@]}" pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true
      fi
    fi
    log "PostgreSQL ready at $PG_URL_HOST:$PG_PORT"
  else
    log "WARNING: PostgreSQL is not reachable at $PG_URL_HOST:$PG_PORT" >&2
  fi
fi

# --- Rust tools --------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is not on PATH; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  cargo fmt --version >/dev/null 2>&1 || rustup component add rustfmt
  cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "installing cargo-nextest"
  cargo install --locked cargo-nextest
fi
# --- Prism, the validating mock of the Twilio Messages API (from npm) ---------------------
# The SMS tests look for it at $FERRY_TOOLS/prism/node_modules/.bin/prism.
FERRY_TOOLS="${FERRY_TOOLS:-/opt/ferry-tools}"
if [ ! -x "$FERRY_TOOLS/prism/node_modules/.bin/prism" ]; then
  log "installing @stoplight/prism-cli@5 into $FERRY_TOOLS/prism"
  "${SUDO[@]}" mkdir -p "$FERRY_TOOLS/prism"
  "${SUDO[@]}" npm install --silent --no-audit --no-fund --prefix "$FERRY_TOOLS/prism" @stoplight/prism-cli@5 </dev/null
else
  log "prism present"
fi
log "done"
