package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/metrics"
)

// heldBody opens a connection that sends the headers of a size-byte
// webhook with the given headers and sent bytes of its body, and leaves it
// open; it returns the connection and a reader of its answers.
func heldBody(tb testing.TB, d *daemon, size, sent int, hdr string) (net.Conn, *bufio.Reader) {
	tb.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(d.base, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	head := fmt.Sprintf("POST /backend/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n", hdr, size)
	body := "[" + strings.Repeat(" ", size-2) + "]"
	if _, err := io.WriteString(c, head+body[:sent]); err != nil {
		tb.Fatal(err)
	}
	return c, bufio.NewReader(c)
}

// metric returns the value of one series of the daemon's /metrics.
func metric(tb testing.TB, d *daemon, series string) float64 {
	tb.Helper()
	r := do(tb, nil, "GET", d.base+"/metrics", "")
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(r.raw)
	if m == nil {
		tb.Fatalf("/metrics has no %s", series)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		tb.Fatalf("%s: %v", series, err)
	}
	return v
}

// TestUnauthenticatedBodiesAreNotHeld is case 1 of the bounds issue, at a
// fifth of its size: 200 connections send the headers of a 1 MB webhook
// without a secret and half its body. Each is answered 401 (JSON) with its
// connection closed, no body byte is held meanwhile, and a good webhook is
// served. (scripts/bounds.sh unauth measures the RSS of the full case.)
func TestUnauthenticatedBodiesAreNotHeld(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret}, "--auth-fail-burst", "0")
	const size = 1_000_000
	codes := map[int]int{}
	for range 200 {
		_, r := heldBody(t, d, size, size/2, "")
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 401 || !resp.Close || !strings.Contains(string(b), `"error":"unauthorized"`) {
			t.Fatalf("%d (close %v) %s", resp.StatusCode, resp.Close, b)
		}
		if _, err := r.ReadByte(); err == nil {
			t.Fatal("the connection stays open after the 401")
		}
		codes[resp.StatusCode]++
	}
	time.Sleep(metrics.ShareFor) // past the rendering shared with earlier scrapes
	if got := metric(t, d, "fleetd_request_body_bytes_in_flight"); got != 0 {
		t.Fatalf("fleetd_request_body_bytes_in_flight %v", got)
	}
	if got := metric(t, d, `fleetd_request_bodies_refused_total{reason="unread"}`); got != 200 {
		t.Fatalf(`fleetd_request_bodies_refused_total{reason="unread"} %v, want 200`, got)
	}
	wantCounts(t, d.webhook(t, `[]`), 0, 0, 0, 0)
}

// TestInflightBodyBoundEndToEnd drives the daemon past
// FLEETD_MAX_INFLIGHT_BODY_BYTES: with one authenticated 1 MiB body held
// half sent, a second is answered 503 (JSON, Retry-After, Connection:
// close) and counted, while small webhooks are served.
func TestInflightBodyBoundEndToEnd(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret,
		"FLEETD_MAX_INFLIGHT_BODY_BYTES": fmt.Sprint(3 << 19)}) // 1.5 MiB
	const mib = 1 << 20
	heldBody(t, d, mib, mib/2, "x-webhook-secret: "+testSecret+"\r\n")
	deadline := time.Now().Add(10 * time.Second)
	for metric(t, d, "fleetd_request_body_bytes_in_flight") != mib {
		if time.Now().After(deadline) {
			t.Fatal("the held body is not counted in fleetd_request_body_bytes_in_flight")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, r := heldBody(t, d, mib, 1, "x-webhook-secret: "+testSecret+"\r\n")
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !resp.Close || !strings.Contains(string(b), `"error":"unavailable"`) {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, b)
	}
	time.Sleep(metrics.ShareFor)
	if got := metric(t, d, `fleetd_request_bodies_refused_total{reason="in_flight_limit"}`); got != 1 {
		t.Fatalf("refusal not counted: %v", got)
	}
	wantCounts(t, d.webhook(t, `{"type":"device.deleted","qdDeviceId":"d1"}`), 1, 0, 0, 0)
}

// TestInflightBoundBelowBodyLimitFailsAtStart: a bound no body of the
// largest size fits in is refused at start, naming the flag.
func TestInflightBoundBelowBodyLimitFailsAtStart(t *testing.T) {
	srv := redistest.Start(t)
	env := map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret, "FLEETD_MAX_INFLIGHT_BODY_BYTES": "1000"}
	err := run(t.Context(), []string{"serve", "--addr", fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--max-inflight-body-bytes") {
		t.Fatalf("got %v", err)
	}
}

// TestWorkspaceCap: past --max-workspaces a registration naming a new
// workspace refuses its request whole (403 JSON, nothing applied, counted),
// while registrations in known workspaces, and other senders, go on.
func TestWorkspaceCap(t *testing.T) {
	env, store := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	d := MustStart(t, env, "--max-workspaces", "2", "--metrics-share", "0")
	reg := func(dev, ws string) string {
		return fmt.Sprintf(`{"type":"device.registered","qdDeviceId":"%s","workspaceId":"%s","name":"n","os":"L"}`, dev, ws)
	}
	wantCounts(t, d.webhook(t, "["+reg("cap-d1", "cap-w1")+","+reg("cap-d2", "cap-w2")+"]"), 2, 0, 0, 0)
	r := d.webhook(t, `[{"type":"device.online.changed","qdDeviceId":"cap-d1","online":true},`+reg("cap-d3", "cap-w3")+"]")
	wantError(t, r, 403, "forbidden")
	if !strings.Contains(r.raw, `cap-w3`) || !strings.Contains(r.raw, "--max-workspaces") {
		t.Fatalf("the refusal does not say why: %s", r.raw)
	}
	if st := wsStats(t, store, "cap-w1"); st.Online != 0 {
		t.Fatalf("the refused request was partly applied: %+v", st)
	}
	wantCounts(t, d.webhook(t, reg("cap-d4", "cap-w1")), 1, 0, 0, 0)
	wantCounts(t, d.webhook(t, `{"type":"device.online.changed","qdDeviceId":"cap-d1","online":true}`), 1, 0, 0, 0)
	if v := metric(t, d, "fleetd_workspaces_refused_total"); v != 1 {
		t.Fatalf("fleetd_workspaces_refused_total = %v, want 1", v)
	}
	if v := metric(t, d, "fleetd_fleet_workspaces"); v != 2 {
		t.Fatalf("fleetd_fleet_workspaces = %v, want 2", v)
	}
}
