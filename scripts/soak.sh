#!/usr/bin/env bash
# make soak (not in CI): runs fleetd on redis-server under an open-loop
# load at half its measured single-event maximum for SOAK (default 10m),
# sampling every 10 s: RSS, goroutines, the webhook p99 of the last 10 s
# (from fleetd's own histogram), Redis used_memory and Redis CPU (user +
# sys) per webhook request of the last 10 s. The load test verifies the final
# state. Flat RSS/goroutines/p99 columns are the pass criterion, read by a
# person: the figures go to bench-out/soak.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."
soak=${SOAK:-10m}; out=${OUT:-bench-out}; mkdir -p "$out"
FLEETD_WEBHOOK_SECRET=soak-secret
. scripts/stack.sh
target=http://127.0.0.1:$fport

# The maximum single-event rate, then half of it for the soak.
"$tmp/fleetd" loadtest --target $target --duration 10s --progress off --verify=off --cleanup --run-id max --json "$tmp/max.json" >/dev/null
rate=$(python3 -c "import json; print(int(json.load(open('$tmp/max.json'))['load']['events_per_sec']/2))")
echo "soak: $soak open loop at $rate events/s (half the single-event maximum)"
"$tmp/fleetd" loadtest --target $target --duration "$soak" --rate "$rate" --connections 512 --progress off --run-id soak --devices 20000 --workspaces 50 --cleanup \
  --json "$out/soak.json" --html "$out/soak.html" > "$out/soak-load.txt" 2>&1 &
lt=$!
python3 - "$target" "$out/soak.tsv" "$lt" "$rport" <<'PY'
import os, re, subprocess, sys, time, urllib.request
target, path, pid, rport = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def redis_mem():
    info = subprocess.run(["redis-cli", "-p", rport, "INFO", "memory"], capture_output=True, text=True).stdout
    return float(re.search(r"^used_memory:(\d+)", info, re.M).group(1))
def redis_cpu():
    info = subprocess.run(["redis-cli", "-p", rport, "INFO", "cpu"], capture_output=True, text=True).stdout
    return sum(float(v) for v in re.findall(r"^used_cpu_(?:user|sys):([0-9.]+)", info, re.M))
def scrape():
    txt = urllib.request.urlopen(target + "/metrics").read().decode()
    val = lambda n: float(re.search(r"^%s (\S+)$" % n, txt, re.M).group(1))
    buckets = {float(le): float(v) for le, v in re.findall(r'^fleetd_webhook_request_duration_seconds_bucket\{le="([^"]+)"\} (\S+)$', txt, re.M)}
    return val("process_resident_memory_bytes"), val("go_goroutines"), buckets
def p99(prev, cur):
    les = sorted(cur)
    d = [cur[le] - prev.get(le, 0) for le in les]
    total = d[-1]
    if total <= 0: return float("nan")
    for le, c in zip(les, d):
        if c >= 0.99 * total: return le
with open(path, "w") as f:
    f.write("t_s\trss_mib\tgoroutines\tp99_ms_last10s\trequests_last10s\tredis_used_mib\tredis_cpu_us_per_request\n")
    _, _, prev = scrape(); cpu0 = redis_cpu(); start = time.time()
    while True:
        time.sleep(10)
        try: os.kill(pid, 0)
        except OSError: break
        rss, gr, cur = scrape(); cpu = redis_cpu()
        n = cur[max(cur)] - prev.get(max(cur), 0)
        line = "%d\t%.1f\t%d\t%.1f\t%d\t%.1f\t%.1f" % (time.time() - start, rss / 2**20, gr, p99(prev, cur) * 1000, n, redis_mem() / 2**20,
                                                (cpu - cpu0) * 1e6 / max(n, 1))
        print(line, flush=True); f.write(line + "\n"); f.flush(); prev, cpu0 = cur, cpu
PY
wait $lt || { cat "$out/soak-load.txt"; exit 1; }
grep -E "events/s|latency|verify" "$out/soak-load.txt"
