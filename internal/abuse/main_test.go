package main

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/internal/syncbuf"
)

// The cases of scripts/bounds.sh at a tiny size, each against a real
// redis-server and the real fleetd binary, so that the driver cannot rot:
// every figure the script prints comes from a code path run here.

var (
	buildOnce sync.Once
	fleetdBin string
	buildErr  error
	buildOut  []byte
)

// mustFleetd builds ./cmd/fleetd once per test binary.
func mustFleetd(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "abuse-fleetd-")
		if err != nil {
			buildErr = err
			return
		}
		fleetdBin = filepath.Join(dir, "fleetd")
		cmd := exec.Command("go", "build", "-o", fleetdBin, "github.com/fleetd/fleetd/cmd/fleetd")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build ./cmd/fleetd: %v\n%s", buildErr, buildOut)
	}
	return fleetdBin
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fleetdBin != "" {
		os.RemoveAll(filepath.Dir(fleetdBin))
	}
	os.Exit(code)
}

// mustDaemon starts a redis-server and fleetd with flags on loopback and
// returns the driver's options for it, with an API key of workspace acme
// when withKey (which makes acme a known workspace), and the environment
// that starts another replica on the same Redis (mustReplica).
func mustDaemon(t *testing.T, withKey bool, flags ...string) (options, []string) {
	t.Helper()
	bin := mustFleetd(t)
	srv := redistest.Start(t)
	env := append(os.Environ(), "FLEETD_REDIS_URL="+srv.URL, "FLEETD_WEBHOOK_SECRET=abuse-test-secret")
	addr, pid := mustReplica(t, env, flags...)
	o := options{addr: addr, pid: pid, secret: "abuse-test-secret",
		out: &testWriter{t: t}, workspace: "acme", samples: 2, scrapeGap: 0, overflowWait: 5 * time.Second}
	if withKey {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		keys := exec.CommandContext(ctx, bin, "keys", "create", "--workspace", "acme")
		keys.Env = env
		key, err := keys.Output()
		if err != nil {
			t.Fatalf("fleetd keys create: %v", err)
		}
		o.key = strings.TrimSpace(string(key))
	}
	return o, env
}

// mustReplica starts fleetd with env and flags on a free loopback port,
// waits until it is ready and stops it when the test ends.
func mustReplica(t *testing.T, env []string, flags ...string) (addr string, pid int) {
	t.Helper()
	addr = "127.0.0.1:" + strconv.Itoa(redistest.FreePort(t))
	var log syncbuf.Buffer
	cmd := exec.Command(mustFleetd(t), append([]string{"serve", "--addr", addr, "--log-level", "warn", "--shutdown-grace", "0s"}, flags...)...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start fleetd: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("fleetd on %s, log:\n%s", addr, log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return addr, cmd.Process.Pid
			}
		}
		select {
		case <-done:
			t.Fatalf("fleetd exited at start:\n%s", log.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("fleetd not ready within 10 s:\n%s", log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// testWriter sends the driver's report to the test log.
type testWriter struct{ t *testing.T }

func (w *testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// TestKept: 30 kept session events with --max-kept-events 10: the
// registration answers 200 at once, 20 are dropped and counted, the device
// lists the newest 10, and the other sender was answered throughout by
// both replicas.
func TestKept(t *testing.T) {
	o, env := mustDaemon(t, true, "--max-kept-events", "10")
	o.otherAddr, _ = mustReplica(t, env, "--max-kept-events", "10")
	o.events, o.rate, o.others, o.phase = 30, 50, 5, 200*time.Millisecond
	r, err := kept(o)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Registered || len(r.Attempts) != 1 {
		t.Errorf("registration attempts %v, want one answered 200", r.Attempts)
	}
	if !r.HasDropped || r.Dropped != 20 {
		t.Errorf("fleetd_pending_dropped_total %v (there: %v), want 20", r.Dropped, r.HasDropped)
	}
	if r.ListErr != nil || r.Listed != 10 {
		t.Errorf("listed %d sessions (%v), want 10", r.Listed, r.ListErr)
	}
	for name, p := range map[string]steadyPhase{"before": r.Before, "during": r.During, "after": r.After,
		"other replica before": r.OtherBefore, "other replica during": r.OtherDuring, "other replica after": r.OtherAfter} {
		if p.N != p.Codes[200] {
			t.Errorf("other sender %s: %v, want every webhook answered 200", name, p)
		}
	}
	if r.Before.N == 0 || r.After.N == 0 || r.OtherBefore.N == 0 || r.OtherAfter.N == 0 {
		t.Errorf("other sender: %d+%d webhooks before and %d+%d after, want some to each replica", r.Before.N, r.OtherBefore.N, r.After.N, r.OtherAfter.N)
	}
}

// TestWorkspaces: 3 then 8 workspaces with --metrics-max-workspaces 5:
// no overflow at 3; at 8 the _overflow series, 3 workspaces in it.
func TestWorkspaces(t *testing.T) {
	o, _ := mustDaemon(t, false, "--metrics-max-workspaces", "5", "--max-workspaces", "0", "--metrics-share", "0")
	o.steps = []int{3, 8}
	steps, err := workspaces(o)
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 2 {
		t.Fatalf("%d steps measured, want 2", len(steps))
	}
	if s := steps[0]; s.OverflowAt != 0 || s.CompleteAt != 0 || s.Overflowed != 0 || s.Steady.Overflow != 0 {
		t.Errorf("3 workspaces: overflow at %v, %v overflowed, %d scrapes with _overflow: want none", s.OverflowAt, s.Overflowed, s.Steady.Overflow)
	}
	if s := steps[1]; s.OverflowAt < 0 || s.CompleteAt < 0 || s.Overflowed != 3 || s.Steady.Overflow != o.samples {
		t.Errorf("8 workspaces: overflow at %v, complete at %v, %v overflowed, %d of %d scrapes with _overflow: want 3 in it, in every scrape",
			s.OverflowAt, s.CompleteAt, s.Overflowed, s.Steady.Overflow, o.samples)
	}
	for _, s := range steps {
		if s.Steady.Fleet != o.samples || s.Steady.Took.N != o.samples || s.RSS <= 0 {
			t.Errorf("%d workspaces: %v, RSS %d: want %d scrapes with fleet series and an RSS", s.Workspaces, s.Steady, s.RSS, o.samples)
		}
	}
	if v, _ := metricValue(steps[1].Steady.Last.Text, "fleetd_fleet_workspaces"); v != 8 {
		t.Errorf("fleetd_fleet_workspaces %v, want 8", v)
	}
}

// TestStatuses: 20 distinct statuses are folded into "other": the
// workspace keeps two status series.
func TestStatuses(t *testing.T) {
	o, _ := mustDaemon(t, true, "--metrics-share", "0")
	o.statusCount = 20
	r, err := statuses(o)
	if err != nil {
		t.Fatal(err)
	}
	if r.SeriesBefore != 1 || r.SeriesAfter != 2 {
		t.Errorf("status series of acme: %d before, %d after, want 1 (success) and 2 (success, other)", r.SeriesBefore, r.SeriesAfter)
	}
	if r.Before.Fleet != o.samples || r.After.Fleet != o.samples {
		t.Errorf("scrapes with fleet series: %d before, %d after, want %d each", r.Before.Fleet, r.After.Fleet, o.samples)
	}
	if v, _ := metricValue(r.After.Last.Text, `fleet_sessions_ended_total{status="other",workspace="acme"}`); v != 20 {
		t.Errorf(`fleet_sessions_ended_total{status="other",workspace="acme"} %v, want 20`, v)
	}
}

// TestListings: 200 sessions on 5 devices; each filtered listing is
// answered 200 with exactly the sessions of its filter.
func TestListings(t *testing.T) {
	o, _ := mustDaemon(t, true)
	o.sessions, o.devices, o.failedEvery, o.liveEvery, o.requests = 200, 5, 10, 25, 3
	r, err := listings(o)
	if err != nil {
		t.Fatal(err)
	}
	// Failed: every 10th but the live ones (every 50th); live: every 25th.
	want := map[string]int{"status=failed&limit=50": 16, "status=live&limit=50": 8, "device_id=D&limit=50": 40}
	if r.Failed != 16 || r.Live != 8 || len(r.Queries) != len(want) {
		t.Fatalf("%d failed, %d live, %d queries: want 16, 8, %d", r.Failed, r.Live, len(r.Queries), len(want))
	}
	for _, q := range r.Queries {
		if q.Codes[200] != o.requests || q.Items != want[q.Query] || q.Wrong != "" || q.Took.N != o.requests {
			t.Errorf("%s: %v, %s, %d items, outside the filter %q: want %d × 200 of %d items", q.Query, q.Took, codes(q.Codes), q.Items, q.Wrong, o.requests, want[q.Query])
		}
	}
}
