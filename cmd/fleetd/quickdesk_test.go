package main

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/fleetd/fleetd/internal/quickdesktest"
)

// stdoutValue returns the value of an "export NAME=value" line that
// embedded mode prints.
func stdoutValue(tb testing.TB, d *daemon, name string) string {
	tb.Helper()
	for _, line := range strings.Split(d.stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export "+name+"="); ok {
			return v
		}
	}
	tb.Fatalf("no export %s= line on stdout:\n%s", name, d.stdout)
	return ""
}

// TestQuickDeskThroughTheRealWiring: the zero-setup daemon (embedded
// Redis) given QuickDesk's secret next to another one accepts the
// captured deliveries as they were sent, and the effect shows through
// the REST API, /metrics and the console's status.
func TestQuickDeskThroughTheRealWiring(t *testing.T) {
	d := MustStart(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret + "," + quickdesktest.Secret})
	key := stdoutValue(t, d, "KEY")
	wantCounts(t, d.webhook(t, `{"type":"device.registered","qdDeviceId":"378283213","workspaceId":"demo","name":"qd-host","os":"Windows","ts":"2026-12-01T20:00:00Z"}`), 1, 0, 0, 0)
	for _, dl := range quickdesktest.Deliveries() {
		hdr := []string{}
		for k, v := range dl.Headers {
			hdr = append(hdr, k, v)
		}
		r := do(t, nil, "POST", d.base+"/backend/webhook/quickdesk", dl.Body, hdr...)
		if r.code != 200 {
			t.Fatalf("%s: %d %s", dl.Event(), r.code, r.raw)
		}
		t.Logf("%-22s -> %d %s", dl.Event(), r.code, r.raw)
	}
	dev := do(t, nil, "GET", d.base+"/api/v1/devices/378283213", "", "x-api-key", key)
	if dev.code != 200 || dev.body["online"] != false || dev.body["last_seen"] != "2026-12-01T20:04:45Z" {
		t.Fatalf("device after the deliveries: %d %s", dev.code, dev.raw)
	}
	res, err := http.Get(d.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, line := range []string{
		`fleetd_webhook_events_total{result="accepted",type="device.secret.rotated"} 1`,
		`fleetd_webhook_events_total{result="accepted",type="device.online.changed"} 2`,
		`fleetd_webhook_events_total{result="ignored",type="webhook.test"} 1`,
		`fleetd_webhook_events_total{result="ignored",type="session.revoked"} 1`,
		`fleetd_webhook_events_total{result="ignored",type="turn.config.changed"} 1`,
		`fleetd_webhook_requests_total{code="200"} 7`,
	} {
		if !strings.Contains(string(b), line+"\n") {
			t.Errorf("/metrics lacks %s", line)
		}
	}
	st := do(t, nil, "GET", d.base+"/console/status", "")
	if st.body["redis_mode"] != "embedded" || st.body["webhook_requests"] != float64(7) || st.body["ready"] != true {
		t.Fatalf("console status: %s", st.raw)
	}
	page := do(t, nil, "GET", d.base+"/", "")
	if page.code != 200 || !strings.Contains(page.raw, "embedded (in-process, not durable)") {
		t.Fatalf("console page: %d", page.code)
	}
	var text map[string]string
	json.Unmarshal(mustJSON(t, st.body["text"]), &text)
	t.Logf("console: %s, %s, %s", text["redis_mode"], text["events_rate"], text["error_rate"])
}

func mustJSON(tb testing.TB, v any) []byte {
	tb.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
