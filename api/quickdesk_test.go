package api

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/quickdesktest"
)

const (
	routeQuickDesk = "/backend/webhook/quickdesk"
	qdDevice       = "378283213" // the device of the captured deliveries
	qdWorkspace    = "qd"
)

// qdNow is after every captured delivery (2026-12-01T20:02-20:04Z), so
// none is in the future, whatever the machine's clock says.
var qdNow = time.Date(2026, 12, 1, 20, 5, 0, 0, time.UTC)

// mustQuickDeskEnv is a real Redis (or, with o.inMemory, the fake store)
// and fleetd whose secret list holds QuickDesk's shared secret after
// another one (a rotation) and a whsec_ signing key (which must never
// verify a QuickDesk delivery).
func mustQuickDeskEnv(tb testing.TB, o envOptions) *env {
	tb.Helper()
	if o.now.IsZero() {
		o.now = qdNow
	}
	o.webhookSecrets = append([]string{webhookSecret}, append(o.webhookSecrets, quickdesktest.Secret, "whsec_"+qdSigningKeyB64)...)
	return MustEnv(tb, o)
}

// qdSigningKeyB64 is base64 of "quickdesk-signing": a Standard Webhooks key.
const qdSigningKeyB64 = "cXVpY2tkZXNrLXNpZ25pbmc="

func qdSign(secret string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return "sha256=" + hex.EncodeToString(m.Sum(nil))
}

// PostQuickDesk posts body with headers exactly as given (nil: none but
// the content type) and checks the answer against openapi.json.
func (e *env) PostQuickDesk(tb testing.TB, body []byte, headers map[string]string) *response {
	tb.Helper()
	req, err := http.NewRequest("POST", e.base+routeQuickDesk, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := e.http.Do(req)
	if err != nil {
		tb.Fatalf("POST %s: %v", routeQuickDesk, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	r := &response{Status: res.StatusCode, Header: res.Header, Body: b, Close: res.Close}
	if r.Status >= 300 {
		checkErrorBody(tb, r)
	}
	validate(tb, req, routeQuickDesk, r)
	return r
}

// webhookResult is the 200 body of both webhooks.
type webhookResult struct {
	Accepted, Duplicate, Stale, Ignored int
}

func wantResult(tb testing.TB, r *response, want webhookResult) {
	tb.Helper()
	var got webhookResult
	if r.Status != 200 {
		tb.Fatalf("got %d %s, want 200 %+v", r.Status, r.Body, want)
	}
	r.JSON(tb, &got)
	if got != want {
		tb.Fatalf("got %s, want %+v", r.Body, want)
	}
}

// qdDeviceState reads the device through the REST API.
func (e *env) qdDeviceState(tb testing.TB, key string) device {
	tb.Helper()
	r := e.Get(tb, "/api/v1/devices/"+qdDevice, routeDevice, key)
	if r.Status != 200 {
		tb.Fatalf("device: %d %s", r.Status, r.Body)
	}
	var d device
	r.JSON(tb, &d)
	return d
}

// eventsCount reads fleetd_webhook_events_total{type,result}.
func eventsCount(tb testing.TB, e *env, typ, result string) float64 {
	tb.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "fleetd_webhook_events_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var t, r string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "type":
					t = l.GetValue()
				case "result":
					r = l.GetValue()
				}
			}
			if t == typ && r == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

// TestQuickDeskCapturedDeliveries posts every captured delivery byte for
// byte with its captured headers, in capture order, and checks each
// one's effect on the device; then redelivers each (QuickDesk retries),
// which changes nothing.
func TestQuickDeskCapturedDeliveries(t *testing.T) {
	e := mustQuickDeskEnv(t, envOptions{})
	key, _ := e.MustKey(t, qdWorkspace, true)
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	e.MustSend(t, registered(qdDevice, qdWorkspace, "qd-host", "Windows", at("2026-12-01T20:00:00Z")),
		onlineEv(qdDevice, true, at("2026-12-01T20:01:00Z")))
	if d := e.qdDeviceState(t, key); !d.Online {
		t.Fatalf("set-up: device %+v is not online", d)
	}

	type effect struct {
		result   webhookResult
		online   bool
		lastSeen string
	}
	want := []effect{
		{webhookResult{Accepted: 1}, false, "2026-12-01T20:02:01Z"}, // device.secret.rotated: offline at the rotation
		{webhookResult{Ignored: 1}, false, "2026-12-01T20:02:01Z"},  // webhook.test
		{webhookResult{Ignored: 1}, false, "2026-12-01T20:02:01Z"},  // turn.config.changed
		{webhookResult{Ignored: 1}, false, "2026-12-01T20:02:01Z"},  // session.revoked
		{webhookResult{Accepted: 1}, true, "2026-12-01T20:03:10Z"},  // device.online.changed online
		{webhookResult{Accepted: 1}, false, "2026-12-01T20:04:45Z"}, // device.online.changed offline
	}
	ds := quickdesktest.Deliveries()
	if len(ds) != len(want) {
		t.Fatalf("%d deliveries, want %d", len(ds), len(want))
	}
	for i, d := range ds {
		r := e.PostQuickDesk(t, []byte(d.Body), d.Headers)
		wantResult(t, r, want[i].result)
		got := e.qdDeviceState(t, key)
		if got.Online != want[i].online || got.LastSeen != want[i].lastSeen {
			t.Fatalf("after delivery %d (%s): device online=%v last_seen=%s, want online=%v last_seen=%s",
				i, d.Event(), got.Online, got.LastSeen, want[i].online, want[i].lastSeen)
		}
		t.Logf("delivery %d %-22s (%s) -> %d %s; device online=%v last_seen=%s", i, d.Event(), d.Source, r.Status, r.Body, got.Online, got.LastSeen)
	}
	final := e.qdDeviceState(t, key)
	for i, d := range ds {
		r := e.PostQuickDesk(t, []byte(d.Body), d.Headers)
		w := webhookResult{Duplicate: want[i].result.Accepted, Ignored: want[i].result.Ignored}
		wantResult(t, r, w)
		t.Logf("redelivery %d %-22s -> %d %s", i, d.Event(), r.Status, r.Body)
	}
	if got := e.qdDeviceState(t, key); got != final {
		t.Fatalf("redeliveries changed the device: %+v, was %+v", got, final)
	}
	for _, c := range []struct {
		typ, result string
		want        float64
	}{
		{"device.secret.rotated", "accepted", 1},
		{"device.secret.rotated", "duplicate", 1},
		{"device.online.changed", "accepted", 3}, // 2 deliveries + the set-up event
		{"device.online.changed", "duplicate", 2},
		{"webhook.test", "ignored", 2},
		{"turn.config.changed", "ignored", 2},
		{"session.revoked", "ignored", 2},
	} {
		if got := eventsCount(t, e, c.typ, c.result); got != c.want {
			t.Errorf("fleetd_webhook_events_total{type=%q,result=%q} = %v, want %v", c.typ, c.result, got, c.want)
		}
	}
}

// TestQuickDeskOutOfOrder delivers the captured presence events newest
// first, before the device is registered: the older ones are stale, and
// the state is the one of the in-order delivery.
func TestQuickDeskOutOfOrder(t *testing.T) {
	e := mustQuickDeskEnv(t, envOptions{})
	key, _ := e.MustKey(t, qdWorkspace, true)
	ds := quickdesktest.Deliveries()
	for _, c := range []struct {
		i    int
		want webhookResult
	}{
		{5, webhookResult{Accepted: 1}}, // offline at 20:04:45, for a device not yet registered
		{4, webhookResult{Stale: 1}},    // online at 20:03:10: older
		{0, webhookResult{Stale: 1}},    // rotation at 20:02:01: older still
	} {
		r := e.PostQuickDesk(t, []byte(ds[c.i].Body), ds[c.i].Headers)
		wantResult(t, r, c.want)
		t.Logf("delivery %d (%s) out of order -> %d %s", c.i, ds[c.i].Event(), r.Status, r.Body)
	}
	e.MustSend(t, registered(qdDevice, qdWorkspace, "qd-host", "Windows", time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)))
	d := e.qdDeviceState(t, key)
	if d.Online || d.LastSeen != "2026-12-01T20:04:45Z" {
		t.Fatalf("device %+v, want offline, last seen 20:04:45 (the newest delivery)", d)
	}

	// The rotation after a newer online change is stale too; after an
	// older one it wins.
	e2 := mustQuickDeskEnv(t, envOptions{})
	key2, _ := e2.MustKey(t, qdWorkspace, true)
	e2.MustSend(t, registered(qdDevice, qdWorkspace, "qd-host", "Windows", time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)))
	wantResult(t, e2.PostQuickDesk(t, []byte(ds[4].Body), ds[4].Headers), webhookResult{Accepted: 1})
	wantResult(t, e2.PostQuickDesk(t, []byte(ds[0].Body), ds[0].Headers), webhookResult{Stale: 1})
	if d := e2.qdDeviceState(t, key2); !d.Online {
		t.Fatalf("a rotation older than the online change turned the device offline: %+v", d)
	}
}

// TestQuickDeskRefused posts deliveries that must be refused, each with
// its answer, and checks that none of them changed anything.
func TestQuickDeskRefused(t *testing.T) {
	e := mustQuickDeskEnv(t, envOptions{})
	key, _ := e.MustKey(t, qdWorkspace, true)
	e.MustSend(t, registered(qdDevice, qdWorkspace, "qd-host", "Windows", time.Date(2026, 12, 1, 20, 0, 0, 0, time.UTC)),
		onlineEv(qdDevice, true, time.Date(2026, 12, 1, 20, 1, 0, 0, time.UTC)))
	before := e.qdDeviceState(t, key)

	ds := quickdesktest.Deliveries()
	offline := ds[5] // device.online.changed, online false
	body := []byte(offline.Body)
	captured := offline.Headers["X-Webhook-Signature"]
	var v any
	json.Unmarshal(body, &v)
	reserialised, _ := json.Marshal(v) // same keys, same values: another byte string
	if bytes.Equal(reserialised, body) {
		reserialised = append(reserialised, ' ')
	}
	tampered := bytes.Replace(body, []byte(`"device_id":"378283213","logged_in"`), []byte(`"device_id":"378283214","logged_in"`), 1)
	if bytes.Equal(tampered, body) {
		t.Fatal("tampering did not change the body")
	}
	for _, tc := range []struct {
		name    string
		body    string
		headers map[string]string // nil with sign: signed with QuickDesk's secret
		sign    bool
		status  int
		errName string
		msg     string
	}{
		{"unsigned", offline.Body, nil, false, 401, "unauthorized", "missing or malformed X-Webhook-Signature"},
		{"empty signature", offline.Body, map[string]string{"X-Webhook-Signature": ""}, false, 401, "unauthorized", "missing or malformed"},
		{"no sha256= prefix", offline.Body, map[string]string{"X-Webhook-Signature": strings.TrimPrefix(captured, "sha256=")}, false, 401, "unauthorized", "missing or malformed"},
		{"other algorithm", offline.Body, map[string]string{"X-Webhook-Signature": "sha1=" + strings.TrimPrefix(captured, "sha256=")}, false, 401, "unauthorized", "missing or malformed"},
		{"short hex", offline.Body, map[string]string{"X-Webhook-Signature": captured[:len(captured)-2]}, false, 401, "unauthorized", "missing or malformed"},
		{"not hex", offline.Body, map[string]string{"X-Webhook-Signature": captured[:len(captured)-1] + "g"}, false, 401, "unauthorized", "missing or malformed"},
		{"wrong secret", offline.Body, map[string]string{"X-Webhook-Signature": qdSign("not-the-secret", body)}, false, 401, "unauthorized", "does not match the body"},
		{"signed with the whsec_ key", offline.Body, map[string]string{"X-Webhook-Signature": qdSign("quickdesk-signing", body)}, false, 401, "unauthorized", "does not match the body"},
		{"signed with the whsec_ string", offline.Body, map[string]string{"X-Webhook-Signature": qdSign("whsec_"+qdSigningKeyB64, body)}, false, 401, "unauthorized", "does not match the body"},
		{"main webhook's header", offline.Body, map[string]string{"x-webhook-secret": quickdesktest.Secret}, false, 401, "unauthorized", "missing or malformed"},
		{"another delivery's signature", offline.Body, map[string]string{"X-Webhook-Signature": ds[4].Headers["X-Webhook-Signature"]}, false, 401, "unauthorized", "does not match the body"},
		{"tampered body", string(tampered), offline.Headers, false, 401, "unauthorized", "does not match the body"},
		{"re-serialised body", string(reserialised), offline.Headers, false, 401, "unauthorized", "does not match the body"},
		{"trailing newline", offline.Body + "\n", offline.Headers, false, 401, "unauthorized", "does not match the body"},
		{"malformed JSON, signed", `{"event":"device.online.changed","data":{`, nil, true, 400, "invalid_request", "expected a field name"},
		{"an array, signed", `[` + offline.Body + `]`, nil, true, 400, "invalid_request", "one JSON object"},
		{"no device, signed", `{"data":{"data":{"online":false},"id":"evt_x"},"event":"device.online.changed"}`, nil, true, 400, "invalid_request", "data.data.device_id is required"},
		{"bad device id, signed", `{"data":{"data":{"device_id":"../x","online":false}},"event":"device.online.changed"}`, nil, true, 400, "invalid_request", "data.data.device_id must be 1-128"},
		{"future ts, signed", `{"data":{"data":{"device_id":"378283213","online":false},"ts":"2026-12-01T23:00:00Z"},"event":"device.online.changed"}`, nil, true, 400, "invalid_request", "data.ts is more than 1 hour in the future"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.sign {
				tc.headers = map[string]string{"X-Webhook-Signature": qdSign(quickdesktest.Secret, []byte(tc.body))}
			}
			r := e.PostQuickDesk(t, []byte(tc.body), tc.headers)
			eb := wantError(t, r, tc.status, tc.errName)
			if !strings.Contains(eb.Message, tc.msg) {
				t.Fatalf("message %q does not contain %q", eb.Message, tc.msg)
			}
			t.Logf("%-30s -> %d %s", tc.name, r.Status, r.Body)
		})
	}
	if got := e.qdDeviceState(t, key); got != before {
		t.Fatalf("a refused delivery changed the device: %+v, was %+v", got, before)
	}
	if n := eventsCount(t, e, "device.online.changed", "invalid"); n != 3 {
		t.Errorf("device.online.changed invalid = %v, want 3 (the signed ones rejected once their event was known)", n)
	}

	// The captured delivery itself still goes through after all that.
	wantResult(t, e.PostQuickDesk(t, body, offline.Headers), webhookResult{Accepted: 1})
	if d := e.qdDeviceState(t, key); d.Online {
		t.Fatalf("device still online after the captured offline delivery: %+v", d)
	}
}

// TestQuickDeskSecretRotation: any shared secret of the list verifies
// (QuickDesk's is the second one here), and the message of a refusal
// never echoes a secret.
func TestQuickDeskSecretRotation(t *testing.T) {
	e := mustQuickDeskEnv(t, envOptions{})
	body := []byte(`{"data":{"message":"This is a synthetic test event","webhook_id":1},"event":"webhook.test","timestamp":"2026-12-01T20:02:01Z"}`)
	for _, secret := range []string{webhookSecret, quickdesktest.Secret} {
		wantResult(t, e.PostQuickDesk(t, body, map[string]string{"X-Webhook-Signature": qdSign(secret, body)}), webhookResult{Ignored: 1})
	}
	r := e.PostQuickDesk(t, body, map[string]string{"X-Webhook-Signature": qdSign("nope", body)})
	wantError(t, r, 401, "unauthorized")
	if bytes.Contains(r.Body, []byte(quickdesktest.Secret)) || bytes.Contains(r.Body, []byte(webhookSecret)) {
		t.Fatalf("refusal echoes a secret: %s", r.Body)
	}
	// Upper-case hex is the same signature.
	sig := qdSign(quickdesktest.Secret, body)
	wantResult(t, e.PostQuickDesk(t, body, map[string]string{"X-Webhook-Signature": "sha256=" + strings.ToUpper(sig[7:])}), webhookResult{Ignored: 1})
}

// TestQuickDeskIgnoredFolded: every ignored event is 200, counted by its
// name when QuickDesk has such an event and as "unknown" otherwise, so a
// sender cannot grow the type label.
func TestQuickDeskIgnoredFolded(t *testing.T) {
	e := mustQuickDeskEnv(t, envOptions{inMemory: true})
	for _, name := range []string{"favorite.added", "device.bound", "no.such.event", "x" + strings.Repeat("y", 300), "device.registered"} {
		body := []byte(`{"data":{"id":"evt_1"},"event":"` + name + `","timestamp":"2026-12-01T20:00:00Z"}`)
		wantResult(t, e.PostQuickDesk(t, body, map[string]string{"X-Webhook-Signature": qdSign(quickdesktest.Secret, body)}), webhookResult{Ignored: 1})
	}
	for typ, want := range map[string]float64{"favorite.added": 1, "device.bound": 1, "unknown": 3} {
		if got := eventsCount(t, e, typ, "ignored"); got != want {
			t.Errorf("type=%q ignored = %v, want %v", typ, got, want)
		}
	}
	if got := eventsCount(t, e, "no.such.event", "ignored"); got != 0 {
		t.Errorf("an unknown name got its own series")
	}
}

// TestQuickDeskThrottleAndOutage: failed signatures count towards the
// failed-authentication throttle like bad webhook secrets, and with Redis
// down an applied event is 503 with Retry-After (QuickDesk retries it),
// while an ignored one, which needs no store, is still 200.
func TestQuickDeskThrottleAndOutage(t *testing.T) {
	e := mustQuickDeskEnv(t, envOptions{authFailBurst: 3, storeTimeout: 300 * time.Millisecond})
	ds := quickdesktest.Deliveries()
	bad := map[string]string{"X-Webhook-Signature": qdSign("nope", []byte(ds[5].Body))}
	for range 3 {
		wantError(t, e.PostQuickDesk(t, []byte(ds[5].Body), bad), 401, "unauthorized")
	}
	r := e.PostQuickDesk(t, []byte(ds[5].Body), bad)
	wantError(t, r, 429, "rate_limited")
	t.Logf("after 3 bad signatures -> %d %s (Retry-After %s)", r.Status, r.Body, r.Header.Get("Retry-After"))

	e2 := mustQuickDeskEnv(t, envOptions{storeTimeout: 300 * time.Millisecond})
	e2.StopRedis()
	r = e2.PostQuickDesk(t, []byte(ds[5].Body), ds[5].Headers)
	wantError(t, r, 503, "unavailable")
	t.Logf("Redis down, %s -> %d %s (Retry-After %s)", ds[5].Event(), r.Status, r.Body, r.Header.Get("Retry-After"))
	wantResult(t, e2.PostQuickDesk(t, []byte(ds[1].Body), ds[1].Headers), webhookResult{Ignored: 1})
}

// TestQuickDeskBodyLimit: a body over the server's limit is 413 JSON,
// answered from its headers (the client waits for 100 Continue, so it
// reads the answer instead of writing into a closed connection).
func TestQuickDeskBodyLimit(t *testing.T) {
	e := mustQuickDeskEnv(t, envOptions{inMemory: true})
	body := []byte(`{"event":"webhook.test","data":{"pad":"` + strings.Repeat("a", 5<<20) + `"}}`)
	r := e.PostQuickDesk(t, body, map[string]string{"X-Webhook-Signature": qdSign(quickdesktest.Secret, body), "Expect": "100-continue"})
	wantError(t, r, 413, "payload_too_large")
}

// TestQuickDeskNeedsSharedSecret: with only signing keys configured
// (--webhook-auth signature), every delivery is refused, saying why.
func TestQuickDeskNeedsSharedSecret(t *testing.T) {
	s := MustNew(t, Config{WebhookSecrets: []string{"whsec_" + qdSigningKeyB64}, WebhookAuth: AuthSignature})
	base := serve(t, s.Handler())
	d := quickdesktest.Deliveries()[1]
	req, _ := http.NewRequest("POST", base+routeQuickDesk, strings.NewReader(d.Body))
	for k, v := range d.Headers {
		req.Header.Set(k, v)
	}
	res, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	r := &response{Status: res.StatusCode, Header: res.Header, Body: b}
	checkErrorBody(t, r)
	if eb := wantError(t, r, 401, "unauthorized"); !strings.Contains(eb.Message, "no shared webhook secret") {
		t.Fatalf("message %q", eb.Message)
	}
}
