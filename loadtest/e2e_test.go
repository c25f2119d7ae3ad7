package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/cli"
)

const testSecret = "s3cret-for-tests"

// runMain runs Main against the fake with args and returns stdout, stderr
// and the error.
func runMain(tb testing.TB, args []string, opts Options) (string, string, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	env := func(k string) string {
		if k == "FLEETD_WEBHOOK_SECRET" {
			return "whsec_ignored," + testSecret
		}
		return ""
	}
	err := Main(ctx, args, env, &stdout, &stderr, opts)
	return stdout.String(), stderr.String(), err
}

func readResult(tb testing.TB, path string) map[string]any {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		tb.Fatalf("--json output is not JSON: %v", err)
	}
	return m
}

func num(tb testing.TB, m map[string]any, path ...string) float64 {
	tb.Helper()
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			tb.Fatalf("json path %v: %v is not an object", path, cur)
		}
		cur = mm[p]
	}
	f, ok := cur.(float64)
	if !ok {
		tb.Fatalf("json path %v: %v is not a number", path, cur)
	}
	return f
}

func TestMainCleanClosedLoopPasses(t *testing.T) {
	fake := newFakeFleetd(testSecret)
	srv := fake.start(t)
	dir := t.TempDir()
	jsonPath, htmlPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	stdout, stderr, err := runMain(t, []string{
		"--target", srv.URL, "--devices", "40", "--workspaces", "4", "--events", "1500", "--duration", "0",
		"--connections", "4", "--batch", "4", "--duplicates", "0.1", "--reorder", "0.3",
		"--progress", "off", "--json", jsonPath, "--html", htmlPath,
	}, Options{MintKey: fake.mintKey})
	if err != nil {
		t.Fatalf("Main: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "verify: PASS") || !strings.Contains(stdout, "REST API of 4") {
		t.Errorf("summary lacks the verification pass:\n%s", stdout)
	}
	for _, want := range []string{"p50", "p99.9", "events/s", "statuses: 200=", "server counts: accepted="} {
		if !strings.Contains(stdout, want) {
			t.Errorf("summary lacks %q:\n%s", want, stdout)
		}
	}
	res := readResult(t, jsonPath)
	if got := num(t, res, "load", "events"); got != 1500 {
		t.Errorf("load events = %v, want 1500", got)
	}
	if num(t, res, "load", "server_counts", "duplicate") == 0 || num(t, res, "load", "server_counts", "stale") == 0 {
		t.Errorf("want redeliveries counted duplicate and late online changes stale, got %v", res["load"].(map[string]any)["server_counts"])
	}
	if res["passed"] != true || res["verification"].(map[string]any)["passed"] != true {
		t.Errorf("JSON result not passed: %v", res["verification"])
	}
	raw := string(must(os.ReadFile(jsonPath)))
	if strings.Contains(raw, "null") || !strings.Contains(raw, `"differences": []`) || !strings.Contains(raw, `"errors": []`) {
		t.Errorf("empty lists of the JSON result must be [], not null or absent:\n%s", raw)
	}
	for _, want := range []string{`class="percentiles"`, `ms (log)`, `>99.9%<`} {
		if !strings.Contains(string(must(os.ReadFile(htmlPath))), want) {
			t.Errorf("HTML percentile chart lacks %s", want)
		}
	}
	if n := strings.Count(string(must(os.ReadFile(htmlPath))), `class="ptlab"`); n != len(res["latency_percentiles"].([]any)) {
		t.Errorf("percentile chart labels %d points, want all %d", n, len(res["latency_percentiles"].([]any)))
	}
	page, err := os.ReadFile(htmlPath)
	if err != nil {
		t.Fatal(err)
	}
	html := string(page)
	if !strings.Contains(html, "<svg") || strings.Contains(html, "<script") || strings.Contains(html, "http://fonts") {
		t.Errorf("HTML report must have inline SVG and no external resources")
	}
	if strings.Contains(stdout+stderr+html+string(must(os.ReadFile(jsonPath))), testSecret) {
		t.Errorf("the webhook secret leaked into the output")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestMainOpenLoopRetries503AndUsesAPIKeyFlag(t *testing.T) {
	fake := newFakeFleetd(testSecret)
	fake.every503 = 7
	srv := fake.start(t)
	keys := make([]string, 0, 3)
	for i := range 3 {
		ws := "lt-openrun-" + string(rune('0'+i))
		key, _ := fake.mintKey(context.Background(), ws)
		keys = append(keys, ws+"="+key)
	}
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	stdout, stderr, err := runMain(t, []string{
		"--target", srv.URL, "--run-id", "openrun", "--devices", "30", "--workspaces", "3",
		"--rate", "1500", "--duration", "800ms", "--connections", "8",
		"--api-key", strings.Join(keys, ","), "--progress", "plain", "--json", jsonPath,
	}, Options{})
	if err != nil {
		t.Fatalf("Main: %v\nstdout:\n%s\nstderr:\n%s", err, stdout, stderr)
	}
	res := readResult(t, jsonPath)
	if num(t, res, "load", "retries") == 0 || num(t, res, "load", "status_counts", "503") == 0 {
		t.Errorf("injected 503s were not retried: %v", res["load"])
	}
	if got := num(t, res, "verification", "rest_workspaces_checked"); got != 3 {
		t.Errorf("REST checked for %v workspaces, want 3", got)
	}
	if ev := num(t, res, "load", "events"); ev < 600 || ev > 1300 {
		t.Errorf("open loop at 1500/s for 0.8s sent %v events", ev)
	}
	if tl := res["load"].(map[string]any)["timeline"].([]any); len(tl) == 0 {
		t.Errorf("empty timeline")
	}
}

func TestMainDropEveryFailsVerification(t *testing.T) {
	fake := newFakeFleetd(testSecret)
	srv := fake.start(t)
	stdout, stderr, err := runMain(t, []string{
		"--target", srv.URL, "--devices", "30", "--workspaces", "3", "--events", "300", "--duration", "0",
		"--connections", "2", "--drop-every", "7", "--progress", "off",
	}, Options{MintKey: fake.mintKey})
	if err == nil {
		t.Fatalf("Main passed although every 7th event was dropped\nstdout:\n%s\nstderr:\n%s", stdout, stderr)
	}
	if !strings.Contains(err.Error(), "verification failed") {
		t.Errorf("error = %v, want a verification failure", err)
	}
	for _, want := range []string{"verify: FAIL", "DIFF workspace=lt-", "field=/metrics fleet_devices ", "expected=10"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout)
		}
	}
}

func TestMainCatchesDoubleCountedMinutes(t *testing.T) {
	fake := newFakeFleetd(testSecret)
	fake.countEndedTwice = true
	srv := fake.start(t)
	stdout, _, err := runMain(t, []string{
		"--target", srv.URL, "--devices", "20", "--workspaces", "2", "--events", "2000", "--duration", "0",
		"--connections", "2", "--duplicates", "0.5", "--progress", "off",
	}, Options{MintKey: fake.mintKey})
	if err == nil {
		t.Fatalf("Main passed although the server double-counts redelivered session ends\n%s", stdout)
	}
	if !strings.Contains(stdout, "fleet_session_seconds_total") || !strings.Contains(stdout, "usage.session_seconds") {
		t.Errorf("want session seconds differences on /metrics and the REST API:\n%s", stdout)
	}
}

// TestMainWithoutKeysFailsUnlessMetricsOnly: a run that could not check
// the REST API says so in its result line and fails, unless
// --verify=metrics asked for /metrics only.
func TestMainWithoutKeysFailsUnlessMetricsOnly(t *testing.T) {
	fake := newFakeFleetd(testSecret)
	srv := fake.start(t)
	args := []string{"--target", srv.URL, "--devices", "10", "--workspaces", "2", "--events", "100", "--progress", "off"}
	jsonPath := filepath.Join(t.TempDir(), "r.json")
	stdout, stderr, err := runMain(t, append(args, "--json", jsonPath), Options{MintKey: func(context.Context, string) (string, error) { return "", ErrNoStore }})
	if err == nil || !strings.Contains(err.Error(), "REST API of 2 of 2 workspaces was not checked") {
		t.Fatalf("err = %v, want the unchecked REST API to fail the run\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stderr, "REST API verification SKIPPED") {
		t.Errorf("stderr lacks the loud skip message:\n%s", stderr)
	}
	if !strings.Contains(stdout, "verify: FAIL: the REST API of 2 of 2 workspaces was NOT checked") {
		t.Errorf("the result line does not say the REST API was not checked:\n%s", stdout)
	}
	res := readResult(t, jsonPath)
	if res["passed"] != false || num(t, res, "verification", "rest_workspaces_skipped") != 2 {
		t.Errorf("JSON result: passed %v, verification %v", res["passed"], res["verification"])
	}

	stdout, stderr, err = runMain(t, append(args, "--verify=metrics"), Options{})
	if err != nil {
		t.Fatalf("--verify=metrics: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "verify: PASS (metrics only, --verify=metrics; the REST API was not checked)") {
		t.Errorf("--verify=metrics result line:\n%s", stdout)
	}
}

// TestMainCleanupDeletesTheRunsWorkspaces: --cleanup hands every workspace
// of the run to Options.Cleanup after verification, and fails the run
// when there is no store to clean.
func TestMainCleanupDeletesTheRunsWorkspaces(t *testing.T) {
	fake := newFakeFleetd(testSecret)
	srv := fake.start(t)
	var deleted []string
	args := []string{"--target", srv.URL, "--run-id", "clean", "--devices", "9", "--workspaces", "3", "--events", "60", "--progress", "off", "--cleanup"}
	stdout, stderr, err := runMain(t, args, Options{MintKey: fake.mintKey, Cleanup: func(_ context.Context, wss []string) error {
		deleted = append(deleted, wss...)
		return nil
	}})
	if err != nil {
		t.Fatalf("Main: %v\n%s\n%s", err, stdout, stderr)
	}
	if want := []string{"lt-clean-0", "lt-clean-1", "lt-clean-2"}; strings.Join(deleted, ",") != strings.Join(want, ",") {
		t.Errorf("cleanup deleted %v, want %v", deleted, want)
	}
	if !strings.Contains(stdout, "cleanup: deleted the 3 workspaces of run clean") || !strings.Contains(stdout, "verify: PASS") {
		t.Errorf("summary:\n%s", stdout)
	}
	if _, _, err := runMain(t, append(args[:len(args)-1:len(args)-1], "--run-id", "clean2", "--cleanup"), Options{MintKey: fake.mintKey}); err == nil || !strings.Contains(err.Error(), "--cleanup") {
		t.Errorf("--cleanup without a store: err = %v", err)
	}
}

func TestMainWrongSecretFails(t *testing.T) {
	fake := newFakeFleetd(testSecret)
	srv := fake.start(t)
	_, _, err := runMain(t, []string{
		"--target", srv.URL, "--webhook-secret", "wrong", "--devices", "10", "--workspaces", "2", "--events", "50", "--progress", "off",
	}, Options{})
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("err = %v, want the 401 explained", err)
	}
}

func TestMainUnreachableTarget(t *testing.T) {
	_, _, err := runMain(t, []string{"--target", "http://127.0.0.1:1", "--progress", "off"}, Options{})
	if err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Fatalf("err = %v, want an unreachable target error", err)
	}
}

func TestMainBaseline(t *testing.T) {
	stdout, stderr, err := runMain(t, []string{
		"--baseline", "--devices", "20", "--workspaces", "2", "--duration", "300ms", "--connections", "4", "--batch", "2", "--progress", "off",
	}, Options{})
	if err != nil {
		t.Fatalf("Main: %v\n%s\n%s", err, stdout, stderr)
	}
	if !strings.Contains(stdout, "bare HTTP rate") || !strings.Contains(stdout, "204=") {
		t.Errorf("baseline summary:\n%s", stdout)
	}
}

func TestMainBaselineRPSComparison(t *testing.T) {
	fake := newFakeFleetd(testSecret)
	srv := fake.start(t)
	stdout, _, err := runMain(t, []string{
		"--target", srv.URL, "--devices", "10", "--workspaces", "1", "--events", "50", "--verify=false",
		"--baseline-rps", "1000000", "--progress", "off",
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, "x the bare HTTP rate (1000000 requests/s)") || !strings.Contains(stdout, "verify: skipped") {
		t.Errorf("summary:\n%s", stdout)
	}
}

func TestMainHelp(t *testing.T) {
	stdout, stderr, err := runMain(t, []string{"--help"}, Options{})
	if !errors.Is(err, cli.ErrHelp) || stderr != "" {
		t.Fatalf("--help: %v, stderr %q", err, stderr)
	}
	for _, flag := range []string{"target", "devices", "workspaces", "run-id", "connections", "rate", "duration",
		"events", "batch", "duplicates", "reorder", "verify", "cleanup", "api-key", "json", "html", "baseline", "baseline-rps", "drop-every", "progress"} {
		env := "FLEETD_LOADTEST_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
		if !strings.Contains(stdout, "  --"+flag+"  (env "+env+",") {
			t.Errorf("help lacks --%s with %s", flag, env)
		}
	}
	if !strings.Contains(stdout, "  --webhook-secret  (env FLEETD_WEBHOOK_SECRET,") {
		t.Errorf("help lacks --webhook-secret with FLEETD_WEBHOOK_SECRET:\n%s", stdout)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	tests := map[string][]string{
		"zero devices":       {"--devices", "0"},
		"more ws than dev":   {"--devices", "2", "--workspaces", "3"},
		"bad run id":         {"--run-id", "a/b"},
		"no bound":           {"--duration", "0", "--events", "0"},
		"share out of range": {"--duplicates", "1.5"},
		"bad progress":       {"--progress", "loud"},
		"bad api key":        {"--api-key", "novalue"},
		"positional":         {"extra"},
		"unknown flag":       {"--nope"},
	}
	for name, args := range tests {
		t.Run(name, func(t *testing.T) {
			var out bytes.Buffer
			_, err := parseFlags(args, nil, &out, nil)
			var ue *cli.UsageError
			if !errors.As(err, &ue) || strings.Contains(ue.Error(), "\n") {
				t.Errorf("parseFlags(%q) = %v, want a one-line usage error", args, err)
			}
		})
	}
}

func TestParseTarget(t *testing.T) {
	tests := map[string]struct {
		in       string
		addr     string
		loopback bool
		bad      bool
	}{
		"default":   {in: "http://127.0.0.1:8080", addr: "127.0.0.1:8080", loopback: true},
		"localhost": {in: "http://localhost", addr: "localhost:80", loopback: true},
		"ipv6":      {in: "https://[::1]:9", addr: "[::1]:9", loopback: true},
		"remote":    {in: "http://10.0.0.1:8080/", addr: "10.0.0.1:8080"},
		"path":      {in: "http://127.0.0.1:8080/backend", bad: true},
		"scheme":    {in: "ftp://127.0.0.1", bad: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseTarget(tc.in)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted %q", tc.in)
				}
				return
			}
			if err != nil || got.addr != tc.addr || got.isLoopback() != tc.loopback {
				t.Fatalf("parseTarget(%q) = %+v, %v", tc.in, got, err)
			}
		})
	}
}

func TestParseCountsAndRetryWait(t *testing.T) {
	c, ok := parseCounts([]byte(`{"accepted": 3,"duplicate":1, "stale" :2,"ignored":0}`))
	if !ok || c != (serverCounts{Accepted: 3, Duplicate: 1, Stale: 2}) {
		t.Errorf("parseCounts = %+v, %v", c, ok)
	}
	if _, ok := parseCounts([]byte(`{"accepted":1}`)); ok {
		t.Errorf("parseCounts accepted a body without all four counts")
	}
	for in, want := range map[string]time.Duration{"": minRetryWait, "0": minRetryWait, "0.2": 200 * time.Millisecond, "120": maxRetryWait, "junk": minRetryWait} {
		if got := retryWait([]byte(in)); got != want {
			t.Errorf("retryWait(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzParseCounts(f *testing.F) {
	f.Add([]byte(`{"accepted":1,"duplicate":2,"stale":3,"ignored":4}`))
	f.Add([]byte(`{"accepted":`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, ok := parseCounts(b)
		if !ok {
			return
		}
		again, ok := parseCounts(must(json.Marshal(c)))
		if !ok || again != c {
			t.Fatalf("round trip of %+v gave %+v, %v", c, again, ok)
		}
	})
}
