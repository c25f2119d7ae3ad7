package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/buildinfo"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/internal/syncbuf"
)

// TestEmbeddedBannerPastes: the embedded-mode banner starts with the web
// console's URL, and as a whole is a block a shell runs as is.
func TestEmbeddedBannerPastes(t *testing.T) {
	d := MustStart(t, nil)
	out := strings.TrimSpace(d.stdout.String())
	lines := strings.Split(out, "\n")
	if want := "# fleetd web console: " + d.base + "/"; lines[0] != want {
		t.Errorf("first line %q, want %q", lines[0], want)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "export ") {
			t.Errorf("line %q is neither a comment nor an export: the block does not paste", l)
		}
	}
	sh := exec.Command("/bin/sh", "-e", "-c", out+"\nprintf '%s\\n%s\\n' \"$SECRET\" \"$KEY\"")
	got, err := sh.Output()
	if err != nil {
		t.Fatalf("the banner does not run in sh: %v\n%s", err, out)
	}
	vals := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(vals) != 2 || len(vals[0]) < 32 || !strings.HasPrefix(vals[1], "sk_live_") {
		t.Fatalf("pasted banner set SECRET, KEY = %q", vals)
	}
	wantCounts(t, do(t, nil, "POST", d.base+"/backend/webhook", `{"type":"device.registered","qdDeviceId":"d1","workspaceId":"demo","name":"n","os":"L"}`,
		"x-webhook-secret", vals[0]), 1, 0, 0, 0)
	if r := do(t, nil, "GET", d.base+"/api/v1/devices", "", "x-api-key", vals[1]); r.code != 200 || !strings.Contains(r.raw, `"d1"`) {
		t.Fatalf("the pasted KEY: %d %s", r.code, r.raw)
	}
}

// TestReadinessSaysWhy: with Redis unreachable, or rediss:// against a
// plain Redis, fleetd says so at start (one WARN line naming the cause),
// /readyz names the cause, fleetd_ready is 0, and refused webhooks are
// logged with their reason once, not once per request.
func TestReadinessSaysWhy(t *testing.T) {
	plain := redistest.Start(t)
	tls := strings.Replace(plain.URL, "redis://", "rediss://", 1)
	for name, tc := range map[string]struct{ url, cause string }{
		"connection refused": {fmt.Sprintf("redis://127.0.0.1:%d", redistest.FreePort(t)), "connection refused"},
		"rediss to plain":    {tls, "a server without TLS never answers the TLS handshake"},
	} {
		t.Run(name, func(t *testing.T) {
			d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": tc.url, "FLEETD_WEBHOOK_SECRET": testSecret}, "--ingest-timeout", "300ms")
			logs := d.stderr.String()
			if n := strings.Count(logs, "NOT READY"); n != 1 || !strings.Contains(logs, tc.cause) {
				t.Errorf("start log has %d NOT READY lines, want 1 naming %q:\n%s", n, tc.cause, logs)
			}
			if strings.Index(logs, "NOT READY") > strings.Index(logs, "fleetd listening") {
				t.Errorf("the cause comes after 'listening':\n%s", logs)
			}
			r := do(t, nil, "GET", d.base+"/readyz", "")
			wantError(t, r, 503, "unavailable")
			if msg := r.body["message"].(string); !strings.Contains(msg, tc.cause) || strings.Contains(msg, "127.0.0.1") {
				t.Errorf("/readyz message %q: want the cause %q and no address", msg, tc.cause)
			}
			if m := do(t, nil, "GET", d.base+"/metrics", ""); !strings.Contains(m.raw, "\nfleetd_ready 0\n") {
				t.Errorf("/metrics lacks fleetd_ready 0")
			}
			for range 5 {
				wantError(t, d.webhook(t, `{"type":"device.deleted","qdDeviceId":"d1"}`), 503, "unavailable")
			}
			if n := strings.Count(d.stderr.String(), "webhooks refused"); n != 1 {
				t.Errorf("5 refused webhooks logged %d times, want once (rate-limited):\n%s", n, d.stderr)
			}
		})
	}
}

// TestReadinessLogIsRateLimited drives the readiness log with a fake clock:
// the first check and each change are logged, flapping faster than
// readinessLogEvery collapses into one line, and a lasting outage is
// repeated every readinessRepeat.
func TestReadinessLogIsRateLimited(t *testing.T) {
	var buf syncbuf.Buffer
	now := time.Unix(1e9, 0)
	down := errors.New("dial tcp 10.0.0.1:6379: connect: connection refused")
	var state error
	r := newReadiness(func(context.Context) error { return state }, slog.New(slog.NewTextHandler(&buf, nil)), false)
	r.now = func() time.Time { return now }
	step := func(d time.Duration, err error) {
		now = now.Add(d)
		state = err
		r.Check(context.Background())
	}
	lines := func() int { return strings.Count(buf.String(), "\n") }
	step(0, nil) // start: ready
	step(time.Second, down)
	if lines() != 1 {
		t.Fatalf("a change within %v of the last line was logged at once:\n%s", readinessLogEvery, buf.String())
	}
	for range 10 { // flapping every second for 20 s
		step(time.Second, nil)
		step(time.Second, down)
	}
	if n := lines(); n > 1+2 || !strings.Contains(buf.String(), "changes_since_last_line") {
		t.Errorf("20 s of flapping logged %d lines, want at most one per %v, counting the changes:\n%s", n-1, readinessLogEvery, buf.String())
	}
	step(30*time.Second, down) // steady outage: logged once the window allows
	if !strings.Contains(buf.String(), `msg="NOT READY: Redis does not answer: connection refused`) {
		t.Fatalf("the outage was not logged with its cause:\n%s", buf.String())
	}
	before := lines()
	step(30*time.Second, down)
	if lines() != before {
		t.Errorf("a steady outage was logged again after 30 s:\n%s", buf.String())
	}
	step(time.Minute, down)
	if !strings.Contains(buf.String(), "still NOT READY") {
		t.Errorf("a lasting outage is not repeated after %v:\n%s", readinessRepeat, buf.String())
	}
	step(time.Minute, nil)
	if !strings.Contains(buf.String(), "ready again") {
		t.Errorf("recovery not logged:\n%s", buf.String())
	}
	if !r.Ready() {
		t.Error("Ready() after recovery = false")
	}
}

// TestHealthcheckCommand: exit 0 against a ready fleetd (its address from
// --addr or serve's FLEETD_ADDR), an error naming the cause otherwise.
func TestHealthcheckCommand(t *testing.T) {
	env, _ := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	d := MustStart(t, env)
	addr := strings.TrimPrefix(d.base, "http://")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"healthcheck", "--addr", addr}, noEnv, &stdout, &stderr); err != nil || !strings.HasPrefix(stdout.String(), "ready:") {
		t.Fatalf("healthcheck --addr %s: %v %q", addr, err, stdout.String())
	}
	port := addr[strings.LastIndexByte(addr, ':'):]
	if err := run(context.Background(), []string{"healthcheck"}, func(k string) string {
		if k == "FLEETD_ADDR" {
			return port // ":PORT", as a container sets it for serve
		}
		return ""
	}, &stdout, &stderr); err != nil {
		t.Fatalf("healthcheck with FLEETD_ADDR=%s: %v", port, err)
	}

	down := MustStart(t, map[string]string{"FLEETD_REDIS_URL": fmt.Sprintf("redis://127.0.0.1:%d", redistest.FreePort(t)), "FLEETD_WEBHOOK_SECRET": testSecret})
	err := run(context.Background(), []string{"healthcheck", "--addr", strings.TrimPrefix(down.base, "http://")}, noEnv, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("healthcheck of a fleetd without Redis: %v, want the 503 and its cause", err)
	}
}

// TestOnCallMetricsExported: a running daemon exports the build, its
// readiness, the queue and the Redis calls by operation.
func TestOnCallMetricsExported(t *testing.T) {
	env, _ := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	d := MustStart(t, env, "--queue-events", "5000")
	wantCounts(t, d.webhook(t, `{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"n","os":"L"}`), 1, 0, 0, 0)
	m := do(t, nil, "GET", d.base+"/metrics", "").raw
	bi := buildinfo.Get()
	for _, want := range []string{
		fmt.Sprintf(`fleetd_build_info{goversion=%q,revision=%q,version=%q} 1`, bi.GoVersion, bi.Commit, bi.Version),
		"\nfleetd_ready 1\n", "\nfleetd_ingest_queue_events 0\n", "\nfleetd_ingest_queue_capacity_events 5000\n",
		"\nfleetd_ingest_commit_duration_seconds_count 1\n", `fleetd_redis_call_duration_seconds_count{op="place"}`,
		`fleetd_redis_call_errors_total{op="place"} 0`, "\nfleetd_requests_in_flight 1\n", "fleetd_request_body_bytes_in_flight",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestWorkspacesCLIAndLoadtestCleanup: a load test with --cleanup leaves
// nothing of its run in Redis, and `fleetd workspaces` lists and deletes
// workspaces (on a real Redis, or a real Cluster with
// FLEETD_TEST_BACKEND=cluster).
func TestWorkspacesCLIAndLoadtestCleanup(t *testing.T) {
	env, store := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	d := MustStart(t, env)
	getenv := func(k string) string { return env[k] }
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"loadtest", "--target", d.base, "--run-id", "cleanme", "--devices", "60", "--workspaces", "3",
		"--events", "400", "--duration", "0", "--connections", "4", "--progress", "off", "--cleanup"}, getenv, &stdout, &stderr)
	if err != nil || !strings.Contains(stdout.String(), "verify: PASS") || !strings.Contains(stdout.String(), "cleanup: deleted the 3 workspaces of run cleanme") {
		t.Fatalf("loadtest --cleanup: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	if left, err := store.ListWorkspaces(ctx, "lt-cleanme-"); err != nil || len(left) > 0 {
		t.Fatalf("workspaces left after --cleanup: %v %v", left, err)
	}
	if st := wsStats(t, store, "lt-cleanme-0"); st.Devices != 0 {
		t.Fatalf("devices left after --cleanup: %+v", st)
	}

	for _, ws := range []string{"lt-old-0", "lt-old-1", "acme"} {
		if err := run(ctx, []string{"keys", "create", "--workspace", ws}, getenv, &stdout, &stderr); err != nil {
			t.Fatal(err)
		}
	}
	stdout.Reset()
	if err := run(ctx, []string{"workspaces", "list", "--prefix", "lt-old-"}, getenv, &stdout, &stderr); err != nil || stdout.String() != "lt-old-0\nlt-old-1\n" {
		t.Fatalf("workspaces list --prefix lt-old-: %v %q", err, stdout.String())
	}
	stderr.Reset()
	if err := run(ctx, []string{"workspaces", "delete", "lt-old-0", "lt-old-1"}, getenv, &stdout, &stderr); err != nil ||
		strings.Count(stderr.String(), "deleted workspace lt-old-") != 2 || !strings.Contains(stderr.String(), "1 API keys") {
		t.Fatalf("workspaces delete: %v %q", err, stderr.String())
	}
	stdout.Reset()
	if err := run(ctx, []string{"workspaces", "list"}, getenv, &stdout, &stderr); err != nil || stdout.String() != "acme\n" {
		t.Fatalf("workspaces list after delete: %v %q", err, stdout.String())
	}
	stdout.Reset()
	if err := run(ctx, []string{"keys", "list", "--workspace", "lt-old-0", "--json"}, getenv, &stdout, &stderr); err != nil || strings.TrimSpace(stdout.String()) != "[]" {
		t.Fatalf("keys of a deleted workspace: %v %q", err, stdout.String())
	}
}
