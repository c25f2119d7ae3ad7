#!/usr/bin/env bash
# bounds.sh CASE: measures one bound of the README's Limits table against a
# real redis-server and fleetd on loopback, with internal/abuse:
#   unauth    1,000 connections send the headers of a 1 MB webhook without a
#             secret and half its body: fleetd's RSS growth, what they got
#   scrapes   48 concurrent scrapes of /metrics at 10,000 workspaces: each
#             scrape's time, fleetd's RSS growth
#   throttle  ~10 made-up API keys/s from one address while a valid key makes
#             32 requests: the valid key's answers (429 count)
# FLEETD_BIN runs that binary instead of building ./cmd/fleetd (to measure
# an older build the same way). Extra arguments go to fleetd.
set -euo pipefail
cd "$(dirname "$0")/.."
case=${1:?usage: scripts/bounds.sh unauth|scrapes|throttle [fleetd flags]}; shift
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
bin=${FLEETD_BIN:-}
if [ -z "$bin" ]; then go build -o "$tmp/fleetd" ./cmd/fleetd; bin=$tmp/fleetd; fi
go build -o "$tmp/abuse" ./internal/abuse
freeport() { local p; while :; do p=$(($1 + RANDOM % 4000)); ss -Hltn "sport = :$p" | grep -q . || { echo $p; return; }; done; }
rport=$(freeport 20000); fport=$(freeport 24000)
redis-server --port $rport --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >/dev/null &
until redis-cli -p $rport ping >/dev/null 2>&1; do sleep 0.1; done
export FLEETD_REDIS_URL=redis://127.0.0.1:$rport FLEETD_WEBHOOK_SECRET=bounds-secret
"$bin" --addr 127.0.0.1:$fport --log-level warn "$@" &
fpid=$!
until curl -sf localhost:$fport/readyz >/dev/null; do sleep 0.1; done
key=
if [ "$case" = throttle ]; then key=$("$bin" keys create --workspace acme 2>/dev/null); fi
echo "fleetd: $bin $*"
"$tmp/abuse" -addr 127.0.0.1:$fport -pid $fpid -secret "$FLEETD_WEBHOOK_SECRET" -key "$key" "$case"
