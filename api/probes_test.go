package api

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/fleetd/fleetd/fleet"
)

// TestProbesHeadAndOptions: HEAD on /healthz and /readyz answers like GET
// without a body; OPTIONS answers 204 with Allow on every routed path; a
// not-ready /readyz names the cause its Ready check gave.
func TestProbesHeadAndOptions(t *testing.T) {
	var down atomic.Bool
	s := MustNew(t, Config{Ready: func(context.Context) error {
		if down.Load() {
			return fleet.Errorf(fleet.EUNAVAILABLE, "the state store is unreachable: connection refused (is Redis running on that host and port?)")
		}
		return nil
	}})
	base := serve(t, s.Handler())
	c := newClient(t)
	do := func(method, path string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		res, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res, string(b)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		get, getBody := do("GET", path)
		head, headBody := do("HEAD", path)
		if get.StatusCode != 200 || head.StatusCode != 200 || headBody != "" || head.Header.Get("Content-Type") != get.Header.Get("Content-Type") ||
			head.Header.Get("Content-Length") != get.Header.Get("Content-Length") {
			t.Errorf("HEAD %s = %d %q %v, want GET's %d %v without the body %q", path, head.StatusCode, headBody, head.Header, get.StatusCode, get.Header, getBody)
		}
		opt, optBody := do("OPTIONS", path)
		if opt.StatusCode != 204 || opt.Header.Get("Allow") != "GET, HEAD, OPTIONS" || optBody != "" {
			t.Errorf("OPTIONS %s = %d Allow %q %q, want 204 with Allow: GET, HEAD, OPTIONS", path, opt.StatusCode, opt.Header.Get("Allow"), optBody)
		}
	}
	for path, allow := range map[string]string{"/backend/webhook": "OPTIONS, POST", "/api/v1/devices/d1": "GET, OPTIONS", "/api/v1/members:invite": "OPTIONS, POST"} {
		if opt, _ := do("OPTIONS", path); opt.StatusCode != 204 || opt.Header.Get("Allow") != allow {
			t.Errorf("OPTIONS %s = %d Allow %q, want 204 with %q", path, opt.StatusCode, opt.Header.Get("Allow"), allow)
		}
	}
	if opt, body := do("OPTIONS", "/nope"); opt.StatusCode != 404 || !strings.Contains(body, `"not_found"`) {
		t.Errorf("OPTIONS on an unknown path = %d %s, want the 404 JSON error", opt.StatusCode, body)
	}

	down.Store(true)
	res, body := do("GET", "/readyz")
	if res.StatusCode != 503 || !strings.Contains(body, `"message":"the state store is unreachable: connection refused`) {
		t.Errorf("GET /readyz with Redis down = %d %s, want 503 naming the cause", res.StatusCode, body)
	}
	if head, headBody := do("HEAD", "/readyz"); head.StatusCode != 503 || headBody != "" || head.Header.Get("Retry-After") == "" {
		t.Errorf("HEAD /readyz with Redis down = %d %q %v, want 503 with Retry-After and no body", head.StatusCode, headBody, head.Header)
	}
}
