package api

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
)

func TestRoutingErrors(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true})
	key, _ := e.MustKey(t, "acme", false)
	tests := map[string]struct {
		method, path string
		status       int
		name         string
	}{
		"unknown path":          {"GET", "/api/v1/nope", 404, "not_found"},
		"unknown version":       {"GET", "/api/v2/devices", 404, "not_found"},
		"trailing slash":        {"GET", "/api/v1/devices/", 404, "not_found"},
		"post on the console":   {"POST", "/", 405, "method_not_allowed"},
		"under a console file":  {"GET", "/console/console.js/x", 404, "not_found"},
		"device sub-resource":   {"GET", "/api/v1/devices/d1/nope", 404, "not_found"},
		"post on a list":        {"POST", "/api/v1/devices", 405, "method_not_allowed"},
		"get on an action":      {"GET", "/api/v1/devices/d1/unbind", 405, "method_not_allowed"},
		"delete a device":       {"DELETE", "/api/v1/devices/d1", 405, "method_not_allowed"},
		"get the invite action": {"GET", "/api/v1/members:invite", 405, "method_not_allowed"},
		"put usage":             {"PUT", "/api/v1/usage", 405, "method_not_allowed"},
		"get the webhook":       {"GET", "/backend/webhook", 405, "method_not_allowed"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := e.Do(t, call{method: tc.method, path: tc.path, key: key})
			wantError(t, r, tc.status, tc.name)
			if tc.status == 405 && r.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
		})
	}
}

// TestPanic: a panicking handler is answered by the router's PanicHandler
// with the JSON 500, and counted as a 500 of its route.
func TestPanic(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true})
	r := e.srv.router()
	r.GET("/boom", e.srv.pipeline(&route{"GET", "/boom", authNone, apiMetrics, true, func(*fasthttp.RequestCtx, *principal) error { panic("boom") }}))
	pe := &env{base: serve(t, r.Handler), http: e.http}
	res := pe.Do(t, call{method: "GET", path: "/boom"})
	eb := wantError(t, res, 500, "internal")
	if strings.Contains(eb.Message, "boom") {
		t.Errorf("panic value leaked to the client: %q", eb.Message)
	}
	if n := apiCount(t, e, "/boom", "500"); n != 1 {
		t.Errorf("fleetd_api_requests_total{route=/boom,code=500} = %v", n)
	}
	// The server lives on.
	if res := pe.Do(t, call{method: "GET", path: "/healthz"}); res.Status != 200 {
		t.Fatalf("after the panic: %d", res.Status)
	}
}

// TestStoreDown: with Redis gone, every REST route answers 503 unavailable
// with Retry-After, never 401, whether the key was cached or not.
func TestStoreDown(t *testing.T) {
	e := MustEnv(t, envOptions{storeTimeout: 200 * time.Millisecond, keyTTL: time.Minute})
	cached, _ := e.MustKey(t, "acme", false)
	fresh, _ := e.MustKey(t, "acme", false)
	if r := e.Get(t, routeDevices, routeDevices, cached); r.Status != 200 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	e.StopRedis()

	routes := []struct{ method, path, route, body string }{
		{"GET", routeDevices, routeDevices, ""},
		{"GET", "/api/v1/devices/d1", routeDevice, ""},
		{"POST", "/api/v1/devices/d1/unbind", routeUnbind, ""},
		{"POST", "/api/v1/devices/d1/secret:rotate", routeRotate, ""},
		{"GET", routeSess, routeSess, ""},
		{"GET", routeUsage, routeUsage, ""},
		{"GET", routeMembers, routeMembers, ""},
		{"POST", routeInvite, routeInvite, `{"email":"a@b.c","role":"member"}`},
	}
	for _, k := range []struct{ name, key string }{{"cached key", cached}, {"fresh key", fresh}} {
		for _, rt := range routes {
			t.Run(k.name+" "+rt.method+" "+rt.route, func(t *testing.T) {
				var body []byte
				if rt.body != "" {
					body = []byte(rt.body)
				}
				start := time.Now()
				r := e.Do(t, call{method: rt.method, path: rt.path, route: rt.route, key: k.key, body: body})
				wantError(t, r, 503, "unavailable")
				if d := time.Since(start); d > 3*time.Second {
					t.Errorf("answered after %v", d)
				}
			})
		}
	}
	t.Run("unknown keys are still refused without the store", func(t *testing.T) {
		wantError(t, e.Get(t, routeDevices, routeDevices, ""), 401, "unauthorized")
		wantError(t, e.Get(t, routeDevices, routeDevices, "sk_live_short"), 401, "unauthorized")
	})
	t.Run("readyz", func(t *testing.T) {
		wantError(t, e.Do(t, call{method: "GET", path: "/readyz", route: "/readyz"}), 503, "unavailable")
	})
}

func TestDraining(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true})
	key, _ := e.MustKey(t, "acme", false)
	e.srv.SetDraining()
	for _, rt := range []struct{ path, route, key string }{
		{routeDevices, routeDevices, key},
		{routeDevices, routeDevices, ""}, // draining wins over a missing key
		{"/api/openapi.json", "/api/openapi.json", ""},
	} {
		r := e.Get(t, rt.path, "", rt.key)
		wantError(t, r, 503, "unavailable")
		if !r.Close {
			t.Errorf("%s: no Connection: close", rt.path)
		}
	}
}

// TestAPIMetrics: requests are counted under their route template, never
// the raw path, with the status they got.
func TestAPIMetrics(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true})
	key, _ := e.MustKey(t, "acme", false)
	e.Get(t, "/api/v1/devices/abc", routeDevice, key)
	e.Get(t, "/api/v1/devices/def", routeDevice, key)
	e.Get(t, routeDevices, routeDevices, key)
	e.Get(t, routeDevices, routeDevices, "")
	for _, c := range []struct {
		route, code string
		want        float64
	}{
		{routeDevice, "404", 2},
		{routeDevices, "200", 1},
		{routeDevices, "401", 1},
	} {
		if n := apiCount(t, e, c.route, c.code); n != c.want {
			t.Errorf("%s %s: %v, want %v", c.route, c.code, n, c.want)
		}
	}
	if lint, err := testutil.GatherAndLint(e.reg); err != nil || len(lint) > 0 {
		t.Errorf("lint: %v %v", lint, err)
	}
	mfs, _ := e.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "route" && (strings.Contains(l.GetValue(), "abc") || strings.Contains(l.GetValue(), "def")) {
					t.Errorf("raw path in a label: %s", l.GetValue())
				}
			}
		}
	}
}

// apiCount reads fleetd_api_requests_total{route,code} from the registry.
func apiCount(tb testing.TB, e *env, route, code string) float64 {
	tb.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "fleetd_api_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var r, c string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					r = l.GetValue()
				case "code":
					c = l.GetValue()
				}
			}
			if r == route && c == code {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
