#!/usr/bin/env bash
# Action URL ingest under load: the real `ctibridge serve` (release build, no PBX, journal
# with group commit) on loopback, driven by wrk (Debian package `wrk`).
#
#   bench/action_url_load.sh [DURATION] [CONNECTIONS]
#
# Prints wrk's report with latency percentiles (p99 included). On this project's 2-core
# machine wrk and the server share the cores, so the figure is a floor, not a ceiling.
# PIN=1 puts the server (one tokio worker) on core 0 and wrk on core 1, so they do not
# preempt each other.
# WRK_THREADS=N sets wrk's threads (default 2; with 1, wrk itself becomes the bottleneck
# near 40k req/s). WRK_SCRIPT=file.lua passes a wrk Lua script (e.g. a `delay()` for pacing).
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
connections=${2:-64}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/ctibridge.toml" <<TOML
pbx = []
[log]
level = "warn"
[http]
listen = "127.0.0.1:18080"
[journal]
dir = "$work/journal"
[[phones]]
extension = "101"
address = "127.0.0.1:18101"
vendor = "yealink"
mac = "001565aabb01"
TOML
server=(./target/release/ctibridge serve --config "$work/ctibridge.toml")
load=(wrk -t"${WRK_THREADS:-2}")
if [ "${PIN:-0}" = 1 ]; then
  server=(env TOKIO_WORKER_THREADS=1 taskset -c 0 "${server[@]}")
  load=(taskset -c 1 wrk -t1)
fi
"${server[@]}" &
pid=$!
for _ in $(seq 50); do curl -fsS http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break; sleep 0.1; done
url='http://127.0.0.1:18080/action-url/call_established?mac=001565aabb01&ip=127.0.0.1&model=SIP-T46S&firmware=66.86.0.15&active_user=101&active_host=pbx&local=101&remote=%2B15550100&display_local=Alice&display_remote=Bob&call_id=33093'
"${load[@]}" -c"$connections" -d"$duration" --latency ${WRK_SCRIPT:+-s "$WRK_SCRIPT"} "$url"
kill -INT "$pid"; wait "$pid" || true
echo "journal lines written: $(cat "$work"/journal/*.jsonl | wc -l)"
