#!/usr/bin/env bash
# Installs the servers that fleetd's integration tests run for real:
# redis-server (and redis-cli), prometheus + promtool,
# docker-compose, whose parser checks docker-compose.yml (no Docker
# engine is needed for `docker-compose config`),
# chromium for the web console's browser test (api/console_browser_test.go),
# and lua-check (luacheck), which redisstore's TestLuaLint runs over the scripts.
# `ensure-deps.sh cost` also installs valgrind (callgrind, for make cost),
# `ensure-deps.sh wrk` wrk (scripts/wrk-compare.sh, scripts/wrk-api.sh).
set -euo pipefail
need=()
[ "${1:-}" = cost ] && { command -v callgrind_control >/dev/null 2>&1 || need+=(valgrind); }
[ "${1:-}" = wrk ] && { command -v wrk >/dev/null 2>&1 || need+=(wrk); }
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli    >/dev/null 2>&1 || need+=(redis-tools)
command -v prometheus   >/dev/null 2>&1 || need+=(prometheus)
command -v promtool     >/dev/null 2>&1 || need+=(prometheus)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v chromium     >/dev/null 2>&1 || need+=(chromium)
command -v luacheck     >/dev/null 2>&1 || need+=(lua-check)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing: ${need[*]}; install them (Debian: apt-get install ${need[*]}) and rerun" >&2
  exit 1
fi
echo "installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need[@]}" | sort -u) >/dev/null
# Debian starts the packaged services; the tests start their own on free ports.
for svc in redis-server prometheus; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || service "$svc" stop >/dev/null 2>&1 || true
done
