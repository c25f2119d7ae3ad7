#!/usr/bin/env bash
# Measures the webhook with wrk next to a bare fasthttp 204 handler, in one
# run on this machine: redis-server, fleetd and the bare server all on
# loopback; the last line gives each fleetd rate as a ratio of the bare
# one (batch: requests and events). Usage: scripts/wrk-compare.sh
# [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-64}
scripts/ensure-deps.sh wrk
BARE=1
. scripts/stack.sh
export DEVICES=10000 SECRET=$FLEETD_WEBHOOK_SECRET
# Register the devices over 10 workspaces.
for ((b = 0; b < DEVICES; b += 1000)); do
  body=$(python3 -c "import json;print(json.dumps([{'type':'device.registered','qdDeviceId':f'bd{i}','workspaceId':f'bw{i%10}','name':f'n{i}','os':'Linux'} for i in range($b,$b+1000)]))")
  curl -sf -XPOST localhost:$fport/backend/webhook -H "x-webhook-secret: $SECRET" -d "$body" >/dev/null
done
# run prints wrk's figures and keeps its requests/s in rps.
run() {
  echo "== $1"
  wrk -t2 -c"$conns" -d"${secs}s" --latency -s "scripts/wrk/$2" "$3" | grep -E "Requests/sec|Latency|50%|90%|99%|Non-2xx" | tee "$tmp/wrk.out"
  rps=$(awk '/Requests\/sec/ { print $2 }' "$tmp/wrk.out")
}
run "bare fasthttp 204" bare.lua http://127.0.0.1:$bport; bare=$rps
run "fleetd single event" single.lua http://127.0.0.1:$fport; single=$rps
BATCH=100 run "fleetd batch of 100" batch.lua http://127.0.0.1:$fport; batch=$rps
echo "== Redis time per command (INFO commandstats)"
redis-cli -p $rport INFO commandstats | grep -E "evalsha|hget|cmdstat_eval" | tr -d '\r'
redis-cli -p $rport INFO cpu | grep used_cpu | tr -d '\r'
awk -v b="$bare" -v s="$single" -v m="$batch" 'BEGIN { printf "ratios to bare (%.0f req/s): single %.3f, batch of 100 %.3f (requests) = %.1f (events)\n", b, s / b, m / b, 100 * m / b }'
