#!/usr/bin/env bash
# make cost (not in CI): what fleetd's ingest costs Redis per event, in
# instructions (repeatable where timings on a shared machine are not).
# For each fleet shape it starts a fresh redis-server under
#   valgrind --tool=callgrind --instr-atstart=no --toggle-collect=serverCron --collect-atstart=yes
# (nothing is counted until the driver switches instrumentation on for a
# phase; collection is on except inside serverCron, Redis's timer, which
# is left out of every figure: --toggle-collect turns collection off at
# the start unless --collect-atstart=yes comes after it, so keep that
# order) and runs internal/rediscost against it. The idle event loop
# outside serverCron (beforeSleep) costs about 6,000 instructions a
# second, nothing next to a phase. Phases:
#   large: 20 workspaces × 1,000 devices, then its second day (--steady)
#   small: 20 workspaces × 100 devices, and its second day
# Each phase prints Redis instructions and commands per event and the top
# functions; the table at the end sums them up. Dumps stay in
# bench-out/cost/SHAPE/ for callgrind_annotate. Env: OUT (bench-out),
# COST_ARGS (more driver flags, e.g. "--single 500 --batches 10"),
# COST_SHAPES (the shapes measured: "large small"), COST_STEADY (0: no
# second day),
# REDIS_SERVER (another redis-server binary, e.g. one with symbols),
# COST_REDIS_ARGS (more redis-server flags, e.g.
# "--hash-max-listpack-entries 128").
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench-out}/cost
redis=${REDIS_SERVER:-$(command -v redis-server)}
if [ -z "${REDIS_SERVER:-}" ] && [ "${COST_SYMBOLS:-1}" != 0 ] && command -v readelf >/dev/null 2>&1; then
  # the rebuild with symbols that scripts/redis-symbols.sh kept, if any
  id=$(readelf -n "$(readlink -f "$redis")" | awk '/Build ID/ { print $3 }')
  rebuilt=${XDG_CACHE_HOME:-$HOME/.cache}/fleetd/redis-server-$id
  [ -x "$rebuilt" ] && redis=$rebuilt && echo "make cost: running $rebuilt (the installed version rebuilt, with symbols)" >&2
fi
rm -rf "$out"; mkdir -p "$out"; out=$(cd "$out" && pwd) # redis-server's --dir changes its directory
tmp=$(mktemp -d); vpid=
cleanup() { [ -n "$vpid" ] && kill "$vpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
go build -o "$tmp/rediscost" ./internal/rediscost
# A port below the kernel's ephemeral range that nothing listens on.
freeport() { local p; while :; do p=$((20000 + RANDOM % 8000)); ss -Hltn "sport = :$p" | grep -q . || { echo $p; return; }; done; }

shape() {
  local name=$1; shift
  local dir="$out/$name" port; port=$(freeport); mkdir -p "$dir"
  valgrind --tool=callgrind --instr-atstart=no --toggle-collect=serverCron --collect-atstart=yes \
    --callgrind-out-file="$dir/callgrind.out.%p" --log-file="$dir/valgrind.log" \
    "$redis" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" ${COST_REDIS_ARGS:-} &
  vpid=$!
  until redis-cli -p "$port" ping >/dev/null 2>&1; do
    kill -0 "$vpid" 2>/dev/null || { cat "$dir/valgrind.log" "$dir/redis.log" >&2; exit 1; }
    sleep 0.1
  done
  # shellcheck disable=SC2086 # COST_ARGS is a list of flags
  "$tmp/rediscost" --addr "127.0.0.1:$port" --shape "$name" --callgrind-pid "$vpid" --callgrind-dir "$dir" \
    --results "$out/results.tsv" "$@" ${COST_ARGS:-} | tee "$dir/report.txt"
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || kill "$vpid"
  wait "$vpid" 2>/dev/null || true
  vpid=
}

start=$(date +%s)
steady=--steady; [ "${COST_STEADY:-1}" = 0 ] && steady=
for s in ${COST_SHAPES:-large small}; do shape "$s" $steady; done
echo
echo "| phase | Redis instructions per event | Redis commands per event |"
echo "|---|---|---|"
awk -F'\t' '{ printf "| %s (%d events, %d requests) | %s | %s |\n", $1, $2, $3, $4, $5 }' "$out/results.tsv"
echo "($(( $(date +%s) - start )) s; reports and dumps in $out)"
