package api

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/metrics"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// rawConn is one client connection that writes raw HTTP.
type rawConn struct {
	tb testing.TB
	c  net.Conn
	r  *bufio.Reader
}

// dialRaw opens a connection to e, closed when the test ends.
func (e *env) dialRaw(tb testing.TB) *rawConn {
	tb.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return &rawConn{tb: tb, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) write(s string) {
	rc.tb.Helper()
	if _, err := io.WriteString(rc.c, s); err != nil {
		rc.tb.Fatalf("write: %v", err)
	}
}

// answer reads one response in full; a non-2xx one must be the JSON error
// body, with Retry-After on 429 and 503.
func (rc *rawConn) answer() *response {
	rc.tb.Helper()
	res, err := http.ReadResponse(rc.r, nil)
	if err != nil {
		rc.tb.Fatalf("reading the answer: %v", err)
	}
	b, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		rc.tb.Fatalf("reading the answer's body: %v", err)
	}
	r := &response{Status: res.StatusCode, Header: res.Header, Body: b, Close: res.Close}
	if r.Status >= 300 {
		checkErrorBody(rc.tb, r)
	}
	return r
}

// wantClosed fails unless the server closes the connection after its
// answer, without waiting for the rest of the body.
func (rc *rawConn) wantClosed() {
	rc.tb.Helper()
	var b [1]byte
	n, err := rc.r.Read(b[:])
	if n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		rc.tb.Fatalf("connection still open after the answer (read %d bytes, %v)", n, err)
	}
}

// head is the request line and headers of a request with a declared body
// of n bytes, ending with the blank line.
func head(method, path string, n int, hdr ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: fleetd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", method, path, n)
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	b.WriteString("\r\n")
	return b.String()
}

// signingKey is a Standard Webhooks key of the tests, and sign signs body
// with it as the reference library does.
var signingKey = []byte("a-signing-key-of-the-body-tests!")

func sign(id string, ts time.Time, body string) string {
	m := hmac.New(sha256.New, signingKey)
	fmt.Fprintf(m, "%s.%d.%s", id, ts.Unix(), body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TestRefusedFromHeaders: a request whose headers do not authenticate it is
// answered 401 (JSON) once its headers and at most one byte of its body
// are in, the rest of a 1 MB body never read, and its connection closed;
// no byte of it is held. The failed-auth throttle still applies.
func TestRefusedFromHeaders(t *testing.T) {
	whsec := "whsec_" + base64.StdEncoding.EncodeToString(signingKey)
	e := MustEnv(t, envOptions{inMemory: true, webhookSecrets: []string{webhookSecret, whsec}, webhookAuth: AuthAny, authFailBurst: 100})
	key, _ := e.MustKey(t, "acme", false)
	now := strconv.FormatInt(time.Now().Unix(), 10)
	stale := strconv.FormatInt(time.Now().Add(-time.Hour).Unix(), 10)
	goodSig := sign("msg_1", time.Now(), "[]")
	const size = 1_000_000
	for name, tc := range map[string]struct {
		method, path string
		hdr          []string
		status       int
	}{
		"webhook without a secret":     {"POST", webhookPath, nil, 401},
		"webhook with a wrong secret":  {"POST", webhookPath, []string{"x-webhook-secret", "guess"}, 401},
		"signature without webhook-id": {"POST", webhookPath, []string{"webhook-timestamp", now, "webhook-signature", goodSig}, 401},
		"stale signature":              {"POST", webhookPath, []string{"webhook-id", "m", "webhook-timestamp", stale, "webhook-signature", goodSig}, 401},
		"ill-formed signature":         {"POST", webhookPath, []string{"webhook-id", "m", "webhook-timestamp", now, "webhook-signature", "v1,short"}, 401},
		"api without a key":            {"POST", "/api/v1/members:invite", nil, 401},
		"api with a malformed key":     {"POST", "/api/v1/members:invite", []string{"x-api-key", "sk_live_short"}, 401},
		"api with an unknown key":      {"POST", "/api/v1/members:invite", []string{"x-api-key", madeUpKey(t)}, 401},
		"read-only key on a post":      {"POST", "/api/v1/members:invite", []string{"x-api-key", mustReadOnlyKey(t, e)}, 403},
		"a route that takes no body":   {"POST", "/healthz", nil, 405},
		"an unknown path":              {"POST", "/nope", nil, 404},
		"an unknown api path":          {"POST", "/api/v1/nope", []string{"x-api-key", key}, 404},
	} {
		t.Run(name, func(t *testing.T) {
			before := testutil.ToFloat64(e.limits.BodyBytes)
			rc := e.dialRaw(t)
			rc.write(head(tc.method, tc.path, size, tc.hdr...) + "[")
			r := rc.answer()
			if r.Status != tc.status || !r.Close {
				t.Fatalf("got %d (close %v) %s, want %d and Connection: close", r.Status, r.Close, r.Body, tc.status)
			}
			rc.wantClosed()
			if got := testutil.ToFloat64(e.limits.BodyBytes); got != before {
				t.Fatalf("body bytes in flight %v, want %v", got, before)
			}
		})
	}
	if n := testutil.ToFloat64(e.limits.BodyRefused(metrics.BodyUnread)); n < 10 {
		t.Fatalf("fleetd_request_bodies_refused_total{reason=unread} = %v", n)
	}

	t.Run("throttled", func(t *testing.T) {
		e := MustEnv(t, envOptions{inMemory: true, authFailBurst: 2})
		for i := range 3 {
			rc := e.dialRaw(t)
			rc.write(head("POST", webhookPath, size, "x-webhook-secret", "guess") + "[")
			want := 401
			if i == 2 {
				want = 429
			}
			if r := rc.answer(); r.Status != want || !r.Close {
				t.Fatalf("attempt %d: %d (close %v), want %d", i+1, r.Status, r.Close, want)
			}
			rc.wantClosed()
		}
		// The right secret is not throttled.
		e.MustSend(t, registered("d1", "acme", "n", "Linux", time.Now()))
	})

	t.Run("authenticated requests are read and served", func(t *testing.T) {
		rc := e.dialRaw(t)
		rc.write(head("POST", webhookPath, 2, "x-webhook-secret", webhookSecret) + "[]")
		if r := rc.answer(); r.Status != 200 || r.Close {
			t.Fatalf("%d (close %v) %s", r.Status, r.Close, r.Body)
		}
		ts := time.Now()
		rc.write(head("POST", webhookPath, 2, "webhook-id", "msg_2", "webhook-timestamp", strconv.FormatInt(ts.Unix(), 10), "webhook-signature", sign("msg_2", ts, "[]")) + "[]")
		if r := rc.answer(); r.Status != 200 || r.Close {
			t.Fatalf("signed: %d (close %v) %s", r.Status, r.Close, r.Body)
		}
		body := `{"email":"a@b.c","role":"member"}`
		rc.write(head("POST", "/api/v1/members:invite", len(body), "x-api-key", key) + body)
		if r := rc.answer(); r.Status != 201 || r.Close {
			t.Fatalf("invite: %d (close %v) %s", r.Status, r.Close, r.Body)
		}
		// A forged signature is verified over the body: 401, and the body
		// was read, so the connection stays.
		rc.write(head("POST", webhookPath, 2, "webhook-id", "msg_3", "webhook-timestamp", strconv.FormatInt(ts.Unix(), 10), "webhook-signature", sign("msg_3", ts, "{}")) + "[]")
		if r := rc.answer(); r.Status != 401 || r.Close {
			t.Fatalf("forged: %d (close %v) %s", r.Status, r.Close, r.Body)
		}
		// On the same kept-alive connection, a request refused from its
		// headers still has its body left unread and the connection closed.
		rc.write(head("POST", webhookPath, size) + "[")
		if r := rc.answer(); r.Status != 401 || !r.Close {
			t.Fatalf("unauthenticated after authenticated ones: %d (close %v) %s", r.Status, r.Close, r.Body)
		}
		rc.wantClosed()
	})

	t.Run("quickdesk without a well-formed signature", func(t *testing.T) {
		for _, sig := range []string{"", "sha256=abc", "sha256=" + strings.Repeat("g", 64), "md5=" + strings.Repeat("a", 64)} {
			rc := e.dialRaw(t)
			rc.write(head("POST", quickdeskPath, size, "X-Webhook-Signature", sig) + "{")
			// 401 from the QuickDesk handler, or 404 where the route is not
			// there: either way answered from the headers and closed.
			if r := rc.answer(); r.Status != 401 && r.Status != 404 || !r.Close {
				t.Fatalf("signature %q: %d (close %v) %s", sig, r.Status, r.Close, r.Body)
			}
			rc.wantClosed()
		}
	})

	t.Run("expect 100-continue", func(t *testing.T) {
		// Refused from the headers without being told to continue.
		rc := e.dialRaw(t)
		rc.write(strings.Replace(head("POST", webhookPath, size), "\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", 1))
		if r := rc.answer(); r.Status != 401 || !r.Close {
			t.Fatalf("%d (close %v) %s", r.Status, r.Close, r.Body)
		}
		rc = e.dialRaw(t)
		rc.write(strings.Replace(head("POST", quickdeskPath, size), "\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", 1))
		if r := rc.answer(); r.Status != 401 || !r.Close {
			t.Fatalf("quickdesk: %d (close %v) %s", r.Status, r.Close, r.Body)
		}
		// Authenticated: 100 Continue, then the answer to the body.
		rc = e.dialRaw(t)
		rc.write(strings.Replace(head("POST", webhookPath, 2, "x-webhook-secret", webhookSecret), "\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n", 1))
		if r := rc.answer(); r.Status != 100 {
			t.Fatalf("want 100 Continue, got %d %s", r.Status, r.Body)
		}
		rc.write("[]")
		if r := rc.answer(); r.Status != 200 {
			t.Fatalf("after 100 Continue: %d %s", r.Status, r.Body)
		}
	})
}

func mustReadOnlyKey(tb testing.TB, e *env) string {
	key, _ := e.MustKey(tb, "acme", true)
	return key
}

// TestBodyLimits: --max-body-bytes from Content-Length and for chunked
// bodies (413, connection closed); a chunked body within it is served.
func TestBodyLimits(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true, maxBody: 64 << 10})
	rc := e.dialRaw(t)
	rc.write(head("POST", webhookPath, 64<<10+1, "x-webhook-secret", webhookSecret) + "[")
	r := rc.answer()
	wantError(t, r, 413, "payload_too_large")
	if !r.Close {
		t.Fatal("413 without Connection: close")
	}
	chunked := func(body string) string {
		var b strings.Builder
		b.WriteString("POST /backend/webhook HTTP/1.1\r\nHost: fleetd\r\nTransfer-Encoding: chunked\r\nx-webhook-secret: " + webhookSecret + "\r\n\r\n")
		for len(body) > 0 {
			n := min(len(body), 10_000)
			fmt.Fprintf(&b, "%x\r\n%s\r\n", n, body[:n])
			body = body[n:]
		}
		b.WriteString("0\r\n\r\n")
		return b.String()
	}
	for name, tc := range map[string]struct {
		size   int
		status int
	}{
		"small":            {2, 200},
		"several buffers":  {50_000, 200},
		"exactly at limit": {64 << 10, 200},
		"one over":         {64<<10 + 1, 413},
		"far over":         {1 << 20, 413},
	} {
		t.Run("chunked "+name, func(t *testing.T) {
			body := "[" + strings.Repeat(" ", tc.size-2) + "]"
			rc := e.dialRaw(t)
			go io.WriteString(rc.c, chunked(body)) // the server may stop reading
			r := rc.answer()
			if r.Status != tc.status {
				t.Fatalf("%d %s, want %d", r.Status, r.Body, tc.status)
			}
			if tc.status == 413 && !r.Close {
				t.Fatal("413 without Connection: close")
			}
		})
	}
	if n := testutil.ToFloat64(e.limits.BodyRefused(metrics.BodyTooLarge)); n != 3 {
		t.Fatalf("fleetd_request_bodies_refused_total{reason=too_large} = %v, want 3", n)
	}
	if n := testutil.ToFloat64(e.limits.BodyBytes); n != 0 {
		t.Fatalf("%v body bytes still held", n)
	}
}

// TestInflightBodyBound drives past --max-inflight-body-bytes: while two
// authenticated senders hold 1 MiB bodies half sent, a third 1 MiB body is
// answered 503 (JSON, Retry-After, Connection: close) before it is read,
// while small webhooks and API reads keep being served; once the held
// bodies complete, large bodies are read again.
func TestInflightBodyBound(t *testing.T) {
	const mib = 1 << 20
	e := MustEnv(t, envOptions{inMemory: true, maxBody: mib, maxInflight: 2*mib + mib/2})
	key, _ := e.MustKey(t, "acme", true)
	big := "[" + strings.Repeat(" ", mib-2) + "]"
	var held []*rawConn
	for range 2 {
		rc := e.dialRaw(t)
		rc.write(head("POST", webhookPath, mib, "x-webhook-secret", webhookSecret) + big[:mib/2])
		held = append(held, rc)
	}
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(e.limits.BodyBytes) != 2*mib {
		if time.Now().After(deadline) {
			t.Fatalf("body bytes in flight: %v, want %d", testutil.ToFloat64(e.limits.BodyBytes), 2*mib)
		}
		time.Sleep(5 * time.Millisecond)
	}

	rc := e.dialRaw(t)
	rc.write(head("POST", webhookPath, mib, "x-webhook-secret", webhookSecret) + "[")
	r := rc.answer()
	wantError(t, r, 503, "unavailable")
	if r.Header.Get("Retry-After") != "1" || !r.Close {
		t.Fatalf("503 with Retry-After %q, close %v", r.Header.Get("Retry-After"), r.Close)
	}
	rc.wantClosed()
	if n := testutil.ToFloat64(e.limits.BodyRefused(metrics.BodyInFlightLimit)); n != 1 {
		t.Fatalf("fleetd_request_bodies_refused_total{reason=in_flight_limit} = %v, want 1", n)
	}
	// Others keep being served.
	e.MustSend(t, registered("d1", "acme", "n", "Linux", time.Now()))
	if r := e.Get(t, routeDevices, routeDevices, key); r.Status != 200 {
		t.Fatalf("api read while bodies are held: %d %s", r.Status, r.Body)
	}

	for _, rc := range held {
		rc.write(big[mib/2:])
		if r := rc.answer(); r.Status != 200 {
			t.Fatalf("held body completed: %d %s", r.Status, r.Body)
		}
	}
	if n := testutil.ToFloat64(e.limits.BodyBytes); n != 0 {
		t.Fatalf("%v body bytes still held", n)
	}
	rc = e.dialRaw(t)
	rc.write(head("POST", webhookPath, mib, "x-webhook-secret", webhookSecret) + big)
	if r := rc.answer(); r.Status != 200 {
		t.Fatalf("a large body once the others are done: %d %s", r.Status, r.Body)
	}
}

// TestInflightBoundBelowBodyLimit: a bound that no body of the largest
// size could fit is a configuration error.
func TestInflightBoundBelowBodyLimit(t *testing.T) {
	_, err := New(Config{WebhookSecrets: []string{"s"}, MaxBodyBytes: 1 << 20, MaxInflightBodyBytes: 1 << 19})
	if err == nil || !strings.Contains(err.Error(), "--max-inflight-body-bytes") {
		t.Fatalf("got %v", err)
	}
}
