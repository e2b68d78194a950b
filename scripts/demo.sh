#!/usr/bin/env bash
# Runs a working ferry gateway against a local Prosody, all of it kept in ./demo/:
#
#   scripts/demo.sh
#
# Installs Prosody if it is missing (Debian, as root or through sudo), builds ferry, writes
# demo/prosody.cfg.lua and demo/ferry.toml, creates the users alice/alice and bob/bob on
# "localhost", starts Prosody in the background and ferry in the foreground. Ctrl-C stops
# ferry, then Prosody. Running it again reuses demo/ (database, credentials key, component
# secret, rosters); delete demo/ to start from scratch.
#
# Ports (all on 127.0.0.1), overridable from the environment:
#   DEMO_C2S_PORT        client connections to Prosody   (default 5222)
#   DEMO_COMPONENT_PORT  Prosody's XEP-0114 listener      (default 5347)
#   DEMO_HTTP_PORT       ferry's /healthz and /metrics    (default 8080)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEMO=$ROOT/demo

C2S_PORT=${DEMO_C2S_PORT:-5222}
COMPONENT_PORT=${DEMO_COMPONENT_PORT:-5347}
HTTP_PORT=${DEMO_HTTP_PORT:-8080}
DOMAIN=localhost
GATEWAY=rss.localhost

PROSODY_PID=
FERRY_PID=

say() { printf 'demo: %s\n' "$*" >&2; }
die() {
  printf 'demo: error: %s\n' "$*" >&2
  exit 1
}

for var in C2S_PORT COMPONENT_PORT HTTP_PORT; do
  port=${!var}
  if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    die "DEMO_$var must be a port number (1-65535), not '$port'"
  fi
done
if [ "$C2S_PORT" = "$COMPONENT_PORT" ] || [ "$C2S_PORT" = "$HTTP_PORT" ] ||
  [ "$COMPONENT_PORT" = "$HTTP_PORT" ]; then
  die "DEMO_C2S_PORT, DEMO_COMPONENT_PORT and DEMO_HTTP_PORT must differ"
fi

# --- Prosody -----------------------------------------------------------------------------
installed_now=false
if ! command -v prosody >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
  elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    die "Prosody is not installed; run this script as root (or install the Debian packages prosody and lua-unbound)"
  fi
  command -v apt-get >/dev/null 2>&1 ||
    die "Prosody is not installed and this is not a Debian-like system; install Prosody 0.12 yourself"
  say "installing Prosody (apt-get install prosody lua-unbound)"
  "${SUDO[@]}" apt-get update
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y prosody lua-unbound
  installed_now=true
fi
# The Debian package starts a system-wide Prosody where systemd runs; it would hold port
# 5222. Stop the one this script just installed; a system Prosody that was already there
# is the admin's business (the port check below explains what to do).
if $installed_now && command -v systemctl >/dev/null 2>&1 &&
  systemctl is-active --quiet prosody 2>/dev/null; then
  say "stopping the system Prosody service that the package just started (it holds port 5222)"
  "${SUDO[@]}" systemctl stop prosody || true
fi

# --- ferry -------------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 ||
  die "cargo is not on PATH; install Rust first (https://rustup.rs)"
say "building ferry (cargo build --release --bin ferry)"
cargo build --release --bin ferry
target_dir=$(cargo metadata --format-version 1 --no-deps |
  grep -o '"target_directory":"[^"]*"' | head -n 1 | cut -d'"' -f4)
FERRY=${target_dir:-$ROOT/target}/release/ferry
[ -x "$FERRY" ] || die "the build did not produce $FERRY"

# --- Leftovers of an earlier run that was killed without cleaning up ----------------------
# Only processes whose command line names this demo's own config files are stopped.
stop_pid() { # pid, name
  local pid=$1 name=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do # up to 10 s
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  say "$name (pid $pid) did not stop within 10s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
}
stale() { # pidfile, text its command line must contain
  local pid
  [ -f "$1" ] || return 1
  pid=$(tr -dc '0-9' <"$1")
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$2" && echo "$pid"
}
if pid=$(stale "$DEMO/ferry.pid" "$DEMO/ferry.toml"); then
  say "stopping ferry left over from an earlier demo run (pid $pid)"
  stop_pid "$pid" ferry
fi
if pid=$(stale "$DEMO/prosody.pid" "$DEMO/prosody.cfg.lua"); then
  say "stopping Prosody left over from an earlier demo run (pid $pid)"
  stop_pid "$pid" Prosody
fi
rm -f "$DEMO/ferry.pid" "$DEMO/prosody.pid"

# --- Ports -------------------------------------------------------------------------------
listening() { # port -> true if something listens on it (any address)
  if command -v ss >/dev/null 2>&1; then
    [ -n "$(ss -Hltn "( sport = :$1 )" 2>/dev/null)" ]
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
  fi
}
holder() { # port -> "(held by …)" when ss can tell
  local who
  who=$(ss -Hltnp "( sport = :$1 )" 2>/dev/null | grep -o 'users:(("[^"]*"' | head -n 1 | cut -d'"' -f2 || true)
  [ -n "$who" ] && printf ' (held by %s)' "$who"
  return 0
}
if listening "$C2S_PORT"; then
  hint="stop that server, or pick another port: DEMO_C2S_PORT=5223 scripts/demo.sh"
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prosody 2>/dev/null; then
    hint="it looks like the system Prosody: stop it with 'systemctl stop prosody', or pick another port: DEMO_C2S_PORT=5223 scripts/demo.sh"
  fi
  die "port $C2S_PORT (XMPP client connections) is already in use$(holder "$C2S_PORT"): $hint"
fi
if listening "$COMPONENT_PORT"; then
  die "port $COMPONENT_PORT (XEP-0114 components) is already in use$(holder "$COMPONENT_PORT"); pick another: DEMO_COMPONENT_PORT=5348 scripts/demo.sh"
fi
if listening "$HTTP_PORT"; then
  die "port $HTTP_PORT (ferry's HTTP) is already in use$(holder "$HTTP_PORT"); pick another: DEMO_HTTP_PORT=8081 scripts/demo.sh"
fi

# --- demo/ -------------------------------------------------------------------------------
mkdir -p "$DEMO/data/$DOMAIN/accounts" "$DEMO/certs"
# Made once and kept: Prosody and ferry must agree on it across runs.
if [ ! -s "$DEMO/rss.secret" ]; then
  (
    umask 077
    od -An -N24 -tx1 /dev/urandom | tr -d ' \n' >"$DEMO/rss.secret"
    echo >>"$DEMO/rss.secret"
  )
  say "generated the component secret in demo/rss.secret"
fi
SECRET=$(tr -dc '0-9a-f' <"$DEMO/rss.secret")
[ -n "$SECRET" ] || die "demo/rss.secret is empty or not hex; delete it and run again"

# Users live in Prosody's internal_plain storage; "localhost" needs no %-encoding.
for user in alice bob; do
  file=$DEMO/data/$DOMAIN/accounts/$user.dat
  [ -f "$file" ] || printf 'return { ["password"] = "%s" };\n' "$user" >"$file"
done

# Rewritten on every run so that the port variables take effect.
cat >"$DEMO/prosody.cfg.lua" <<EOF
-- Written by scripts/demo.sh (rewritten on each run): a loopback-only Prosody for the
-- ferry demo. No TLS, no s2s, no HTTP; plaintext authentication is allowed because
-- nothing but 127.0.0.1 can reach it.
run_as_root = true
daemonize = false
pidfile = "$DEMO/prosody.pid"
data_path = "$DEMO/data"
certificates = "$DEMO/certs"
log = { { levels = { min = "info" }, to = "file", filename = "$DEMO/prosody.log" } }

interfaces = { "127.0.0.1" }
local_interfaces = { "127.0.0.1" }
c2s_ports = { $C2S_PORT }
c2s_direct_tls_ports = {}
legacy_ssl_ports = {}
s2s_ports = {}
http_ports = {}
https_ports = {}
component_ports = { $COMPONENT_PORT }
component_interfaces = { "127.0.0.1" }

authentication = "internal_plain"
storage = "internal"
c2s_require_encryption = false
allow_unencrypted_plain_auth = true

modules_enabled = {
  "roster", "saslauth", "disco", "ping", "carbons", "pep", "private", "blocklist",
  "vcard_legacy", "version", "time", "uptime",
}
modules_disabled = { "s2s" }

VirtualHost "$DOMAIN"

Component "$GATEWAY"
    component_secret = "$SECRET"
EOF

cat >"$DEMO/ferry.toml" <<EOF
# Written by scripts/demo.sh (rewritten on each run). Every key: config/ferry.example.toml.
# Relative paths (the database, the key file, the secret) are relative to this folder.

[xmpp]
host = "127.0.0.1"
port = $COMPONENT_PORT
allowed = ["$DOMAIN"]
admins = ["alice@$DOMAIN"]

[database]
url = "sqlite://ferry.db"

[http]
listen = "127.0.0.1:$HTTP_PORT"

[secrets]
key_file = "ferry.key"

[rss]
domain = "$GATEWAY"
secret = "file:rss.secret"
min_interval = "5m"

[log]
level = "info"
EOF

# --- Run ---------------------------------------------------------------------------------
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ -n "$FERRY_PID" ] && kill -0 "$FERRY_PID" 2>/dev/null; then
    say "stopping ferry"
    kill -TERM "$FERRY_PID" 2>/dev/null || true
    # ferry finishes in-flight sends first (at most 30 s).
    for _ in $(seq 1 350); do
      kill -0 "$FERRY_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$FERRY_PID" 2>/dev/null; then
      say "ferry did not stop within 35s; killing it"
      kill -KILL "$FERRY_PID" 2>/dev/null || true
    fi
  fi
  if [ -n "$PROSODY_PID" ]; then
    say "stopping Prosody"
    stop_pid "$PROSODY_PID" Prosody
  fi
  rm -f "$DEMO/ferry.pid"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting Prosody on 127.0.0.1:$C2S_PORT (log: demo/prosody.log)"
# Only what this run logs counts: the log is appended to across runs.
log_from=$(($(stat -c %s "$DEMO/prosody.log" 2>/dev/null || echo 0) + 1))
# In its own session, so that Ctrl-C reaches ferry first and Prosody is stopped after it.
(cd "$DEMO" && exec setsid prosody -F --config "$DEMO/prosody.cfg.lua") \
  </dev/null >>"$DEMO/prosody.log" 2>&1 &
PROSODY_PID=$!

deadline=$((SECONDS + 20))
until (exec 3<>"/dev/tcp/127.0.0.1/$C2S_PORT") 2>/dev/null &&
  (exec 3<>"/dev/tcp/127.0.0.1/$COMPONENT_PORT") 2>/dev/null; do
  if ! kill -0 "$PROSODY_PID" 2>/dev/null; then
    PROSODY_PID=
    tail -n 20 "$DEMO/prosody.log" >&2 || true
    die "Prosody exited during startup (see demo/prosody.log above)"
  fi
  if tail -c "+$log_from" "$DEMO/prosody.log" 2>/dev/null | grep "Failed to open server port" >&2; then
    die "Prosody could not open its ports (another program took one); see demo/prosody.log"
  fi
  [ "$SECONDS" -lt "$deadline" ] ||
    die "Prosody did not accept connections on port $C2S_PORT within 20s; see demo/prosody.log"
  sleep 0.1
done

"$FERRY" check --config "$DEMO/ferry.toml"

cat <<EOF

==================================================================================
 ferry demo: Prosody on 127.0.0.1:$C2S_PORT, ferry's RSS gateway at $GATEWAY
==================================================================================
 Log in with any XMPP client (Gajim, Dino, Profanity, ...):
   user alice@$DOMAIN  password alice   (also bob@$DOMAIN / bob)
   server 127.0.0.1  port $C2S_PORT
   This Prosody has no TLS: allow plaintext / unencrypted connections in the
   account's settings (fine on loopback, nowhere else). With Profanity:
     /connect alice@$DOMAIN server 127.0.0.1 port $C2S_PORT tls disable

 The gateway is $GATEWAY:
   - discover it: browse the services of $DOMAIN (or query $GATEWAY directly)
   - register with it (no fields to fill in); it asks to join your contacts
   - use its gateway prompt (XEP-0100) with a feed address such as
     https://xkcd.com/atom.xml, or simply add the contact xkcd.com@$GATEWAY
   - send "help" or "status" to $GATEWAY; alice is an admin: "stats", "users"
   This build does not fetch feeds yet: the contacts exist, entries do not arrive.

 HTTP:  http://127.0.0.1:$HTTP_PORT/healthz   http://127.0.0.1:$HTTP_PORT/metrics
 Files: demo/ferry.toml, demo/prosody.cfg.lua, demo/prosody.log, demo/ferry.db
 Ctrl-C stops ferry and Prosody. Delete demo/ to start from scratch.
==================================================================================

EOF

"$FERRY" run --config "$DEMO/ferry.toml" </dev/null &
FERRY_PID=$!
echo "$FERRY_PID" >"$DEMO/ferry.pid"
status=0
wait "$FERRY_PID" || status=$?
FERRY_PID=
exit "$status"
