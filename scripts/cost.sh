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
# functions; the table at the end sums them up. Then each shape runs again
# on a plain redis-server for its floor (rediscost --floor): the commands
# the store's scripts ran, replayed as plain pipelined commands to a
# second redis-server under callgrind ("PHASE plain" lines: what the data
# model's commands cost by themselves, whatever computes them; COST_FLOOR=0
# skips it). Dumps stay in
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
tmp=$(mktemp -d); vpid=; spid=
cleanup() { for p in $vpid $spid; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
go build -o "$tmp/rediscost" ./internal/rediscost
# A port below the kernel's ephemeral range that nothing listens on.
freeport() { local p; while :; do p=$((20000 + RANDOM % 8000)); ss -Hltn "sport = :$p" | grep -q . || { echo $p; return; }; done; }

# cgredis DIR PORT: a redis-server under callgrind, its dumps in DIR;
# sets vpid.
cgredis() {
  local dir=$1 port=$2
  valgrind --tool=callgrind --instr-atstart=no --toggle-collect=serverCron --collect-atstart=yes \
    --callgrind-out-file="$dir/callgrind.out.%p" --log-file="$dir/valgrind.log" \
    "$redis" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" --logfile "$dir/redis.log" ${COST_REDIS_ARGS:-} &
  vpid=$!
  until redis-cli -p "$port" ping >/dev/null 2>&1; do
    kill -0 "$vpid" 2>/dev/null || { cat "$dir/valgrind.log" "$dir/redis.log" >&2; exit 1; }
    sleep 0.1
  done
}

stopredis() { # PORT PID
  redis-cli -p "$1" shutdown nosave >/dev/null 2>&1 || kill "$2"
  wait "$2" 2>/dev/null || true
}

shape() {
  local name=$1; shift
  local dir="$out/$name" port; port=$(freeport); mkdir -p "$dir"
  cgredis "$dir" "$port"
  # shellcheck disable=SC2086 # COST_ARGS is a list of flags
  "$tmp/rediscost" --addr "127.0.0.1:$port" --shape "$name" --callgrind-pid "$vpid" --callgrind-dir "$dir" \
    --results "$out/results.tsv" "$@" ${COST_ARGS:-} | tee "$dir/report.txt"
  stopredis "$port" "$vpid"; vpid=
  [ "${COST_FLOOR:-1}" = 0 ] && return
  # The floor: the same run on a plain redis-server, whose commands
  # (through MONITOR) replay to one under callgrind.
  local fdir="$dir/plain" sport fport; mkdir -p "$fdir"
  sport=$(freeport)
  "$redis" --port "$sport" --bind 127.0.0.1 --save "" --appendonly no --dir "$fdir" --logfile "$fdir/store-redis.log" ${COST_REDIS_ARGS:-} &
  spid=$!
  until redis-cli -p "$sport" ping >/dev/null 2>&1; do sleep 0.1; done
  fport=$(freeport); while [ "$fport" = "$sport" ]; do fport=$(freeport); done
  cgredis "$fdir" "$fport"
  # shellcheck disable=SC2086
  "$tmp/rediscost" --addr "127.0.0.1:$sport" --floor "127.0.0.1:$fport" --floor-callgrind-pid "$vpid" --floor-callgrind-dir "$fdir" \
    --shape "$name" --results "$out/results.tsv" "$@" ${COST_ARGS:-} | tee "$fdir/report.txt"
  stopredis "$fport" "$vpid"; vpid=
  stopredis "$sport" "$spid"; spid=
}

start=$(date +%s)
steady=--steady; [ "${COST_STEADY:-1}" = 0 ] && steady=
for s in ${COST_SHAPES:-large small}; do shape "$s" $steady; done
echo
echo "| phase | Redis instructions per event | Redis commands per event |"
echo "|---|---|---|"
awk -F'\t' '{ printf "| %s (%d events, %d requests) | %s | %s |\n", $1, $2, $3, $4, $5 }' "$out/results.tsv"
echo "($(( $(date +%s) - start )) s; reports and dumps in $out)"
