package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/syncbuf"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/loadtest"
	"github.com/fleetd/fleetd/redisstore"
)

// loadRun is a fleetd loadtest running in the background against base,
// verifying at the end through the REST API (keys minted in store) and
// /metrics.
type loadRun struct {
	out  *syncbuf.Buffer
	done chan error
	// diag, if set, adds what the test knows of the system to a failure.
	diag func() string
}

func startLoad(tb testing.TB, base string, store fleet.KeyStore, args ...string) *loadRun {
	tb.Helper()
	l := &loadRun{out: &syncbuf.Buffer{}, done: make(chan error, 1)}
	args = append([]string{"--target", base, "--webhook-secret", testSecret, "--devices", "300", "--workspaces", "6",
		"--connections", "16", "--batch", "5", "--progress", "plain", "--retries", "60"}, args...)
	// Minting retries while the store is unavailable: on a cluster that
	// just failed over, the first writes may still find no master.
	opts := loadtest.Options{MintKey: func(ctx context.Context, ws string) (string, error) {
		deadline := time.Now().Add(30 * time.Second)
		for {
			k, _, err := createKey(ctx, store, ws, "faults", true)
			if err == nil || fleet.ErrorCode(err) != fleet.EUNAVAILABLE || time.Now().After(deadline) {
				return k, err
			}
			time.Sleep(200 * time.Millisecond)
		}
	}}
	go func() {
		l.done <- loadtest.Main(context.Background(), args, func(string) string { return "" }, l.out, l.out, opts)
	}()
	return l
}

// wait returns the load test's error and prints its output on failure.
func (l *loadRun) wait(tb testing.TB) {
	tb.Helper()
	select {
	case err := <-l.done:
		if err != nil {
			tb.Fatalf("load test failed: %v\n%s%s", err, l.out, l.diagnose())
		}
		if !strings.Contains(l.out.String(), "verify: PASS") {
			tb.Fatalf("no verification in the load test output:\n%s%s", l.out, l.diagnose())
		}
		tb.Logf("load test:\n%s", l.out)
	case <-time.After(3 * time.Minute):
		tb.Fatalf("load test did not finish:\n%s%s", l.out, l.diagnose())
	}
}

func (l *loadRun) diagnose() string {
	if l.diag == nil {
		return ""
	}
	return "\n" + l.diag()
}

// TestRedisKilledMidLoad: Redis (AOF, appendfsync always) is killed -9
// during a load and restarted; fleetd answers 503 meanwhile, recovers
// without a restart, and the verifier finds every acknowledged event.
func TestRedisKilledMidLoad(t *testing.T) {
	srv := redistest.Start(t, "--appendonly", "yes", "--appendfsync", "always")
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret})
	store := mustOpenStore(t, srv.URL)
	l := startLoad(t, d.base, store, "--duration", "6s")
	time.Sleep(2 * time.Second)
	srv.Stop()
	time.Sleep(time.Second)
	srv.Restart(t)
	l.wait(t)
	if !strings.Contains(l.out.String(), "503=") {
		t.Errorf("expected 503 answers while Redis was down:\n%s", l.out)
	}
}

// TestRedisPausedMidLoad: CLIENT PAUSE during a load gives 503s within the
// bound (the load test retries them) and loses nothing.
func TestRedisPausedMidLoad(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret})
	store := mustOpenStore(t, srv.URL)
	l := startLoad(t, d.base, store, "--duration", "5s")
	time.Sleep(2 * time.Second)
	pause(t, srv, 2000)
	l.wait(t)
}

// TestSIGTERMMidLoad: fleetd is stopped gracefully during a load (run
// returns nil: exit 0) and started again on the same address; the load
// test retries what was refused, and nothing acknowledged is lost.
func TestSIGTERMMidLoad(t *testing.T) {
	srv := redistest.Start(t)
	port := redistest.FreePort(t)
	env := map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret}
	d := MustStartOn(t, port, env)
	store := mustOpenStore(t, srv.URL)
	l := startLoad(t, d.base, store, "--duration", "6s")
	time.Sleep(2 * time.Second)
	if err := d.Shutdown(t); err != nil {
		t.Fatalf("graceful stop: run returned %v, want nil", err)
	}
	MustStartOn(t, port, env)
	l.wait(t)
}

// TestKill9MidLoad: the fleetd process is killed -9 during a load and
// started again; every acknowledged event was committed before its ack.
func TestKill9MidLoad(t *testing.T) {
	srv := redistest.Start(t)
	bin := filepath.Join(t.TempDir(), "fleetd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	port := redistest.FreePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "--addr", addr, "--log-level", "warn")
		cmd.Env = append(os.Environ(), "FLEETD_REDIS_URL="+srv.URL, "FLEETD_WEBHOOK_SECRET="+testSecret)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		waitHealthy(t, "http://"+addr)
		return cmd
	}
	p := start()
	store := mustOpenStore(t, srv.URL)
	l := startLoad(t, "http://"+addr, store, "--duration", "6s")
	time.Sleep(2 * time.Second)
	p.Process.Signal(syscall.SIGKILL)
	p.Wait()
	time.Sleep(500 * time.Millisecond)
	start()
	l.wait(t)
}

// TestClusterFailoverMidLoad: on a real Redis Cluster, a replica is
// promoted (CLUSTER FAILOVER) and, later, a master is killed during a
// load; fleetd answers 503 while a slot has no master, recovers by itself,
// and the verifier counts no acknowledged event lost.
func TestClusterFailoverMidLoad(t *testing.T) {
	c := redistest.StartCluster(t, "--appendonly", "yes", "--appendfsync", "always")
	env := map[string]string{"FLEETD_REDIS_CLUSTER": c.Seeds(), "FLEETD_WEBHOOK_SECRET": testSecret}
	d := MustStart(t, env)
	store, err := redisstore.Open(context.Background(), redisstore.Config{Cluster: c.Addrs()})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	l := startLoad(t, d.base, store, "--duration", "10s")
	l.diag = func() string {
		var b strings.Builder
		for _, n := range c.Nodes {
			nodes, err := n.Do("CLUSTER", "NODES")
			fmt.Fprintf(&b, "CLUSTER NODES at %s (err %v):\n%s\n", n.Addr, err, nodes)
		}
		fmt.Fprintf(&b, "fleetd log:\n%s", d.stderr)
		return b.String()
	}
	time.Sleep(2 * time.Second)
	// Promote a replica.
	var promoted *redistest.Server
	for _, n := range c.Nodes {
		role, err := n.Do("ROLE")
		if err == nil && strings.HasPrefix(role, "slave") {
			if _, err := n.Do("CLUSTER", "FAILOVER"); err != nil {
				t.Fatalf("cluster failover: %v", err)
			}
			promoted = n
			break
		}
	}
	if promoted == nil {
		t.Fatal("no replica to promote")
	}
	// The harness waits for the promotion and for every replica to be in
	// sync before the kill: a master killed while its replica is still
	// resyncing leaves its slots without a master for good, which no
	// client can heal (on a loaded machine the failover takes seconds).
	promoted.WaitRole(t, "master", 30*time.Second)
	c.WaitOK(t, 30*time.Second)
	c.WaitReplicasInSync(t, 30*time.Second)
	time.Sleep(time.Second)
	// Kill a master: its replica takes over after the node timeout.
	c.Masters(t)[0].Stop()
	l.wait(t)
	c.WaitOK(t, 30*time.Second)
}

// MustStartOn is MustStart on a given port.
func MustStartOn(tb testing.TB, port int, env map[string]string, args ...string) *daemon {
	tb.Helper()
	return mustStartAt(tb, port, env, args...)
}

func waitHealthy(tb testing.TB, base string) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := httpGet(base + "/healthz"); err == nil && r == 200 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	tb.Fatalf("%s did not become healthy", base)
}
