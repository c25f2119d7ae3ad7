# stack.sh is sourced by the measuring scripts: it builds fleetd (and, with
# BARE=1, the bare fasthttp baseline), starts redis-server and fleetd on
# random loopback ports, and stops everything on exit. It sets tmp, rport,
# fport, bport and exports FLEETD_REDIS_URL and FLEETD_WEBHOOK_SECRET.
tmp=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT
go build -o "$tmp/fleetd" ./cmd/fleetd
# Ports below the kernel's ephemeral range (32768+), so an outgoing
# connection cannot hold them; one that is listening already is skipped.
freeport() { local p; while :; do p=$(($1 + RANDOM % 4000)); ss -Hltn "sport = :$p" | grep -q . || { echo $p; return; }; done; }
rport=$(freeport 20000); fport=$(freeport 24000); bport=$(freeport 28000)
redis-server --port $rport --bind 127.0.0.1 --save "" --appendonly no --dir "$tmp" >/dev/null &
if [ "${BARE:-0}" = 1 ]; then
  go build -o "$tmp/bare" ./internal/barehttp
  "$tmp/bare" --addr 127.0.0.1:$bport &
fi
until redis-cli -p $rport ping >/dev/null 2>&1; do sleep 0.1; done
export FLEETD_REDIS_URL=redis://127.0.0.1:$rport FLEETD_WEBHOOK_SECRET=${FLEETD_WEBHOOK_SECRET:-bench-secret}
"$tmp/fleetd" --addr 127.0.0.1:$fport --log-level warn &
until curl -sf localhost:$fport/readyz >/dev/null; do sleep 0.1; done
