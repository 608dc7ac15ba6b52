#!/usr/bin/env bash
# The console's browser test: builds and starts the console example on a fresh SQLite file (one
# dead letter waiting), then drives it in headless Chromium with playwright-core.
# Screenshots: target/browser-artifacts/*.png.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "!! no Chromium at $chromium: install Debian's package (apt-get install -y chromium) or set CHROMIUM" >&2
  exit 1
fi
if [ ! -d "$here/node_modules/playwright-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund)
fi
(cd "$root" && cargo build -q --example console --features web)
artifacts="$root/target/browser-artifacts"
mkdir -p "$artifacts"
work="$(mktemp -d)"
log="$work/server.log"
"$root/target/debug/examples/console" --db "$work/app.db" --bind 127.0.0.1:0 >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true; rm -rf "$work"' EXIT
url=""
for _ in $(seq 1 150); do
  url="$(sed -n 's/^console: //p' "$log")"
  [ -n "$url" ] && break
  kill -0 $server 2>/dev/null || { cat "$log" >&2; echo "!! the console example exited" >&2; exit 1; }
  sleep 0.2
done
[ -n "$url" ] || { cat "$log" >&2; echo "!! the console example did not start" >&2; exit 1; }
echo "== console at $url"
CHROMIUM="$chromium" node "$here/console.test.mjs" "$url" "$artifacts"
