#!/usr/bin/env bash
# bounds.sh CASE: measures one bound of the README's Limits table against a
# real redis-server and fleetd on loopback, with internal/abuse:
#   unauth      1,000 connections send the headers of a 1 MB webhook without
#               a secret and half its body: fleetd's RSS growth, what they got
#   scrapes     48 concurrent scrapes of /metrics at 10,000 workspaces: each
#               scrape's time, fleetd's RSS growth
#   throttle    ~10 made-up API keys/s from one address while a valid key
#               makes 32 requests: the valid key's answers (429 count)
#   kept        100,000 session events for an unregistered device, then its
#               registration (up to 14 attempts) while another sender posts
#               200 webhooks/s, every other one to a second replica on the
#               same Redis: the registration's answers, that sender's
#               p50/p99 before, during and after (per replica),
#               fleetd_pending_dropped_total, the sessions the REST API then
#               lists for the device
#   workspaces  /metrics scrape time and fleetd's RSS at 10,000, 100,000 and
#               500,000 workspaces (one device each; fleetd runs with
#               --max-workspaces 0 when it has the flag), and when the
#               _overflow series first appears and first counts them all
#   statuses    /metrics scrape time before and after 200,000 sessions ended
#               with statuses s-1..s-200000 in one workspace
#   listings    GET /api/v1/sessions?status=failed, ?status=live and
#               ?device_id= (limit=50, 50 requests each) among 1,000,000
#               sessions of one workspace (about 100 failed, 100 live)
# FLEETD_BIN runs that binary instead of building ./cmd/fleetd (to measure
# an older build the same way). ABUSE_FLAGS go to internal/abuse (e.g.
# ABUSE_FLAGS="-steps 10000"); extra arguments go to fleetd. The load of
# the machine (uptime) is printed before and after: the machine is shared.
set -euo pipefail
cd "$(dirname "$0")/.."
usage='usage: scripts/bounds.sh unauth|scrapes|throttle|kept|workspaces|statuses|listings [fleetd flags]'
case=${1:?$usage}; shift
case $case in unauth|scrapes|throttle|kept|workspaces|statuses|listings) ;; *) echo "$usage" >&2; exit 2 ;; esac
tmp=$(mktemp -d)
fleetds=()
# fleetd stops before Redis, so that it does not log Redis going away.
trap 'kill "${fleetds[@]}" 2>/dev/null; wait "${fleetds[@]}" 2>/dev/null; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
bin=${FLEETD_BIN:-}
if [ -z "$bin" ]; then go build -o "$tmp/fleetd" ./cmd/fleetd; bin=$tmp/fleetd; fi
go build -o "$tmp/abuse" ./internal/abuse
freeport() { local p; while :; do p=$(($1 + RANDOM % 4000)); ss -Hltn "sport = :$p" | grep -q . || { echo $p; return; }; done; }
rport=$(freeport 20000); fport=$(freeport 24000)
redis-server --port $rport --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >/dev/null &
until redis-cli -p $rport ping >/dev/null 2>&1; do sleep 0.1; done
export FLEETD_REDIS_URL=redis://127.0.0.1:$rport FLEETD_WEBHOOK_SECRET=bounds-secret
extra=()
help=$("$bin" serve --help 2>&1 || true) # not piped into grep -q: pipefail
if [ "$case" = workspaces ] && [[ $help == *--max-workspaces* ]]; then
  extra=(--max-workspaces 0) # the case creates 500,000 workspaces
fi
"$bin" --addr 127.0.0.1:$fport --log-level warn "${extra[@]}" "$@" &
fpid=$!; fleetds+=($fpid)
until curl -sf localhost:$fport/readyz >/dev/null; do sleep 0.1; done
other=()
if [ "$case" = kept ]; then
  oport=$(freeport 28000)
  "$bin" --addr 127.0.0.1:$oport --log-level warn "$@" &
  fleetds+=($!)
  until curl -sf localhost:$oport/readyz >/dev/null; do sleep 0.1; done
  other=(-other-addr 127.0.0.1:$oport)
fi
key=
case $case in throttle|kept|statuses|listings) key=$("$bin" keys create --workspace acme 2>/dev/null) ;; esac
echo "fleetd: $bin ${extra[*]} $*"
echo "load: $(uptime)"
# Every case is bounded on its own; this bounds a wedged one.
timeout 900 "$tmp/abuse" -addr 127.0.0.1:$fport -pid $fpid -secret "$FLEETD_WEBHOOK_SECRET" -key "$key" -workspace acme "${other[@]}" ${ABUSE_FLAGS:-} "$case"
echo "load: $(uptime)"
echo "redis: $(redis-cli -p $rport info memory | grep '^used_memory_human' | tr -d '\r')"
