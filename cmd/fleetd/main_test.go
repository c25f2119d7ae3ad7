package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/syncbuf"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/redisstore"
)

// daemon is a fleetd started in-process through run().
type daemon struct {
	base           string
	stdout, stderr *syncbuf.Buffer
	stop           context.CancelFunc
	done           chan error
}

const testSecret = "s3cret-for-tests"

// MustStart runs fleetd serve in-process on a free port with args and env,
// waits until /healthz answers, and stops it at the end of the test.
func MustStart(tb testing.TB, env map[string]string, args ...string) *daemon {
	tb.Helper()
	return mustStartAt(tb, redistest.FreePort(tb), env, args...)
}

func httpGet(url string) (int, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func mustStartAt(tb testing.TB, port int, env map[string]string, args ...string) *daemon {
	tb.Helper()
	d := &daemon{base: fmt.Sprintf("http://127.0.0.1:%d", port), stdout: &syncbuf.Buffer{}, stderr: &syncbuf.Buffer{}, done: make(chan error, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	d.stop = cancel
	args = append([]string{"serve", "--addr", fmt.Sprintf("127.0.0.1:%d", port)}, args...)
	getenv := func(k string) string { return env[k] }
	go func() { d.done <- run(ctx, args, getenv, d.stdout, d.stderr) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(d.base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-d.done:
			tb.Fatalf("fleetd exited: %v\n%s", err, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("fleetd did not come up: %v\n%s", err, d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	tb.Cleanup(func() {
		cancel()
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			tb.Error("fleetd did not stop within 30s")
		}
	})
	return d
}

// Shutdown stops the daemon like SIGTERM and returns run's error.
func (d *daemon) Shutdown(tb testing.TB) error {
	tb.Helper()
	d.stop()
	select {
	case err := <-d.done:
		d.done <- err // for Cleanup
		return err
	case <-time.After(30 * time.Second):
		tb.Fatal("fleetd did not stop within 30s")
		return nil
	}
}

type reply struct {
	code   int
	body   map[string]any
	raw    string
	header http.Header
	close  bool // the server asked to close the connection
}

func do(tb testing.TB, c *http.Client, method, url, body string, hdr ...string) reply {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, raw: string(b), header: resp.Header, close: resp.Close}
	json.Unmarshal(b, &r.body)
	return r
}

func (d *daemon) webhook(tb testing.TB, body string) reply {
	tb.Helper()
	return do(tb, nil, "POST", d.base+"/backend/webhook", body, "x-webhook-secret", testSecret, "content-type", "application/json")
}

// wantError checks a JSON error body of the spec.
func wantError(tb testing.TB, r reply, code int, name string) {
	tb.Helper()
	if r.code != code || r.body["error"] != name || r.body["status"] != float64(code) || r.body["message"] == "" || r.body["message"] == nil {
		tb.Fatalf("got %d %s, want %d with error %q, status and message", r.code, r.raw, code, name)
	}
	if code == 429 || code == 503 {
		if r.header.Get("Retry-After") == "" {
			tb.Fatalf("%d without Retry-After", code)
		}
	}
}

func wantCounts(tb testing.TB, r reply, accepted, duplicate, stale, ignored int) {
	tb.Helper()
	want := fmt.Sprintf(`{"accepted":%d,"duplicate":%d,"stale":%d,"ignored":%d}`, accepted, duplicate, stale, ignored)
	if r.code != 200 || r.raw != want {
		tb.Fatalf("got %d %s, want 200 %s", r.code, r.raw, want)
	}
}

// testBackend starts the Redis of a test: one redis-server, or a real
// Redis Cluster when FLEETD_TEST_BACKEND=cluster (make test runs both). It
// returns the environment that points fleetd at it and a store on it.
func testBackend(tb testing.TB, env map[string]string) (map[string]string, *redisstore.Store) {
	tb.Helper()
	cfg := redisstore.Config{}
	switch os.Getenv("FLEETD_TEST_BACKEND") {
	case "cluster":
		c := redistest.StartCluster(tb)
		env["FLEETD_REDIS_CLUSTER"] = c.Seeds()
		cfg.Cluster = c.Addrs()
	case "", "single":
		srv := redistest.Start(tb)
		env["FLEETD_REDIS_URL"] = srv.URL
		cfg.URL = srv.URL
	default:
		tb.Fatal("FLEETD_TEST_BACKEND must be single or cluster")
	}
	s, err := redisstore.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return env, s
}

func mustOpenStore(tb testing.TB, url string) *redisstore.Store {
	tb.Helper()
	s, err := redisstore.Open(context.Background(), redisstore.Config{URL: url})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

func wsStats(tb testing.TB, s *redisstore.Store, ws string) fleet.WorkspaceStats {
	tb.Helper()
	all, err := s.Stats(context.Background())
	if err != nil {
		tb.Fatal(err)
	}
	for _, st := range all {
		if st.Workspace == ws {
			return st
		}
	}
	return fleet.WorkspaceStats{Workspace: ws}
}

func TestWebhookEndToEnd(t *testing.T) {
	env, store := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": "old-secret," + testSecret})
	d := MustStart(t, env)

	wantCounts(t, d.webhook(t, `[
		{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"qz-win-105","os":"Windows","id":"r1"},
		{"type":"device.registered","qdDeviceId":"d2","workspaceId":"acme","name":"qz-mac","os":"macOS"},
		{"type":"device.online.changed","qdDeviceId":"d1","online":true,"id":"o1","ts":"2026-06-28T07:32:35Z"},
		{"type":"session.started","qdDeviceId":"d1","sessionId":"s1","ts":"2026-06-28T07:30:00Z"},
		{"type":"session.ended","qdDeviceId":"d1","sessionId":"s1","status":"success","durationSec":120},
		{"type":"device.renamed","qdDeviceId":"d1"}]`), 5, 0, 0, 1)
	// Redelivery, a stale change and the same session ended again.
	wantCounts(t, d.webhook(t, `[
		{"type":"device.online.changed","qdDeviceId":"d1","online":true,"id":"o1","ts":"2026-06-28T07:32:35Z"},
		{"type":"device.online.changed","qdDeviceId":"d1","online":false,"ts":"2026-06-28T07:00:00Z"},
		{"type":"session.ended","qdDeviceId":"d1","sessionId":"s1","status":"success","durationSec":120,"id":"again"}]`), 0, 2, 1, 0)
	st := wsStats(t, store, "acme")
	if st.Devices != 2 || st.Online != 1 || st.SessionSeconds != 120 || st.Ended["success"] != 1 {
		t.Fatalf("state = %+v", st)
	}
	// The old secret of a rotation still works.
	r := do(t, nil, "POST", d.base+"/backend/webhook", `{"type":"device.deleted","qdDeviceId":"d2"}`, "x-webhook-secret", "old-secret")
	wantCounts(t, r, 1, 0, 0, 0)
}

func TestWebhookRejectsWholeRequest(t *testing.T) {
	env, store := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	d := MustStart(t, env)
	r := d.webhook(t, `[{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"n","os":"L"},
		{"type":"device.online.changed","qdDeviceId":"bad id","online":true}]`)
	wantError(t, r, 400, "invalid_request")
	if !strings.Contains(r.body["message"].(string), "event 1") {
		t.Fatalf("message does not name the bad event: %s", r.raw)
	}
	if st := wsStats(t, store, "acme"); st.Devices != 0 {
		t.Fatalf("a rejected request applied something: %+v", st)
	}
	wantCounts(t, d.webhook(t, `[]`), 0, 0, 0, 0)
}

func TestWebhookErrors(t *testing.T) {
	env, _ := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	d := MustStart(t, env, "--max-body-bytes", "1024", "--max-batch", "3")
	ok := `{"type":"device.deleted","qdDeviceId":"d1"}`
	for name, tc := range map[string]struct {
		method, path, body string
		hdr                []string
		code               int
		err                string
	}{
		"no secret":     {"POST", "/backend/webhook", ok, nil, 401, "unauthorized"},
		"wrong secret":  {"POST", "/backend/webhook", ok, []string{"x-webhook-secret", "nope"}, 401, "unauthorized"},
		"too large":     {"POST", "/backend/webhook", `[` + strings.Repeat(" ", 2000) + `]`, []string{"x-webhook-secret", testSecret}, 413, "payload_too_large"},
		"batch too big": {"POST", "/backend/webhook", `[` + strings.Repeat(ok+",", 3) + ok + `]`, []string{"x-webhook-secret", testSecret}, 400, "invalid_request"},
		"wrong method":  {"GET", "/backend/webhook", "", nil, 405, "method_not_allowed"},
		"unknown path":  {"GET", "/nope", "", nil, 404, "not_found"},
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, do(t, nil, tc.method, d.base+tc.path, tc.body, tc.hdr...), tc.code, tc.err)
		})
	}
}

func TestRedisDownAnswers503Quickly(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret})
	wantCounts(t, d.webhook(t, `{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"n","os":"L"}`), 1, 0, 0, 0)

	// Paused: commands hang; the answer must still come within the bound.
	store := mustOpenStore(t, srv.URL)
	_ = store
	pause(t, srv, 3000)
	start := time.Now()
	r := d.webhook(t, `{"type":"device.online.changed","qdDeviceId":"d1","online":true}`)
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Fatalf("answer took %v with Redis paused, want ≤ 1s (+ slack)", el)
	}
	wantError(t, r, 503, "unavailable")
	time.Sleep(3 * time.Second) // pause over

	srv.Stop()
	start = time.Now()
	wantError(t, d.webhook(t, `{"type":"device.online.changed","qdDeviceId":"d1","online":true}`), 503, "unavailable")
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Fatalf("answer took %v with Redis down", el)
	}
	wantError(t, do(t, nil, "GET", d.base+"/readyz", ""), 503, "unavailable")
	if r := do(t, nil, "GET", d.base+"/healthz", ""); r.code != 200 {
		t.Fatalf("healthz with Redis down: %d", r.code)
	}

	// Back: fleetd recovers by itself (the restarted Redis has no scripts).
	srv.Restart(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := d.webhook(t, `{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"n","os":"L"}`)
		if r.code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery: %d %s", r.code, r.raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pause makes Redis hold every client's commands for ms milliseconds.
func pause(tb testing.TB, srv *redistest.Server, ms int) {
	tb.Helper()
	s, err := redisstore.Open(context.Background(), redisstore.Config{URL: srv.URL})
	if err != nil {
		tb.Fatal(err)
	}
	defer s.Close()
	if err := s.Raw(context.Background(), "CLIENT", "PAUSE", ms, "ALL"); err != nil {
		tb.Fatal(err)
	}
}

func TestQueueFullAnswers429(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret},
		"--queue-events", "2", "--commit-workers", "1", "--ingest-timeout", "3s", "--redis-timeout", "3s")
	pause(t, srv, 1500)
	var wg sync.WaitGroup
	codes := make(chan reply, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes <- d.webhook(t, fmt.Sprintf(`{"type":"device.deleted","qdDeviceId":"d%d"}`, i))
		}()
	}
	wg.Wait()
	close(codes)
	n429, n200 := 0, 0
	for r := range codes {
		switch r.code {
		case 429:
			wantError(t, r, 429, "rate_limited")
			n429++
		case 200:
			n200++
		default:
			t.Fatalf("unexpected %d %s", r.code, r.raw)
		}
	}
	if n429 == 0 || n200 == 0 {
		t.Fatalf("got %d×200 and %d×429; want both (queue of 2 events, Redis paused)", n200, n429)
	}
}

func TestGracefulShutdownDrains(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret}, "--ingest-timeout", "5s", "--redis-timeout", "5s")
	store := mustOpenStore(t, srv.URL)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	// Warm a kept-alive connection.
	wantCounts(t, do(t, client, "POST", d.base+"/backend/webhook", `{"type":"device.registered","qdDeviceId":"d0","workspaceId":"acme","name":"n","os":"L"}`,
		"x-webhook-secret", testSecret), 1, 0, 0, 0)

	pause(t, srv, 1000) // requests now wait in flight
	inflight := make(chan reply, 1)
	go func() {
		inflight <- d.webhook(t, `{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"n","os":"L"}`)
	}()
	time.Sleep(200 * time.Millisecond)
	stopped := make(chan error, 1)
	go func() { stopped <- d.Shutdown(t) }()
	time.Sleep(100 * time.Millisecond)
	// A request on the kept-alive connection during shutdown: 503 + close.
	r := do(t, client, "POST", d.base+"/backend/webhook", `{"type":"device.deleted","qdDeviceId":"zz"}`, "x-webhook-secret", testSecret)
	wantError(t, r, 503, "unavailable")
	if !r.close {
		t.Fatalf("503 during shutdown without Connection: close: %v", r.header)
	}
	wantCounts(t, <-inflight, 1, 0, 0, 0)
	if err := <-stopped; err != nil {
		t.Fatalf("run returned %v, want nil (exit 0)", err)
	}
	if st := wsStats(t, store, "acme"); st.Devices != 2 {
		t.Fatalf("acknowledged registrations lost: %+v", st)
	}
}

func TestEmbeddedMode(t *testing.T) {
	d := MustStart(t, nil)
	out := d.stdout.String()
	var secret, key string
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export SECRET="); ok {
			secret = v
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export KEY="); ok {
			key = v
		}
	}
	if len(secret) < 32 || !strings.HasPrefix(key, "sk_live_") || len(key) < 40 {
		t.Fatalf("embedded mode must print a generated secret and a demo key; stdout:\n%s", out)
	}
	if !strings.Contains(d.stderr.String(), "NOT durable") {
		t.Fatalf("embedded mode must say loudly that state is not durable; stderr:\n%s", d.stderr)
	}
	r := do(t, nil, "POST", d.base+"/backend/webhook", `[{"type":"device.registered","qdDeviceId":"295758162","workspaceId":"demo","name":"qz-win-105","os":"Windows"},
		{"type":"device.online.changed","qdDeviceId":"295758162","online":true},
		{"type":"session.started","qdDeviceId":"295758162","sessionId":"s1"},
		{"type":"session.ended","qdDeviceId":"295758162","sessionId":"s1","status":"success","durationSec":61}]`, "x-webhook-secret", secret)
	wantCounts(t, r, 4, 0, 0, 0)
	if strings.Contains(d.stderr.String(), secret) || strings.Contains(d.stderr.String(), key) {
		t.Fatal("a secret appeared in the logs")
	}
}

func TestHelpListsEveryFlagWithItsEnv(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"serve", "--help"}, func(string) string { return "" }, &out, &errOut)
	if err != nil || errOut.Len() > 0 {
		t.Fatalf("--help: err = %v, stderr %q", err, errOut.String())
	}
	fs, _ := serveFlags(io.Discard)
	for _, name := range []string{"addr", "redis-url", "redis-cluster", "webhook-secret", "max-body-bytes", "max-batch"} {
		if fs.Lookup(name) == nil {
			t.Errorf("flag --%s missing", name)
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(out.String(), "--"+f.Name+"  (env "+fs.Env(f.Name)+",") {
			t.Errorf("--help does not list --%s with %s", f.Name, fs.Env(f.Name))
		}
	})
}

func TestKeysCLI(t *testing.T) {
	envm, _ := testBackend(t, map[string]string{})
	env := func(k string) string { return envm[k] }
	ctx := context.Background()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"keys", "create", "--workspace", "acme", "--name", "ci", "--read-only"}, env, &stdout, &stderr); err != nil {
		t.Fatal(err, stderr.String())
	}
	key := strings.TrimSpace(stdout.String())
	if !strings.HasPrefix(key, "sk_live_") || len(key) < 40 || strings.Contains(key, "\n") {
		t.Fatalf("stdout must be the key alone: %q", stdout.String())
	}
	id, ok := strings.CutPrefix(strings.TrimSpace(stderr.String()), "id: ")
	if !ok {
		t.Fatalf("stderr must carry the id: %q", stderr.String())
	}
	stdout.Reset()
	if err := run(ctx, []string{"keys", "list", "--workspace", "acme", "--json"}, env, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	var list []map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &list); err != nil || len(list) != 1 {
		t.Fatalf("list --json: %v %s", err, stdout.String())
	}
	k := list[0]
	if k["id"] != id || k["name"] != "ci" || k["workspace"] != "acme" || k["read_only"] != true || k["revoked"] != false || k["last_used_at"] != nil || k["created_at"] == "" {
		t.Fatalf("list entry = %v", k)
	}
	if strings.Contains(stdout.String(), key) {
		t.Fatal("list shows the key itself")
	}
	// Revoke by key, then by id; unknown is an error.
	if err := run(ctx, []string{"keys", "revoke", key}, env, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"keys", "revoke", id}, env, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"keys", "revoke", "key_nope"}, env, &stdout, &stderr); err == nil {
		t.Fatal("revoking an unknown key must fail")
	}
	stdout.Reset()
	run(ctx, []string{"keys", "list", "--workspace", "acme", "--json"}, env, &stdout, &stderr)
	if !strings.Contains(stdout.String(), `"revoked": true`) {
		t.Fatalf("not revoked: %s", stdout.String())
	}
	if err := run(ctx, []string{"members", "add", "--workspace", "acme", "--email", "Owner@Acme.com", "--role", "owner"}, env, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"members", "add", "--workspace", "acme", "--email", "owner@acme.com"}, env, &stdout, &stderr); err == nil {
		t.Fatal("adding the same member twice must fail")
	}
}

// TestREADMEListsEveryFlag keeps the configuration table true to the code.
func TestREADMEListsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	fs, _ := serveFlags(io.Discard)
	fs.VisitAll(func(f *flag.Flag) {
		row := fmt.Sprintf("| `--%s` | `%s` |", f.Name, fs.Env(f.Name))
		if !strings.Contains(string(readme), row) {
			t.Errorf("README's configuration table lacks the row of --%s (%s)", f.Name, row)
		}
	})
}
