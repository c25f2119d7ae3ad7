package main

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/syncbuf"

	"github.com/fleetd/fleetd/internal/redistest"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

var (
	keyOld = "whsec_" + base64.StdEncoding.EncodeToString([]byte("an-old-signing-key-of-32-bytes!!"))
	keyNew = "whsec_" + base64.StdEncoding.EncodeToString([]byte("a-new-signing-key-of-32-bytes!!!"))
)

// signed posts body signed by the reference Standard Webhooks library.
func signed(tb testing.TB, d *daemon, secret, msgID string, ts time.Time, body string, tamper func(string) string) reply {
	tb.Helper()
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		tb.Fatal(err)
	}
	sig, err := wh.Sign(msgID, ts, []byte(body))
	if err != nil {
		tb.Fatal(err)
	}
	if tamper != nil {
		body = tamper(body)
	}
	return do(tb, nil, "POST", d.base+"/backend/webhook", body,
		"webhook-id", msgID, "webhook-timestamp", strconv.FormatInt(ts.Unix(), 10), "webhook-signature", sig)
}

func TestSignedWebhooks(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": keyOld + "," + keyNew, "FLEETD_WEBHOOK_AUTH": "signature"})
	reg := `{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"n","os":"L"}`
	on := `{"type":"device.online.changed","qdDeviceId":"d1","online":true}`
	now := time.Now()

	wantCounts(t, signed(t, d, keyNew, "msg_1", now, reg, nil), 1, 0, 0, 0)
	// The rotated-out key still verifies.
	wantCounts(t, signed(t, d, keyOld, "msg_2", now, on, nil), 1, 0, 0, 0)
	// webhook-id is the delivery id of an event without id: a redelivery is a duplicate.
	wantCounts(t, signed(t, d, keyNew, "msg_2", now, on, nil), 0, 1, 0, 0)
	// In a batch, event i gets <webhook-id>:<i>.
	batch := "[" + on + "," + on + "]"
	wantCounts(t, signed(t, d, keyNew, "msg_3", now, batch, nil), 2, 0, 0, 0)
	wantCounts(t, signed(t, d, keyNew, "msg_3", now, batch, nil), 0, 2, 0, 0)

	for name, tc := range map[string]struct {
		secret string
		ts     time.Time
		tamper func(string) string
	}{
		"tampered body": {keyNew, now, func(b string) string { return strings.Replace(b, "true", "false", 1) }},
		"stale":         {keyNew, now.Add(-6 * time.Minute), nil},
		"future":        {keyNew, now.Add(6 * time.Minute), nil},
		"unknown key":   {"whsec_" + base64.StdEncoding.EncodeToString([]byte("someone-elses-key")), now, nil},
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, signed(t, d, tc.secret, "msg_x", tc.ts, on, tc.tamper), 401, "unauthorized")
		})
	}
	t.Run("missing headers", func(t *testing.T) {
		wantError(t, do(t, nil, "POST", d.base+"/backend/webhook", on, "webhook-id", "m"), 401, "unauthorized")
	})
	t.Run("a shared secret is not enough in signature mode", func(t *testing.T) {
		wantError(t, do(t, nil, "POST", d.base+"/backend/webhook", on, "x-webhook-secret", keyNew), 401, "unauthorized")
	})
	t.Run("bad webhook-id", func(t *testing.T) {
		wantError(t, signed(t, d, keyNew, "msg with spaces", now, on, nil), 400, "invalid_request")
	})
}

func TestWebhookAuthAny(t *testing.T) {
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": testSecret + "," + keyNew}, "--webhook-auth", "any")
	on := `{"type":"device.online.changed","qdDeviceId":"d1","online":true}`
	wantCounts(t, signed(t, d, keyNew, "m1", time.Now(), on, nil), 1, 0, 0, 0)
	wantCounts(t, d.webhook(t, on), 1, 0, 0, 0)
	wantError(t, do(t, nil, "POST", d.base+"/backend/webhook", on, "x-webhook-secret", "wrong"), 401, "unauthorized")
	// A present but bad signature is not rescued by the secret.
	r := signed(t, d, keyNew, "m2", time.Now().Add(-time.Hour), on, nil)
	wantError(t, r, 401, "unauthorized")
}

func TestBadAuthConfigFailsAtStart(t *testing.T) {
	for name, env := range map[string]map[string]string{
		"signature without key": {"FLEETD_WEBHOOK_SECRET": "plain", "FLEETD_WEBHOOK_AUTH": "signature"},
		"bad whsec":             {"FLEETD_WEBHOOK_SECRET": "whsec_!!!", "FLEETD_WEBHOOK_AUTH": "signature"},
		"unknown mode":          {"FLEETD_WEBHOOK_SECRET": "plain", "FLEETD_WEBHOOK_AUTH": "hmac"},
	} {
		t.Run(name, func(t *testing.T) {
			srv := redistest.Start(t)
			env["FLEETD_REDIS_URL"] = srv.URL
			var out syncbuf.Buffer
			err := run(t.Context(), []string{"serve", "--addr", fmt.Sprintf("127.0.0.1:%d", redistest.FreePort(t))}, func(k string) string { return env[k] }, &out, &out)
			if err == nil {
				t.Fatal("fleetd started with a bad auth configuration")
			}
		})
	}
}

var _ = http.StatusOK
