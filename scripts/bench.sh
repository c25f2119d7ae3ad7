#!/usr/bin/env bash
# make bench: the webhook's speed on this machine, measured with fleetd's
# own load generator against a bare fasthttp baseline in one run.
#   1. baseline: the same load against an in-process fasthttp 204 handler
#   2. single-event requests, closed loop
#   3. batch-100 requests, closed loop
#   4. single-event requests, open loop at half the rate of 2 (p99)
# Prints the ratios to the baseline and the p99s; every fleetd run is
# verified against the state it reports (REST API included: keys are minted
# through FLEETD_REDIS_URL), then deletes its workspaces (--cleanup).
# Env: SECS (default 10), CONNS (64).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${SECS:-10}; conns=${CONNS:-64}
out=${OUT:-bench-out}; mkdir -p "$out"
. scripts/stack.sh

lt() { local name=$1; shift; "$tmp/fleetd" loadtest --progress off --devices 10000 --workspaces 20 --connections "$conns" --json "$out/$name.json" --html "$out/$name.html" "$@" > "$out/$name.txt" 2>&1 || { cat "$out/$name.txt"; exit 1; }; }
field() { python3 -c "import json,sys; d=json.load(open('$out/$1.json')); l=d['load']; p={x['percentile']:x['ms'] for x in d['latency_percentiles']}; print($2)"; }

lt baseline --baseline --duration "${secs}s"
lt single --target http://127.0.0.1:$fport --duration "${secs}s" --cleanup
lt batch100 --target http://127.0.0.1:$fport --duration "${secs}s" --batch 100 --cleanup
half=$(field single "int(l['events_per_sec']/2)")
lt open-half --target http://127.0.0.1:$fport --duration "${secs}s" --rate "$half" --connections 512 --cleanup

base=$(field baseline "l['requests_per_sec']")
printf '%-34s %12s %10s %10s\n' run events/s ratio p99
printf '%-34s %12.0f %10s %9.2fms\n' "baseline (bare fasthttp 204) req/s" "$base" 1.00 "$(field baseline "p[99]")"
for r in single batch100; do
  printf '%-34s %12.0f %9.2fx %9.2fms\n' "$r" "$(field $r "l['events_per_sec']")" "$(field $r "l['events_per_sec']/$base")" "$(field $r "p[99]")"
done
printf '%-34s %12.0f %10s %9.2fms\n' "open loop at $half events/s" "$(field open-half "l['events_per_sec']")" - "$(field open-half "p[99]")"
grep -h "^verify" "$out"/single.txt "$out"/batch100.txt "$out"/open-half.txt
echo "reports: $out/*.html, $out/*.json"
