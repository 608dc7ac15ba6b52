#!/usr/bin/env bash
# The feed's bad-input test: schemathesis (PyPI) generates requests from /openapi.json, hostile
# ones included (negative positions, huge limits, bad types, bad bodies), against a live
# `herald serve`, and checks every answer against the document (no 5xx, documented status codes,
# bodies that match their schema). The Rust twin is web/tests/feed.rs
# (`hostile_queries_and_tokens_never_break_the_feed`).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if ! command -v schemathesis >/dev/null; then
  pip install -q schemathesis
fi
(cd "$root" && cargo build -q -p herald-cli --bin herald && cargo build -q --example console --features web)
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# Waits for "$2" in log "$1" and prints the rest of that line.
wait_for_line() {
  local log=$1 prefix=$2 pid=$3
  for _ in $(seq 1 150); do
    local line
    line="$(sed -n "s|^$prefix||p" "$log")"
    if [ -n "$line" ]; then echo "$line"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; return 1; }
    sleep 0.2
  done
  cat "$log" >&2
  return 1
}

# A database with events and a dead letter: the console example makes one, then stops.
"$root/target/debug/examples/console" --db "$work/app.db" --bind 127.0.0.1:0 >"$work/example.log" 2>&1 &
pid=$!
pids+=("$pid")
wait_for_line "$work/example.log" "console: " "$pid" >/dev/null
kill "$pid"; wait "$pid" 2>/dev/null || true

token="schemathesis-$(date +%s%N)"
HERALD_FEED_CONSUMERS="schemathesis=$token" "$root/target/debug/herald" \
  --database-url "sqlite:$work/app.db" serve --bind 127.0.0.1:0 --max-wait 1 \
  --positions "$work/positions.json" >"$work/serve.log" 2>&1 &
pid=$!
pids+=("$pid")
url="$(wait_for_line "$work/serve.log" "herald console and event feed on " "$pid")"
echo "== schemathesis against ${url}openapi.json"
schemathesis --config-file "$here/schemathesis.toml" run "${url}openapi.json" --url "${url%/}" \
  -H "Authorization: Bearer $token" \
  --checks all --max-examples "${SCHEMATHESIS_EXAMPLES:-100}" \
  --request-timeout 10 --no-color
