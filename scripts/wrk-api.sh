#!/usr/bin/env bash
# wrk figures of GET /api/v1/usage and GET /api/v1/devices?limit=50 on a
# workspace of 10,000 devices, next to a bare fasthttp 204 handler, in one
# run on this machine. Usage: scripts/wrk-api.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}; conns=${2:-64}
scripts/ensure-deps.sh wrk
BARE=1
. scripts/stack.sh
KEY=$("$tmp/fleetd" keys create --workspace bench 2>/dev/null)
for ((b = 0; b < 10000; b += 1000)); do
  body=$(python3 -c "import json;print(json.dumps([{'type':'device.registered','qdDeviceId':f'ad{i}','workspaceId':'bench','name':f'n{i}','os':'Linux'} for i in range($b,$b+1000)]))")
  curl -sf -XPOST localhost:$fport/backend/webhook -H "x-webhook-secret: $FLEETD_WEBHOOK_SECRET" -d "$body" >/dev/null
done
run() { printf '%-32s' "$1"; wrk -t2 -c"$conns" -d"${secs}s" -H "x-api-key: $KEY" "$2" | awk '/Requests\/sec/ {print $2 " req/s"}'; }
run "bare fasthttp 204" http://127.0.0.1:$bport/
run "GET /api/v1/usage" "http://127.0.0.1:$fport/api/v1/usage"
run "GET /api/v1/devices?limit=50" "http://127.0.0.1:$fport/api/v1/devices?limit=50"
