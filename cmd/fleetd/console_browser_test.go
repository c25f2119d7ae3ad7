package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/fleetd/fleetd/internal/buildinfo"
)

// chromiumFlags are the flags of the browser test. These machines have no
// network: without them Chromium's own background connections (sync,
// component updates, QUIC probes) fail and stall or pollute the test.
var chromiumFlags = []string{
	"headless", "no-sandbox", "disable-gpu", "disable-quic", "no-first-run",
	"disable-background-networking", "disable-component-update", "disable-sync",
}

// chromiumPath finds the browser (FLEETD_CHROMIUM, else chromium on PATH)
// or fails the test saying how to install it.
func chromiumPath(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("FLEETD_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	tb.Fatal("chromium not found: the console's browser test needs it; run scripts/ensure-deps.sh (Debian: apt-get install chromium) or set FLEETD_CHROMIUM")
	return ""
}

// artifactDir is where the browser test leaves its screenshots:
// FLEETD_TEST_ARTIFACTS, else test-artifacts/ at the repository root
// (gitignored).
func artifactDir(tb testing.TB) string {
	tb.Helper()
	dir := os.Getenv("FLEETD_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "test-artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// browser is one headless Chromium tab with everything the page wrote to
// its console.
type browser struct {
	ctx     context.Context
	mu      sync.Mutex
	console []string
	dialogs []string
}

func mustBrowser(tb testing.TB) *browser {
	tb.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath(tb)),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1200, 900),
		chromedp.Flag("hide-scrollbars", true),
	}
	for _, f := range chromiumFlags {
		opts = append(opts, chromedp.Flag(f, true))
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	tb.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	b := &browser{ctx: ctx}
	// The first action starts the browser; subscribe before any page loads.
	if err := chromedp.Do(ctx); err != nil {
		tb.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleException || m.Type == chromedp.ConsoleWarning {
				b.mu.Lock()
				b.console = append(b.console, m.String()+" @ "+m.URL)
				b.mu.Unlock()
			}
		}
	}()
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, ev.Message)
			b.mu.Unlock()
			chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
		}
	}()
	return b
}

// takeConsole returns and forgets what the page wrote to its console.
func (b *browser) takeConsole() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.console
	b.console = nil
	return c
}

func (b *browser) do(tb testing.TB, what string, steps ...chromedp.Action[chromedp.Void]) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}

func (b *browser) eval(tb testing.TB, js string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
	if err != nil {
		tb.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitFor polls the JavaScript predicate until it is true and returns how
// long that took. The deadline only keeps a broken page from hanging the
// test; the time taken is reported, never asserted.
func (b *browser) waitFor(tb testing.TB, what, predicate string) time.Duration {
	tb.Helper()
	start := time.Now()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(55*time.Second))); err != nil {
		tb.Fatalf("waiting for %s: %v\npage text:\n%s", what, err, b.eval(tb, `document.body.innerText`))
	}
	return time.Since(start)
}

// screenshot saves the whole page laid out at width CSS pixels: the
// viewport is made as tall as the page first, so the image never depends
// on how much of the page one screen shows.
func (b *browser) screenshot(tb testing.TB, name string, width int64) {
	tb.Helper()
	b.do(tb, "lay out at width", chromedp.EmulateViewport(width, 900))
	h := b.eval(tb, `String(Math.ceil(document.documentElement.getBoundingClientRect().height))`)
	var height int64
	fmt.Sscan(h, &height)
	b.do(tb, "fit the page", chromedp.EmulateViewport(width, max(height, 200)))
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		tb.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(artifactDir(tb), name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		tb.Fatal(err)
	}
	tb.Logf("screenshot %s (%dx%d, %d bytes)", path, width, height, len(png))
	b.do(tb, "back to the desktop width", chromedp.EmulateViewport(1200, 900))
}

// xssName is a device name that would run script if the console ever put
// a value from the API into the page as HTML.
const xssName = `<img src=x onerror=alert(1)>`

// TestConsoleInBrowser drives the web console in a real headless Chromium
// against a real fleetd on a real Redis (a Cluster under
// FLEETD_TEST_BACKEND=cluster): the health part with the real version and
// readiness and no console errors; a bad key shows the API's message;
// pasting a key (by keyboard) lists the devices that a webhook just
// created, online first, names shown as text; a device going offline by
// webhook shows as offline at the next refresh; paging and filters walk
// the cursor API; a revoked key shows the
// API's message; the page fits a phone's width; and without JavaScript
// the health part is still there.
func TestConsoleInBrowser(t *testing.T) {
	began := time.Now()
	env, store := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	mode := "single server"
	if env["FLEETD_REDIS_CLUSTER"] != "" {
		mode = "cluster"
	}
	d := MustStart(t, env)
	key, keyID, err := createKey(context.Background(), store, "acme", "console", true)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	ts := func(ago time.Duration) string { return now.Add(-ago).Format(time.RFC3339) }
	wantCounts(t, d.webhook(t, fmt.Sprintf(`[
		{"type":"device.registered","qdDeviceId":"100000001","workspaceId":"acme","name":%q,"os":"Windows","ts":%q},
		{"type":"device.registered","qdDeviceId":"100000002","workspaceId":"acme","name":"qz-mac-7","os":"macOS","ts":%q},
		{"type":"device.registered","qdDeviceId":"100000003","workspaceId":"acme","name":"build-runner","os":"Linux","ts":%q},
		{"type":"device.online.changed","qdDeviceId":"100000002","online":true,"ts":%q},
		{"type":"device.online.changed","qdDeviceId":"100000003","online":true,"ts":%q},
		{"type":"session.started","qdDeviceId":"100000002","sessionId":"s-live","ts":%q},
		{"type":"session.ended","qdDeviceId":"100000003","sessionId":"s-done","status":"success","durationSec":185,"ts":%q}]`,
		xssName, ts(time.Hour), ts(time.Hour), ts(time.Hour), ts(50*time.Minute), ts(40*time.Minute), ts(5*time.Minute), ts(10*time.Minute))), 7, 0, 0, 0)

	b := mustBrowser(t)
	launched := time.Now()

	// 1. The health part, no key.
	b.do(t, "load the console", chromedp.Navigate(d.base+"/"), chromedp.WaitVisible(chromedp.ID("workspace")))
	version := b.eval(t, `document.querySelector('[data-health="version"]').textContent`)
	if bi := buildinfo.Get(); !strings.HasPrefix(version, bi.Version+" (commit "+bi.Commit) {
		t.Errorf("version shows %q, want the binary's %s (commit %s)", version, bi.Version, bi.Commit)
	}
	if got := b.eval(t, `document.getElementById('ready-badge').textContent.trim()`); got != "ready" {
		t.Errorf("readiness badge %q, want ready", got)
	}
	if got := b.eval(t, `document.querySelector('[data-health="ready_cause"]').textContent`); !strings.HasPrefix(got, "Redis answered PING in") {
		t.Errorf("readiness cause %q", got)
	}
	if got := b.eval(t, `document.querySelector('[data-health="redis_mode"]').textContent`); got != mode {
		t.Errorf("Redis mode %q, want %q", got, mode)
	}
	// The webhook above is in the last minute's rates once the page refreshes.
	b.waitFor(t, "the webhook rate", `document.querySelector('[data-health="events_rate"]').textContent !== "0.0 events/s"`)
	for _, link := range []string{"/metrics", "/api/openapi.json"} {
		if b.eval(t, fmt.Sprintf(`String(!!document.querySelector('a[href=%q]'))`, link)) != "true" {
			t.Errorf("no link to %s", link)
		}
	}
	if c := b.takeConsole(); len(c) > 0 {
		t.Errorf("console messages while loading the page: %q", c)
	}
	b.screenshot(t, "console-health.png", 1000)

	// Accessibility basics: a language, labels for every control, alt
	// text for every image.
	if got := b.eval(t, `document.documentElement.lang`); got != "en" {
		t.Errorf("lang = %q", got)
	}
	if got := b.eval(t, `[...document.querySelectorAll('input, select')].filter(e => e.labels.length === 0).map(e => e.id).join(",")`); got != "" {
		t.Errorf("controls without a label: %s", got)
	}
	if got := b.eval(t, `[...document.images].filter(i => !i.hasAttribute('alt')).length + ""`); got != "0" {
		t.Errorf("%s images without alt", got)
	}

	// 2. A bad key shows the API's own message.
	bad := "sk_live_" + strings.Repeat("x", 40)
	apiMsg := do(t, nil, "GET", d.base+"/api/v1/devices", "", "x-api-key", bad).body["message"]
	b.do(t, "submit a bad key", chromedp.SendKeys(chromedp.ID("api-key"), bad), chromedp.Click(chromedp.CSS(`#key-form button[type=submit]`)))
	b.waitFor(t, "the bad key's error", `!document.getElementById('ws-error').hidden`)
	if got := b.eval(t, `document.getElementById('ws-error').textContent`); apiMsg == nil || !strings.Contains(got, apiMsg.(string)) || !strings.Contains(got, "401") {
		t.Errorf("bad key shows %q, want the API's message %q and 401", got, apiMsg)
	}
	if got := b.eval(t, `String(sessionStorage.getItem('fleetd.apiKey'))`); got != "null" {
		t.Errorf("a refused key stays in session storage: %q", got)
	}
	for _, m := range b.takeConsole() { // the browser logs the refused fetch itself
		if !strings.Contains(m, "401") {
			t.Errorf("console message after the bad key: %s", m)
		}
	}

	// 3. The good key, typed with the keyboard only: Tab to the field,
	// type, Enter.
	b.do(t, "focus the page", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
	tabs := 0
	for ; tabs < 30 && b.eval(t, `document.activeElement.id`) != "api-key"; tabs++ {
		b.do(t, "press Tab", chromedp.KeyEvent("\t"))
	}
	if tabs == 30 {
		t.Fatal("Tab never reaches the API key field")
	}
	b.do(t, "type the key", chromedp.KeyEvent(key+"\r"))
	took := b.waitFor(t, "the devices", `document.querySelectorAll('#devices tbody tr').length === 3`)
	t.Logf("devices listed %v after the key was entered (%d Tab presses to the field)", took, tabs)
	rows := b.eval(t, `[...document.querySelectorAll('#devices tbody tr')].map(r => [...r.cells].slice(0, 3).map(c => c.textContent).join("|")).join("\n")`)
	want := "online|qz-mac-7|100000002\nonline|build-runner|100000003\noffline|" + xssName + "|100000001"
	if rows != want {
		t.Errorf("device rows:\n%s\nwant (online first):\n%s", rows, want)
	}
	if got := b.eval(t, `document.querySelectorAll('#devices img, #ws-data img').length + ""`); got != "0" {
		t.Errorf("the device name became %s image element(s): rendered as HTML", got)
	}
	if got := b.eval(t, `[...document.querySelectorAll('#live tbody tr')].map(r => r.cells[0].textContent).join(",")`); got != "100000002" {
		t.Errorf("live sessions: %q", got)
	}
	if got := b.eval(t, `[...document.querySelectorAll('#recent tbody tr')].map(r => r.cells[0].textContent + " " + r.cells[1].textContent + " " + r.cells[2].textContent).join(",")`); !strings.Contains(got, "100000003 success 3m 05s") {
		t.Errorf("recent sessions: %q", got)
	}
	if got := b.eval(t, `document.getElementById('usage-minutes').textContent + "/" + document.getElementById('usage-devices').textContent`); got != "3/3" {
		t.Errorf("usage minutes/devices = %q, want 3/3", got)
	}
	if got := b.eval(t, `location.href`); strings.Contains(got, "sk_live") {
		t.Errorf("the key is in the URL: %s", got)
	}
	if got := b.eval(t, `String(sessionStorage.getItem('fleetd.apiKey') === `+fmt.Sprintf("%q", key)+` && localStorage.length === 0)`); got != "true" {
		t.Error("the key is not in session storage only")
	}
	b.do(t, "blur", chromedp.Evaluate[chromedp.Void](`document.activeElement.blur()`))
	b.screenshot(t, "console-workspace.png", 1000)

	// 4. A device going offline by webhook shows as offline at a refresh.
	wantCounts(t, d.webhook(t, fmt.Sprintf(`{"type":"device.online.changed","qdDeviceId":"100000002","online":false,"ts":%q}`, now.Format(time.RFC3339))), 1, 0, 0, 0)
	took = b.waitFor(t, "the device to show offline", `[...document.querySelectorAll('#devices tbody tr')].some(r => r.cells[2].textContent === "100000002" && r.cells[0].textContent === "offline")`)
	t.Logf("offline shown %v after the webhook (refresh every 3 s)", took)

	// Paging through the cursor API, online first, and the filters: 12
	// more (offline) devices make 15, two pages of 10.
	var more []string
	for i := 10; i < 22; i++ {
		more = append(more, fmt.Sprintf(`{"type":"device.registered","qdDeviceId":"1000000%d","workspaceId":"acme","name":"kiosk-%d","os":"Linux","ts":%q}`, i, i, ts(time.Hour)))
	}
	wantCounts(t, d.webhook(t, "["+strings.Join(more, ",")+"]"), 12, 0, 0, 0)
	rowIDs := `[...document.querySelectorAll('#devices tbody tr')].map(r => r.cells[2].textContent).join(",")`
	b.do(t, "10 per page", chromedp.SetValue(chromedp.ID("f-size"), "10"), chromedp.Click(chromedp.CSS(`#device-filter button[type=submit]`)))
	b.waitFor(t, "page 1 of 10", `document.querySelectorAll('#devices tbody tr').length === 10`)
	if got := b.eval(t, rowIDs); got != "100000003,100000001,100000002,100000010,100000011,100000012,100000013,100000014,100000015,100000016" {
		t.Errorf("page 1: %s", got)
	}
	b.do(t, "next page", chromedp.Click(chromedp.ID("next")))
	b.waitFor(t, "page 2", `document.getElementById('page-label').textContent === "Page 2"`)
	if got := b.eval(t, rowIDs); got != "100000017,100000018,100000019,100000020,100000021" {
		t.Errorf("page 2: %s", got)
	}
	if b.eval(t, `String(document.getElementById('next').disabled)`) != "true" {
		t.Error("Next is enabled on the last page")
	}
	b.do(t, "previous page", chromedp.Click(chromedp.ID("prev")))
	b.waitFor(t, "back on page 1", `document.getElementById('page-label').textContent === "Page 1" && document.querySelectorAll('#devices tbody tr').length === 10`)
	b.do(t, "online only", chromedp.SetValue(chromedp.ID("f-status"), "true"), chromedp.Click(chromedp.CSS(`#device-filter button[type=submit]`)))
	b.waitFor(t, "online only", `document.querySelectorAll('#devices tbody tr').length === 1`)
	if got := b.eval(t, rowIDs); got != "100000003" {
		t.Errorf("online only: %s", got)
	}
	b.do(t, "macOS, any status", chromedp.SetValue(chromedp.ID("f-status"), ""), chromedp.SetValue(chromedp.ID("f-os"), "macOS"), chromedp.Click(chromedp.CSS(`#device-filter button[type=submit]`)))
	b.waitFor(t, "macOS only", `document.querySelectorAll('#devices tbody tr').length === 1 && document.querySelector('#devices tbody tr').cells[2].textContent === "100000002"`)
	b.do(t, "no filter", chromedp.Evaluate[chromedp.Void](`document.getElementById("f-os").value = ""`), chromedp.SetValue(chromedp.ID("f-size"), "25"), chromedp.Click(chromedp.CSS(`#device-filter button[type=submit]`)))
	b.waitFor(t, "all devices", `document.querySelectorAll('#devices tbody tr').length === 15`)

	// 5. The phone width: nothing wider than the screen but the tables,
	// which scroll in their own box.
	b.do(t, "phone width", chromedp.EmulateViewport(390, 844))
	b.waitFor(t, "the phone layout", `document.documentElement.scrollWidth <= 390`)
	b.screenshot(t, "console-phone.png", 390)

	// 6. Revoking the key: the page shows the API's message at the next
	// refresh, once the key cache lets go of it.
	if _, err := store.RevokeKey(context.Background(), keyID, nil); err != nil {
		t.Fatal(err)
	}
	took = b.waitFor(t, "the revoked key's error", `!document.getElementById('ws-error').hidden && document.getElementById('ws-data').hidden`)
	msg := b.eval(t, `document.getElementById('ws-error').textContent`)
	apiMsg = do(t, nil, "GET", d.base+"/api/v1/devices", "", "x-api-key", key).body["message"]
	if apiMsg == nil || !strings.Contains(msg, apiMsg.(string)) {
		t.Errorf("revoked key shows %q, want the API's message %q", msg, apiMsg)
	}
	t.Logf("revocation shown %v after it", took)
	revoked := func() {
		for _, m := range b.takeConsole() {
			if !strings.Contains(m, "401") {
				t.Errorf("console message after the revocation: %s", m)
			}
		}
	}
	revoked()

	// 7. Without JavaScript the health part is all there, and says the
	// workspace view needs JavaScript.
	if _, err := chromedp.Call(b.ctx, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true}); err != nil {
		t.Fatal(err)
	}
	b.do(t, "load without JavaScript", chromedp.Navigate(d.base+"/"), chromedp.WaitVisible(chromedp.ID("health")))
	// The old page's refresh may have had more requests of the revoked key
	// in flight (their 401s are logged as they land); this page sends none.
	revoked()
	text := b.eval(t, `document.body.innerText`)
	for _, s := range []string{"ready", mode, buildinfo.Get().Version, "events/s", "Ingest queue", "needs JavaScript"} {
		if !strings.Contains(text, s) {
			t.Errorf("without JavaScript the page lacks %q:\n%s", s, text)
		}
	}

	b.mu.Lock()
	dialogs := b.dialogs
	b.mu.Unlock()
	if len(dialogs) > 0 {
		t.Errorf("the page opened dialogs (script ran from a value): %q", dialogs)
	}
	if c := b.takeConsole(); len(c) > 0 {
		t.Errorf("console messages: %q", c)
	}
	t.Logf("browser test: %v in all, %v from Chromium's start", time.Since(began).Round(time.Millisecond), time.Since(launched).Round(time.Millisecond))
	if errors.Is(b.ctx.Err(), context.Canceled) {
		t.Fatal("the browser went away during the test")
	}
}
