#!/usr/bin/env bash
# Action URL ingest under load: the real `ctibridge serve` (release build, no PBX, journal
# with group commit) on loopback, driven by wrk (Debian package `wrk`).
#
#   bench/action_url_load.sh [DURATION] [CONNECTIONS]      (defaults: 10s, 16)
#
# Prints wrk's report with latency percentiles (p99 included), then one summary line per run.
# On this project's 2-core machine wrk and the server share the cores, so the figure is a
# floor, not a ceiling.
#
# Why 16 connections by default: wrk keeps every connection busy (a closed loop), so by
# Little's law the mean latency is at least CONNECTIONS / throughput, whatever the server
# does: 64 connections at 70k req/s means 0.9 ms on average before any tail. Phones send one
# callback per event and wait for the answer; 50k callbacks/s answered in ~0.2 ms are about
# 10 in flight at any moment, so 16 is the load the target describes. Larger values are a
# saturation test (report them as such).
#
# Environment:
#   RUNS=N            repeat N times, a fresh server each time (default 1)
#   WORKERS=N         the server's async workers ([runtime] worker_threads; default: the
#                     config default, one per core but one)
#   PIN=1             server on core 0, wrk (one thread) on core 1
#   WRK_THREADS=N     wrk's threads (default 2; with 1, wrk itself becomes the bottleneck
#                     near 40k req/s)
#   WRK_SCRIPT=f.lua  a wrk Lua script (e.g. a `delay()` for pacing)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
connections=${2:-16}
runs=${RUNS:-1}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
url='http://127.0.0.1:18080/action-url/call_established?mac=001565aabb01&ip=127.0.0.1&model=SIP-T46S&firmware=66.86.0.15&active_user=101&active_host=pbx&local=101&remote=%2B15550100&display_local=Alice&display_remote=Bob&call_id=33093'
server=(./target/release/ctibridge serve --config "$work/ctibridge.toml")
load=(wrk -t"${WRK_THREADS:-2}")
if [ "${PIN:-0}" = 1 ]; then
  server=(env CTIBRIDGE__RUNTIME__WORKER_THREADS=1 taskset -c 0 "${server[@]}")
  load=(taskset -c 1 wrk -t1)
fi
if [ -n "${WORKERS:-}" ]; then
  server=(env CTIBRIDGE__RUNTIME__WORKER_THREADS="$WORKERS" "${server[@]}")
fi
summary=()
for run in $(seq "$runs"); do
  rm -rf "$work/journal"
  cat > "$work/ctibridge.toml" <<TOML
pbx = []
[log]
level = "warn"
[http]
listen = "127.0.0.1:18080"
[storage]
url = "sqlite://$work/ctibridge.db"
[journal]
dir = "$work/journal"
[[phones]]
extension = "101"
address = "127.0.0.1:18101"
vendor = "yealink"
mac = "001565aabb01"
TOML
  rm -f "$work"/ctibridge.db*
  "${server[@]}" &
  pid=$!
  for _ in $(seq 50); do curl -fsS http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break; sleep 0.1; done
  # The server's CPU (user + system ticks of every thread) over wrk's run.
  ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
  t0=$(date +%s.%N); c0=$(ticks)
  "${load[@]}" -c"$connections" -d"$duration" --latency ${WRK_SCRIPT:+-s "$WRK_SCRIPT"} "$url" | tee "$work/wrk.out"
  t1=$(date +%s.%N); c1=$(ticks)
  peak=$(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' "/proc/$pid/status")
  cpu=$(awk -v c="$((c1 - c0))" -v hz="$(getconf CLK_TCK)" -v t="$t0" -v u="$t1" 'BEGIN {printf "%.2f", c / hz / (u - t)}')
  kill -INT "$pid"; wait "$pid" || true
  pid=
  lines=$(cat "$work"/journal/*.jsonl | wc -l)
  rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
  p50=$(awk '$1 == "50%" {print $2}' "$work/wrk.out")
  p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.out")
  summary+=("run $run: $rps req/s, p50 $p50, p99 $p99, server CPU $cpu cores, peak RSS $peak, journal lines $lines")
done
echo "--- $connections connections, $duration per run, load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%s\n' "${summary[@]}"
