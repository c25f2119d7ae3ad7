package api

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/buildinfo"
	"github.com/getkin/kin-openapi/openapi3filter"
)

// The console's answers are text, not JSON; the schema check reads them
// as plain strings.
func init() {
	for _, ct := range []string{"text/html", "text/css", "text/javascript", "image/svg+xml"} {
		openapi3filter.RegisterBodyDecoder(ct, openapi3filter.PlainBodyDecoder)
	}
}

// getConsole fetches path without a key and checks it against openapi.json.
func (e *env) getConsole(tb testing.TB, path, route string) *response {
	tb.Helper()
	return e.Do(tb, call{method: "GET", path: path, route: route})
}

// TestConsolePage: GET / is the console's HTML with its health part
// filled in on the server (no JavaScript needed), strict security
// headers, and nothing inline that the CSP would have to allow.
func TestConsolePage(t *testing.T) {
	e := MustEnv(t, envOptions{})
	r := e.getConsole(t, "/", "/")
	if r.Status != 200 || r.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET / = %d %s", r.Status, r.Header.Get("Content-Type"))
	}
	if got := r.Header.Get("Content-Security-Policy"); !strings.HasPrefix(got, "default-src 'self';") || !strings.Contains(got, "form-action 'none'") || strings.Contains(got, "unsafe") {
		t.Errorf("Content-Security-Policy %q", got)
	}
	if got := r.Header.Get("X-Content-Type-Options"); got != "nosniff" {
		t.Errorf("X-Content-Type-Options %q", got)
	}
	page := string(r.Body)
	mode := map[bool]string{true: "cluster", false: "single server"}[e.cluster != nil]
	for _, want := range []string{
		`<html lang="en">`, `name="viewport"`,
		`<span data-health="ready">ready</span>`, "Redis answered PING in",
		`<dd data-health="redis_mode">` + mode + `</dd>`,
		`<dd data-health="version">` + buildinfo.Get().Version + " (commit " + buildinfo.Get().Commit,
		`<dd data-health="queue_depth">0 events</dd>`,
		`href="/metrics"`, `href="/api/openapi.json"`, `href="` + DocsURL + `"`,
		`<script src="/console/console.js" defer></script>`, `<noscript>`,
		`<label for="api-key">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %s", want)
		}
	}
	// Nothing inline: every script has a src, no style attribute or
	// element, no event handler attribute, no javascript: URL; and no
	// address of anything but this origin.
	for name, re := range map[string]*regexp.Regexp{
		"inline script":     regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]+</script>|<script>`),
		"style attribute":   regexp.MustCompile(`\sstyle=`),
		"style element":     regexp.MustCompile(`<style`),
		"event handler":     regexp.MustCompile(`\son[a-z]+=`),
		"javascript: URL":   regexp.MustCompile(`javascript:`),
		"outside resources": regexp.MustCompile(`(?:src|href)="(?:https?:)?//[^"]*"`),
	} {
		for _, m := range re.FindAllString(page, -1) {
			if name == "outside resources" && m == `href="`+DocsURL+`"` {
				continue // a link the reader may follow; it loads nothing
			}
			t.Errorf("%s in the page: %s", name, m)
		}
	}
}

// TestConsoleAssets: the embedded files with their types and the same
// headers; anything else under /console/ is a JSON 404.
func TestConsoleAssets(t *testing.T) {
	e := MustEnv(t, envOptions{inMemory: true})
	for file, ct := range consoleAssets {
		r := e.getConsole(t, "/console/"+file, "/console/{file}")
		if r.Status != 200 || r.Header.Get("Content-Type") != ct || len(r.Body) == 0 {
			t.Errorf("%s: %d %q, %d bytes", file, r.Status, r.Header.Get("Content-Type"), len(r.Body))
		}
		if r.Header.Get("X-Content-Type-Options") != "nosniff" || r.Header.Get("Content-Security-Policy") != consoleCSP {
			t.Errorf("%s: security headers %v", file, r.Header)
		}
	}
	for _, p := range []string{"/console/index.html", "/console/..%2fconsole.go", "/console/nope.js"} {
		r := e.getConsole(t, p, "/console/{file}")
		wantError(t, r, 404, "not_found")
	}
	// The script never parses API values as HTML.
	js, _ := consoleFS.ReadFile("console/console.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("console.js uses %s", bad)
		}
	}
	if !strings.Contains(string(js), `"x-api-key"`) || strings.Contains(string(js), "localStorage") {
		t.Error("console.js must send the key as x-api-key and keep it out of localStorage")
	}
}

// TestConsoleStatus: /console/status reports the health part as JSON,
// webhook traffic of the last minute included: events per second over
// the window, and errors (any non-2xx) out of the requests.
func TestConsoleStatus(t *testing.T) {
	e := MustEnv(t, envOptions{})
	now := time.Now()
	e.MustSend(t, registered("d1", "acme", "n", "Linux", now), onlineEv("d1", true, now))
	e.MustSend(t, onlineEv("d1", false, now.Add(time.Second)))
	if err := e.Send(ev{"type": "device.deleted"}); err == nil || !strings.Contains(err.Error(), "400") {
		t.Fatalf("invalid event: %v", err)
	}
	req, _ := http.NewRequest("POST", e.base+"/backend/webhook", strings.NewReader(`{}`))
	res, err := e.http.Do(req) // no secret: 401
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()

	r := e.getConsole(t, "/console/status", "/console/status")
	var st healthStatus
	r.JSON(t, &st)
	if !st.Ready || st.Requests != 4 || st.Errors != 2 || st.ErrorRate != 0.5 {
		t.Fatalf("status %s: want ready, 4 requests, 2 errors", r.Body)
	}
	if want := 3 / float64(st.WindowSeconds); st.EventsPerSec != want {
		t.Errorf("events/s = %v, want 3 events over %d s", st.EventsPerSec, st.WindowSeconds)
	}
	if st.Text["error_rate"] != "50.0 % (2 of 4 requests)" {
		t.Errorf("error_rate text %q", st.Text["error_rate"])
	}
	if st.RedisMode != map[bool]string{true: "cluster", false: "single"}[e.cluster != nil] {
		t.Errorf("redis_mode %q", st.RedisMode)
	}
}

// TestConsoleNotReady: with Redis down the console still answers, says
// not ready and why in words, and shows no address.
func TestConsoleNotReady(t *testing.T) {
	e := MustEnv(t, envOptions{storeTimeout: 300 * time.Millisecond})
	e.StopRedis()
	r := e.getConsole(t, "/console/status", "/console/status")
	var st healthStatus
	r.JSON(t, &st)
	cause := st.Text["ready_cause"]
	if st.Ready || st.Text["ready"] != "not ready" || !strings.HasPrefix(cause, "Redis ") {
		t.Fatalf("status %s", r.Body)
	}
	if strings.Contains(cause, "127.0.0.1") || strings.Contains(cause, ":") {
		t.Fatalf("cause %q shows an address", cause)
	}
	page := e.getConsole(t, "/", "/")
	if page.Status != 200 || !strings.Contains(string(page.Body), `class="badge bad"`) || !strings.Contains(string(page.Body), cause) {
		t.Fatalf("page while not ready: %d", page.Status)
	}
	t.Logf("not ready: %s", cause)
}

// TestConsoleQueueAndUptime: the queue depth and uptime come from Config.
func TestConsoleQueueAndUptime(t *testing.T) {
	c := newClock(time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC))
	s := MustNew(t, Config{Queued: func() int { return 7 }, Started: c.Now().Add(-(26*time.Hour + 5*time.Minute)), RedisMode: "embedded", Now: c.Now})
	st := s.health()
	if st.QueueDepth != 7 || st.Text["queue_depth"] != "7 events" || st.Text["uptime"] != "1d 2h" || st.Text["redis_mode"] != "embedded (in-process, not durable)" {
		t.Fatalf("%+v", st)
	}
	b, _ := json.Marshal(st)
	if !strings.Contains(string(b), `"uptime_seconds":93900`) {
		t.Fatalf("%s", b)
	}
}

// TestConsoleRateWindow: the rates cover the last 60 s (or the uptime
// while shorter) and forget what is older.
func TestConsoleRateWindow(t *testing.T) {
	c := newClock(time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC))
	cs := newConsoleState(c.Now(), c.Now)
	cs.events(10)
	cs.request(200)
	if w := cs.window(c.Now()); w.events != 10 || w.requests != 1 || w.errors != 0 || w.span != 1 {
		t.Fatalf("at start: %+v", w)
	}
	c.Advance(30 * time.Second)
	cs.events(20)
	cs.request(503)
	cs.request(429)
	if w := cs.window(c.Now()); w.events != 30 || w.requests != 3 || w.errors != 2 || w.span != 31 {
		t.Fatalf("after 30 s: %+v", w)
	}
	c.Advance(45 * time.Second) // the first second has left the window
	if w := cs.window(c.Now()); w.events != 20 || w.requests != 2 || w.span != 60 {
		t.Fatalf("after 75 s: %+v", w)
	}
	c.Advance(time.Hour) // a bucket reused 60 s later starts over
	cs.request(200)
	if w := cs.window(c.Now()); w.events != 0 || w.requests != 1 || w.errors != 0 {
		t.Fatalf("an hour later: %+v", w)
	}
	for d, want := range map[time.Duration]string{0: "0s", 59 * time.Second: "59s", 61 * time.Second: "1m 1s", 3*time.Hour + 7*time.Minute: "3h 7m"} {
		if got := formatUptime(d); got != want {
			t.Errorf("formatUptime(%v) = %q, want %q", d, got, want)
		}
	}
}

// BenchmarkConsoleRecord is what the console adds to every webhook
// request: one request and one events record, from many goroutines.
func BenchmarkConsoleRecord(b *testing.B) {
	cs := newConsoleState(time.Now(), time.Now)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			cs.events(1)
			cs.request(200)
		}
	})
}

// TestConsoleContrast checks the colour pairs of console.css, in both
// schemes, against WCAG AA for text (a contrast ratio of at least 4.5).
func TestConsoleContrast(t *testing.T) {
	css, err := consoleFS.ReadFile("console/console.css")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile(`:root \{([^}]*)\}`).FindAllStringSubmatch(string(css), -1)
	if len(blocks) != 2 {
		t.Fatalf("want a light and a dark :root block, found %d", len(blocks))
	}
	pairs := [][2]string{{"text", "card"}, {"text", "bg"}, {"muted", "card"}, {"muted", "bg"}, {"link", "card"}, {"link", "bg"},
		{"ok-fg", "ok-bg"}, {"off-fg", "off-bg"}, {"bad-fg", "bad-bg"}, {"btn-fg", "btn"}}
	for i, blk := range blocks {
		vars := map[string]string{}
		for _, m := range regexp.MustCompile(`--([a-z-]+):\s*(#[0-9a-fA-F]{6})`).FindAllStringSubmatch(blk[1], -1) {
			vars[m[1]] = m[2]
		}
		for _, p := range pairs {
			fg, bg := vars[p[0]], vars[p[1]]
			if fg == "" || bg == "" {
				t.Fatalf("scheme %d lacks --%s or --%s", i, p[0], p[1])
			}
			if r := contrast(fg, bg); r < 4.5 {
				t.Errorf("scheme %d: --%s %s on --%s %s has contrast %.2f, want >= 4.5", i, p[0], fg, p[1], bg, r)
			}
		}
	}
}

// contrast is the WCAG 2 contrast ratio of two #rrggbb colours.
func contrast(a, b string) float64 {
	lum := func(h string) float64 {
		var rgb [3]float64
		for i := range rgb {
			var v int
			fmt.Sscanf(h[1+2*i:3+2*i], "%02x", &v)
			c := float64(v) / 255
			if c <= 0.03928 {
				rgb[i] = c / 12.92
			} else {
				rgb[i] = math.Pow((c+0.055)/1.055, 2.4)
			}
		}
		return 0.2126*rgb[0] + 0.7152*rgb[1] + 0.0722*rgb[2]
	}
	la, lb := lum(a), lum(b)
	return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)
}
