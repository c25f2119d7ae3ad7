package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/redistest"
)

// TestHostileInput sends malformed and abusive bodies: each gets its exact
// 4xx, and the daemon keeps serving.
func TestHostileInput(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret})
	for name, tc := range map[string]struct {
		body string
		code int
		err  string
	}{
		"invalid utf-8":            {"{\"type\":\"device.registered\",\"qdDeviceId\":\"d\",\"workspaceId\":\"w\",\"os\":\"L\",\"name\":\"\xc3\x28\"}", 400, "invalid_request"},
		"deep nesting":             {`{"type":"x","a":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, 400, "invalid_request"},
		"huge string":              {`{"type":"device.registered","qdDeviceId":"d","workspaceId":"w","os":"L","name":"` + strings.Repeat("x", 500_000) + `"}`, 400, "invalid_request"},
		"number out of range":      {`{"type":"session.ended","qdDeviceId":"d","sessionId":"s","status":"ok","durationSec":1e400}`, 400, "invalid_request"},
		"ts out of range":          {`{"type":"device.deleted","qdDeviceId":"d","ts":99999999999999999999}`, 400, "invalid_request"},
		"id with braces":           {`{"type":"device.deleted","qdDeviceId":"{w:acme}"}`, 400, "invalid_request"},
		"id with space":            {`{"type":"device.deleted","qdDeviceId":"a b"}`, 400, "invalid_request"},
		"id with newline":          {`{"type":"device.deleted","qdDeviceId":"a\nb"}`, 400, "invalid_request"},
		"id of 129 chars":          {`{"type":"device.deleted","qdDeviceId":"` + strings.Repeat("a", 129) + `"}`, 400, "invalid_request"},
		"workspace with brace":     {`{"type":"device.registered","qdDeviceId":"d","workspaceId":"w}x","name":"n","os":"L"}`, 400, "invalid_request"},
		"session id with brace":    {`{"type":"session.started","qdDeviceId":"d","sessionId":"}"}`, 400, "invalid_request"},
		"not json at all":          {"\x00\x01\x02", 400, "invalid_request"},
		"array of arrays":          {`[[1]]`, 400, "invalid_request"},
		"string instead of object": {`"device.registered"`, 400, "invalid_request"},
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, d.webhook(t, tc.body), tc.code, tc.err)
		})
	}
	// A 1,000,000-element array (~2 MB) is refused from its Content-Length
	// with 413 before the body is read. A client that waits for the answer
	// (Expect: 100-continue, the raw request stops after the headers) gets
	// it without being told to continue; one that sends its body at once
	// gets it once the first bytes are in.
	big := "[" + strings.Repeat("1,", 999_999) + "1]"
	head := fmt.Sprintf("POST /backend/webhook HTTP/1.1\r\nHost: x\r\nx-webhook-secret: %s\r\nContent-Length: %d\r\n", testSecret, len(big))
	if code := rawStatus(t, d, head+"Expect: 100-continue\r\n\r\n"); code != 413 {
		t.Fatalf("million-element array, waiting for 100 Continue: status %d, want 413", code)
	}
	if code := rawStatus(t, d, head+"\r\n"+big[:4096]); code != 413 {
		t.Fatalf("million-element array: status %d, want 413", code)
	}
	// With the body limit raised, the same array is read and refused as a
	// batch over --max-batch.
	d2 := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret}, "--max-body-bytes", "4194304")
	wantError(t, d2.webhook(t, big), 400, "invalid_request")

	// ':' is allowed in ids; the accepted id lands inside its hash tag.
	wantCounts(t, d.webhook(t, `{"type":"device.registered","qdDeviceId":"dev:1@x","workspaceId":"ws:a.b-c_d","name":"n","os":"L"}`), 1, 0, 0, 0)

	// A header flood gets 431, not a hang.
	req := "POST /backend/webhook HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Flood: "+strings.Repeat("a", 100)+"\r\n", 2000) + "\r\n"
	if code := rawStatus(t, d, req); code != 431 {
		t.Fatalf("header flood: status %d, want 431", code)
	}
	// Still serving.
	wantCounts(t, d.webhook(t, `[]`), 0, 0, 0, 0)

	// No key was ever built from a rejected id: every key fits the schema.
	keyRE := regexp.MustCompile(`^fl:(workspaces|key:[0-9a-f]{64}|keyid:[A-Za-z0-9_]+|\{w:[A-Za-z0-9._:@-]{1,128}\}:[a-z]+(:[A-Za-z0-9._:@-]+)?|\{d:[0-9a-f]+\}:[a-z]+(:[A-Za-z0-9._:@-]+)?)$`)
	keys, err := srv.Do("KEYS", "*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range strings.Split(keys, "\n") {
		if k != "" && !keyRE.MatchString(k) {
			t.Errorf("key %q does not fit the key schema", k)
		}
	}
}

// rawStatus sends a raw HTTP request and returns the status code.
func rawStatus(tb testing.TB, d *daemon, req string) int {
	tb.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(d.base, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	go c.Write([]byte(req))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		tb.Fatalf("reading the answer: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestSlowAndIdleClientsDoNotStopOthers opens many idle connections and
// slowloris connections that trickle a request byte by byte; a normal
// client must still get its answers within a second.
func TestSlowAndIdleClientsDoNotStopOthers(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret}, "--read-timeout", "5s")
	addr := strings.TrimPrefix(d.base, "http://")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 500 { // idle
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	partial := "POST /backend/webhook HTTP/1.1\r\nHost: x\r\nx-webhook-secret: " + testSecret + "\r\nContent-Length: 100000\r\n\r\n"
	for range 200 { // slowloris
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		go func() {
			for i := 0; ctx.Err() == nil; i++ {
				if _, err := c.Write([]byte{partial[i%len(partial)]}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	for i := range 20 {
		start := time.Now()
		wantCounts(t, d.webhook(t, fmt.Sprintf(`{"type":"device.deleted","qdDeviceId":"d%d"}`, i)), 1, 0, 0, 0)
		if el := time.Since(start); el > time.Second {
			t.Fatalf("request %d took %v while slow clients hold connections", i, el)
		}
	}
}

// TestFailedAuthThrottle: a client that keeps sending a wrong secret gets
// 429 with Retry-After; a client with the right secret is unaffected.
func TestFailedAuthThrottle(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret}, "--auth-fail-burst", "5", "--auth-fail-refill", "10s")
	body := `{"type":"device.deleted","qdDeviceId":"d1"}`
	codes := map[int]int{}
	for range 8 {
		r := do(t, nil, "POST", d.base+"/backend/webhook", body, "x-webhook-secret", "guess")
		codes[r.code]++
		if r.code == 429 {
			wantError(t, r, 429, "rate_limited")
		}
	}
	if codes[401] != 5 || codes[429] != 3 {
		t.Fatalf("codes = %v, want 5×401 then 3×429", codes)
	}
	// The good client (same address) still gets through.
	wantCounts(t, d.webhook(t, body), 1, 0, 0, 0)
}

// TestConnectionLimitAnswersJSON: a connection over --concurrency gets the
// JSON 503 with Retry-After (never fasthttp's plain text), is counted, and
// the limit frees up when a connection closes.
func TestConnectionLimitAnswersJSON(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret}, "--concurrency", "3")
	addr := strings.TrimPrefix(d.base, "http://")
	get := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	// Kept-alive connections, each served once, until one is refused; the
	// start-up health checks may hold a slot too, so the refusal comes at
	// the 4th connection at the latest.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	var resp *http.Response
	var body []byte
	for i := 0; ; i++ {
		if i > 3 {
			t.Fatal("4 connections were served with --concurrency 3")
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write([]byte(get))
		resp, err = http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			break
		}
	}
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" || !resp.Close ||
		resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("refusal: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	var e struct {
		Error   string `json:"error"`
		Status  int    `json:"status"`
		Message string `json:"message"`
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Error != "unavailable" || e.Status != 503 || !strings.Contains(e.Message, "--concurrency") {
		t.Fatalf("refusal body %s (%v)", body, err)
	}

	for _, c := range held {
		c.Close()
	}
	held = nil
	deadline := time.Now().Add(5 * time.Second)
	for { // the slot is free once the server saw the close
		if code := rawStatus(t, d, get); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection never gave its slot back")
		}
		time.Sleep(10 * time.Millisecond)
	}
	var m reply
	for m = do(t, nil, "GET", d.base+"/metrics", ""); m.code != 200; m = do(t, nil, "GET", d.base+"/metrics", "") {
		if time.Now().After(deadline) {
			t.Fatalf("/metrics: %d", m.code)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !regexp.MustCompile(`(?m)^fleetd_connections_refused_total [1-9]`).MatchString(m.raw) {
		t.Fatalf("refusals not counted:\n%s", m.raw)
	}
}
