package metrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/redistest"
)

// TestPrometheusIntegration runs the real daemon binary against a real
// redis-server, ingests known events over HTTP, lets a real Prometheus
// scrape it, then evaluates every query of the shipped Grafana dashboard
// through Prometheus' HTTP API: each must return data, and the fleet values
// must be what was ingested. It also runs `promtool check metrics` on a raw
// scrape. Missing binaries are failures, never skips.
func TestPrometheusIntegration(t *testing.T) {
	t.Parallel()
	promBin := mustLookPath(t, "prometheus")
	promtool := mustLookPath(t, "promtool")
	queries := MustDashboardQueries(t)

	srv := redistest.Start(t)
	bin := MustBuildFleetd(t)
	addr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	base := "http://" + addr
	MustStartProcess(t, "fleetd", bin, "serve", "--addr", addr, "--redis-url", srv.URL, "--webhook-secret", "s3cret")
	MustWaitHTTP(t, base+"/readyz", 20*time.Second)

	// Known state: acme has 3 devices, 2 online, 1 live session and 150 s
	// of ended sessions (1 success, 1 failed); beta has 1 offline device.
	now := time.Now().UnixMilli()
	ev := func(fields string, ts int64) string { return fmt.Sprintf(`{%s,"ts":%d}`, fields, ts) }
	batch := "[" + strings.Join([]string{
		ev(`"id":"r1","type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"n1","os":"Linux"`, now-60_000),
		ev(`"id":"r2","type":"device.registered","qdDeviceId":"d2","workspaceId":"acme","name":"n2","os":"Windows"`, now-60_000),
		ev(`"id":"r3","type":"device.registered","qdDeviceId":"d3","workspaceId":"acme","name":"n3","os":"macOS"`, now-60_000),
		ev(`"id":"r4","type":"device.registered","qdDeviceId":"b1","workspaceId":"beta","name":"n4","os":"Linux"`, now-60_000),
		ev(`"id":"o1","type":"device.online.changed","qdDeviceId":"d1","online":true`, now-50_000),
		ev(`"id":"o2","type":"device.online.changed","qdDeviceId":"d2","online":true`, now-50_000),
		ev(`"id":"o3","type":"device.online.changed","qdDeviceId":"d3","online":true`, now-50_000),
		ev(`"id":"o4","type":"device.online.changed","qdDeviceId":"d3","online":false`, now-40_000),
		ev(`"id":"s1","type":"session.started","qdDeviceId":"d1","sessionId":"S1"`, now-30_000),
		ev(`"id":"s2","type":"session.ended","qdDeviceId":"d1","sessionId":"S1","status":"success","durationSec":120`, now-20_000),
		ev(`"id":"s3","type":"session.ended","qdDeviceId":"d2","sessionId":"S2","status":"failed","durationSec":30`, now-20_000),
		ev(`"id":"s4","type":"session.started","qdDeviceId":"d2","sessionId":"S3"`, now-10_000),
		ev(`"id":"u1","type":"device.renamed","qdDeviceId":"d2"`, now-10_000),
	}, ",") + "]"
	code, body := mustDo(t, "POST", base+"/backend/webhook", batch, map[string]string{"x-webhook-secret": "s3cret", "content-type": "application/json"})
	if code != 200 {
		t.Fatalf("webhook: %d %s", code, body)
	}
	var counts struct{ Accepted, Duplicate, Stale, Ignored int }
	if err := json.Unmarshal([]byte(body), &counts); err != nil || counts.Accepted != 12 || counts.Ignored != 1 {
		t.Fatalf("webhook answer %s (%v): want 12 accepted and 1 ignored", body, err)
	}
	// A rejected request, so the error paths have series too.
	if code, body := mustDo(t, "POST", base+"/backend/webhook", "[]", map[string]string{"x-webhook-secret": "wrong"}); code != 401 {
		t.Fatalf("webhook with a wrong secret: %d %s", code, body)
	}
	// REST API traffic for the API panels, with a key minted by the CLI.
	key := MustRun(t, bin, "keys", "create", "--workspace", "acme", "--redis-url", srv.URL)
	if code, body := mustDo(t, "GET", base+"/api/v1/devices", "", map[string]string{"x-api-key": key}); code != 200 || !strings.Contains(body, `"d1"`) {
		t.Fatalf("GET /api/v1/devices: %d %s", code, body)
	}

	// promtool on a raw scrape: nothing to say, exit 0.
	_, scrape := mustDo(t, "GET", base+"/metrics", "", nil)
	if !strings.Contains(scrape, `fleet_devices{workspace="acme"} 3`) {
		t.Errorf("the daemon's /metrics lacks fleet_devices{workspace=\"acme\"} 3: is metrics.NewFleetCollector registered in cmd/fleetd?")
	}
	check := exec.Command(promtool, "check", "metrics")
	check.Stdin = strings.NewReader(scrape)
	if out, err := check.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}

	// Prometheus scraping the daemon every second and evaluating the
	// shipped alert rules.
	dir := t.TempDir()
	cfg := filepath.Join(dir, "prometheus.yml")
	alerts, err := filepath.Abs(filepath.Join("..", "deploy", "prometheus", "alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, fmt.Appendf(nil, `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: fleetd
    static_configs:
      - targets: [%q]
`, alerts, addr), 0o644); err != nil {
		t.Fatal(err)
	}
	promAddr := fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))
	MustStartProcess(t, "prometheus", promBin, "--config.file="+cfg, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	prom := "http://" + promAddr
	MustWaitHTTP(t, prom+"/-/ready", 20*time.Second)

	// Rates need two samples in their window: poll until every dashboard
	// query has data, or report the ones that never did.
	deadline := time.Now().Add(20 * time.Second)
	var empty []string
	for {
		empty = empty[:0]
		for _, q := range queries {
			if len(mustPromQuery(t, prom, ExpandDashboardExpr(t, q.Expr))) == 0 {
				empty = append(empty, fmt.Sprintf("%s: %s", q.Panel, q.Expr))
			}
		}
		if len(empty) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	for _, e := range empty {
		t.Errorf("dashboard query returned no data: %s", e)
	}
	t.Logf("%d dashboard queries evaluated by Prometheus", len(queries))
	checkAlertRules(t, prom)

	for expr, want := range map[string]float64{
		`fleet_devices{workspace="acme"}`:                                              3,
		`fleet_devices_online{workspace="acme"}`:                                       2,
		`fleet_sessions_live{workspace="acme"}`:                                        1,
		`fleet_session_seconds_total{workspace="acme"}`:                                150,
		`fleet_sessions_ended_total{workspace="acme",status="success"}`:                1,
		`fleet_sessions_ended_total{workspace="acme",status="failed"}`:                 1,
		`fleet_devices{workspace="beta"}`:                                              1,
		`fleet_devices_online{workspace="beta"}`:                                       0,
		`fleet_session_seconds_total{workspace="beta"}`:                                0,
		`fleet_sessions_ended_total{workspace="beta",status="success"}`:                0,
		`sum(fleet_devices)`:                                                           4,
		`fleetd_fleet_collect_success`:                                                 1,
		`sum(fleetd_webhook_events_total{type="device.registered",result="accepted"})`: 4,
		`sum(fleetd_webhook_events_total{result="ignored"})`:                           1,
		`sum(fleetd_webhook_requests_total{code="401"})`:                               1,
	} {
		vals := mustPromQuery(t, prom, expr)
		if len(vals) != 1 || vals[0] != want {
			t.Errorf("%s = %v, want %v", expr, vals, want)
		}
	}
}

// checkAlertRules: every shipped rule loaded and evaluated without error
// against the real daemon's series, and none fires on a healthy one.
func checkAlertRules(t *testing.T, prom string) {
	t.Helper()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name           string `json:"name"`
					Health         string `json:"health"`
					LastError      string `json:"lastError"`
					State          string `json:"state"`
					LastEvaluation string `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body := mustDo(t, "GET", prom+"/api/v1/rules?type=alert", "", nil)
		if err := json.Unmarshal([]byte(body), &r); err != nil {
			t.Fatalf("rules: %v %s", err, body)
		}
		pending := len(r.Data.Groups) == 0
		for _, g := range r.Data.Groups {
			for _, rule := range g.Rules {
				if rule.Health == "unknown" || strings.HasPrefix(rule.LastEvaluation, "0001") {
					pending = true
				}
			}
		}
		if !pending || time.Now().After(deadline) {
			break
		}
		time.Sleep(300 * time.Millisecond)
	}
	n := 0
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			n++
			if rule.Health != "ok" {
				t.Errorf("alert %s: health %q %s", rule.Name, rule.Health, rule.LastError)
			}
			if rule.State == "firing" {
				t.Errorf("alert %s fires on a healthy fleetd", rule.Name)
			}
		}
	}
	if n < 10 {
		t.Errorf("Prometheus loaded %d alert rules from alerts.yml, want at least 10", n)
	}
	t.Logf("%d alert rules loaded and evaluated by Prometheus", n)
}

func mustLookPath(tb testing.TB, name string) string {
	tb.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("%s not found in PATH: install it (apt-get install prometheus provides prometheus and promtool)", name)
	}
	return p
}

// MustBuildFleetd builds the daemon binary from the module root that
// `go env GOMOD` names, into a directory removed when the test ends.
func MustBuildFleetd(tb testing.TB) string {
	tb.Helper()
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		tb.Fatalf("go env GOMOD: %v", err)
	}
	bin := filepath.Join(tb.TempDir(), "fleetd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/fleetd")
	cmd.Dir = filepath.Dir(strings.TrimSpace(string(gomod)))
	if out, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build ./cmd/fleetd: %v\n%s", err, out)
	}
	return bin
}

// MustStartProcess starts a long-running process whose output goes to a
// log file that is shown if the test fails; it is stopped with SIGTERM
// (then killed) when the test ends.
func MustStartProcess(tb testing.TB, name, bin string, args ...string) {
	tb.Helper()
	logPath := filepath.Join(tb.TempDir(), name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	tb.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if tb.Failed() {
			b, _ := os.ReadFile(logPath)
			tb.Logf("%s log:\n%s", name, b)
		}
	})
}

// MustRun runs a command to completion and returns its trimmed stdout.
func MustRun(tb testing.TB, bin string, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %v: %v\n%s", bin, args, err, stderr.Bytes())
	}
	return strings.TrimSpace(stdout.String())
}

// MustWaitHTTP waits until GET url answers 200.
func MustWaitHTTP(tb testing.TB, url string, within time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(within)
	c := &http.Client{Timeout: time.Second}
	for {
		resp, err := c.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not answer 200 within %v (last: %v)", url, within, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func mustDo(tb testing.TB, method, url, body string, header map[string]string) (int, string) {
	tb.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		tb.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode, string(b)
}

// mustPromQuery evaluates an instant query and returns the sample values
// (NaN included: a quantile of no traffic is still data).
func mustPromQuery(tb testing.TB, prom, expr string) []float64 {
	tb.Helper()
	code, body := mustDo(tb, "GET", prom+"/api/v1/query?query="+url.QueryEscape(expr), "", nil)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != 200 || r.Status != "success" {
		tb.Fatalf("query %s: %d %s %v", expr, code, body, err)
	}
	if r.Data.ResultType != "vector" {
		tb.Fatalf("query %s: result type %s, want vector", expr, r.Data.ResultType)
	}
	out := make([]float64, 0, len(r.Data.Result))
	for _, s := range r.Data.Result {
		str, _ := s.Value[1].(string)
		v, err := strconv.ParseFloat(str, 64)
		if err != nil {
			tb.Fatalf("query %s: value %v", expr, s.Value[1])
		}
		out = append(out, v)
	}
	return out
}
