package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/internal/redistest"
)

// Secrets tests: SPEC §2 says logs never carry a secret or an API key, and
// §4 that keys are stored hashed; device secrets likewise (secret:rotate).
// These tests run a whole scenario with every kind of secret through the
// real wiring, at --log-level debug, then search the daemon's output and
// every key and value of Redis for them.

// secretToken is a random, recognisable secret: a hit in a log or in Redis
// can only come from the scenario.
func secretToken(prefix string) string {
	var b [16]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// secretsBackend starts the Redis of a secrets test and returns the
// environment that points fleetd at it, and its nodes to scan (the masters
// of a cluster under FLEETD_TEST_BACKEND=cluster).
func secretsBackend(tb testing.TB, env map[string]string) (map[string]string, func() []*redistest.Server) {
	tb.Helper()
	if os.Getenv("FLEETD_TEST_BACKEND") == "cluster" {
		c := redistest.StartCluster(tb)
		env["FLEETD_REDIS_CLUSTER"] = c.Seeds()
		return env, func() []*redistest.Server { return c.Masters(tb) }
	}
	srv := redistest.Start(tb)
	env["FLEETD_REDIS_URL"] = srv.URL
	return env, func() []*redistest.Server { return []*redistest.Server{srv} }
}

// signWebhook is a Standard Webhooks v1 signature of body with the key of
// a whsec_ secret.
func signWebhook(tb testing.TB, whsec, msgID string, ts int64, body string) string {
	tb.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(whsec, "whsec_"))
	if err != nil {
		tb.Fatal(err)
	}
	m := hmac.New(sha256.New, key)
	fmt.Fprintf(m, "%s.%d.%s", msgID, ts, body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// runCLI runs a fleetd subcommand in process and returns its output.
func runCLI(tb testing.TB, env map[string]string, args ...string) (stdout, stderr string, err error) {
	tb.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, func(k string) string { return env[k] }, &out, &errOut)
	return out.String(), errOut.String(), err
}

func sha256Hex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// dumpRedis returns every key name and every value of the nodes, one per
// line, read by type.
func dumpRedis(tb testing.TB, nodes []*redistest.Server) (keys []string, dump string) {
	tb.Helper()
	var b strings.Builder
	for _, n := range nodes {
		cursor := "0"
		for {
			reply, err := n.Do("SCAN", cursor, "MATCH", "*", "COUNT", "1000")
			if err != nil {
				tb.Fatalf("SCAN on %s: %v", n.Addr, err)
			}
			lines := strings.Split(reply, "\n")
			cursor = lines[0]
			for _, k := range lines[1:] {
				if k == "" {
					continue
				}
				keys = append(keys, k)
				b.WriteString(k + "\n")
				typ, err := n.Do("TYPE", k)
				if err != nil {
					tb.Fatal(err)
				}
				var cmd []string
				switch typ {
				case "string":
					cmd = []string{"GET", k}
				case "hash":
					cmd = []string{"HGETALL", k}
				case "set":
					cmd = []string{"SMEMBERS", k}
				case "zset":
					cmd = []string{"ZRANGE", k, "0", "-1", "WITHSCORES"}
				case "list":
					cmd = []string{"LRANGE", k, "0", "-1"}
				case "stream":
					cmd = []string{"XRANGE", k, "-", "+"}
				default:
					// "none": the key vanished or SCAN's reply was misread.
					tb.Fatalf("key %q on %s has type %q", k, n.Addr, typ)
				}
				v, err := n.Do(cmd...)
				if err != nil {
					tb.Fatalf("%v: %v", cmd, err)
				}
				b.WriteString(v + "\n")
			}
			if cursor == "0" {
				break
			}
		}
	}
	return keys, b.String()
}

// TestSecretsNeverLoggedNorStoredInClear runs webhooks with shared secrets
// (right, rotated-out, wrong) and Standard Webhooks signatures, API keys
// minted by `fleetd keys create` (used, read-only, unknown, malformed,
// revoked) and a device secret rotation, with debug logging, and then
// checks that no secret appears in the daemon's output nor anywhere in
// Redis, while the SHA-256 of the API keys and of the device secret do
// (keys are stored hashed, not missing).
func TestSecretsNeverLoggedNorStoredInClear(t *testing.T) {
	sharedOld := secretToken("shared-old-")
	sharedNew := secretToken("shared-new-")
	wrongSecret := secretToken("wrong-secret-")
	var raw [32]byte
	rand.Read(raw[:])
	signing := "whsec_" + base64.StdEncoding.EncodeToString(raw[:])
	rand.Read(raw[:])
	foreignSigning := "whsec_" + base64.StdEncoding.EncodeToString(raw[:])

	env, nodes := secretsBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": sharedOld + "," + signing + "," + sharedNew})
	d := MustStart(t, env, "--log-level", "debug", "--webhook-auth", "any", "--key-cache-ttl", "200ms", "--auth-fail-burst", "1000")
	hook := func(body string, hdr ...string) reply {
		return do(t, nil, "POST", d.base+"/backend/webhook", body, append([]string{"content-type", "application/json"}, hdr...)...)
	}

	// Webhooks: both shared secrets of a rotation, a wrong one, a missing one.
	wantCounts(t, hook(`{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"qz-win-105","os":"Windows","id":"e1"}`,
		"x-webhook-secret", sharedNew), 1, 0, 0, 0)
	wantCounts(t, hook(`{"type":"device.online.changed","qdDeviceId":"d1","online":true,"id":"e2"}`, "x-webhook-secret", sharedOld), 1, 0, 0, 0)
	wantError(t, hook(`{"type":"device.deleted","qdDeviceId":"d1"}`, "x-webhook-secret", wrongSecret), 401, "unauthorized")
	wantError(t, hook(`{"type":"device.deleted","qdDeviceId":"d1"}`, "x-webhook-secret", signing), 401, "unauthorized")
	wantError(t, hook(`{"type":"device.deleted","qdDeviceId":"d1"}`), 401, "unauthorized")

	// Signatures: a good one, one by a key fleetd does not know, a tampered body.
	now := time.Now().Unix()
	ts := strconv.FormatInt(now, 10)
	body := `[{"type":"session.started","qdDeviceId":"d1","sessionId":"s1"},{"type":"session.ended","qdDeviceId":"d1","sessionId":"s1","status":"success","durationSec":61}]`
	wantCounts(t, hook(body, "webhook-id", "msg_1", "webhook-timestamp", ts, "webhook-signature", signWebhook(t, signing, "msg_1", now, body)), 2, 0, 0, 0)
	wantError(t, hook(body, "webhook-id", "msg_2", "webhook-timestamp", ts, "webhook-signature", signWebhook(t, foreignSigning, "msg_2", now, body)), 401, "unauthorized")
	wantError(t, hook(strings.Replace(body, "61", "6100", 1), "webhook-id", "msg_3", "webhook-timestamp", ts,
		"webhook-signature", signWebhook(t, signing, "msg_3", now, body)), 401, "unauthorized")

	// API keys from the CLI: the key alone on stdout, never on stderr.
	key, keyErr, err := runCLI(t, env, "keys", "create", "--workspace", "acme", "--name", "ci")
	if err != nil {
		t.Fatal(err, keyErr)
	}
	key = strings.TrimSpace(key)
	roKey, roErr, err := runCLI(t, env, "keys", "create", "--workspace", "acme", "--read-only")
	if err != nil {
		t.Fatal(err, roErr)
	}
	roKey = strings.TrimSpace(roKey)
	roID, _ := strings.CutPrefix(strings.TrimSpace(roErr), "id: ")
	for _, k := range []string{key, roKey} {
		if !strings.HasPrefix(k, "sk_live_") || len(k) < 40 {
			t.Fatalf("keys create printed %q", k)
		}
	}
	if strings.Contains(keyErr+roErr, "sk_live_") {
		t.Fatalf("keys create wrote a key to stderr: %q %q", keyErr, roErr)
	}
	unknownKey := "sk_live_" + strings.Repeat("Z", 8) + secretToken("")
	malformedKey := "sk_live_" + secretToken("-not-alnum-")

	api := func(method, path, k string) reply {
		return do(t, nil, method, d.base+path, "", "x-api-key", k)
	}
	if r := api("GET", "/api/v1/devices", key); r.code != 200 || !strings.Contains(r.raw, `"d1"`) {
		t.Fatalf("devices with the key: %d %s", r.code, r.raw)
	}
	if r := api("GET", "/api/v1/sessions", roKey); r.code != 200 {
		t.Fatalf("sessions with the read-only key: %d %s", r.code, r.raw)
	}
	wantError(t, api("POST", "/api/v1/devices/d1/unbind", roKey), 403, "forbidden")
	wantError(t, api("GET", "/api/v1/devices", unknownKey), 401, "unauthorized")
	wantError(t, api("GET", "/api/v1/devices", malformedKey), 401, "unauthorized")

	// A device secret, shown once.
	r := api("POST", "/api/v1/devices/d1/secret:rotate", key)
	deviceSecret, _ := r.body["secret"].(string)
	if r.code != 200 || !strings.HasPrefix(deviceSecret, "ds_") || len(deviceSecret) < 40 {
		t.Fatalf("secret:rotate: %d %s", r.code, r.raw)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("secret:rotate with Cache-Control %q, want no-store", cc)
	}

	// Revocation by key and by id: refused within the key cache TTL.
	if _, e, err := runCLI(t, env, "keys", "revoke", key); err != nil {
		t.Fatal(err, e)
	}
	if _, e, err := runCLI(t, env, "keys", "revoke", roID); err != nil {
		t.Fatal(err, e)
	}
	for _, k := range []string{key, roKey} {
		deadline := time.Now().Add(5 * time.Second)
		for api("GET", "/api/v1/devices", k).code != 401 {
			if time.Now().After(deadline) {
				t.Fatal("a revoked key still works after 5 s")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// A malformed request (no secret in it): what fasthttp says about it
	// at debug level is searched below too.
	rawExchange(t, d, "GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n")

	list, listErr, err := runCLI(t, env, "keys", "list", "--workspace", "acme", "--json")
	if err != nil {
		t.Fatal(err, listErr)
	}

	if err := d.Shutdown(t); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	logs := d.stderr.String()
	if !strings.Contains(logs, "fleetd listening") || !strings.Contains(logs, "fleetd stopped") {
		t.Fatalf("the daemon's log is not the one of this run:\n%s", logs)
	}

	secrets := map[string]string{
		"shared secret":                sharedNew,
		"rotated-out shared secret":    sharedOld,
		"wrong shared secret":          wrongSecret,
		"signing key":                  signing,
		"signing key (base64)":         strings.TrimPrefix(signing, "whsec_"),
		"foreign signing key (base64)": strings.TrimPrefix(foreignSigning, "whsec_"),
		"API key":                      key,
		"API key (random part)":        strings.TrimPrefix(key, "sk_live_"),
		"read-only API key":            roKey,
		"unknown API key":              unknownKey,
		"malformed API key":            malformedKey,
		"device secret":                deviceSecret,
	}
	for what, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("the %s appears in the daemon's log (stderr)", what)
		}
		if strings.Contains(d.stdout.String(), s) {
			t.Errorf("the %s appears on the daemon's stdout", what)
		}
		if strings.Contains(list, s) || strings.Contains(listErr, s) {
			t.Errorf("the %s appears in `fleetd keys list`", what)
		}
	}

	keys, dump := dumpRedis(t, nodes())
	if len(keys) == 0 {
		t.Fatal("Redis holds no key at all")
	}
	for what, s := range secrets {
		if strings.Contains(dump, s) {
			t.Errorf("the %s appears in clear in Redis", what)
		}
	}
	for what, s := range map[string]string{"API key": key, "read-only API key": roKey, "device secret": deviceSecret} {
		if !strings.Contains(dump, sha256Hex(s)) {
			t.Errorf("the SHA-256 of the %s is nowhere in Redis: is it stored at all?", what)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", logs)
	}
}

// TestSecretsEmbeddedModeOnlyOnStdout: in embedded mode fleetd prints the
// generated webhook secret and the demo API key on stdout, on purpose, and
// never in its log (stderr), even at debug level and once they are used.
func TestSecretsEmbeddedModeOnlyOnStdout(t *testing.T) {
	d := MustStart(t, nil, "--log-level", "debug")
	var secret, key string
	for _, line := range strings.Split(d.stdout.String(), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export SECRET="); ok {
			secret = v
		}
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "export KEY="); ok {
			key = v
		}
	}
	if len(secret) < 32 || !strings.HasPrefix(key, "sk_live_") {
		t.Fatalf("embedded mode must print a secret and a key on stdout:\n%s", d.stdout)
	}
	wantCounts(t, do(t, nil, "POST", d.base+"/backend/webhook", `{"type":"device.registered","qdDeviceId":"d1","workspaceId":"demo","name":"n","os":"L"}`,
		"x-webhook-secret", secret), 1, 0, 0, 0)
	wantError(t, do(t, nil, "POST", d.base+"/backend/webhook", `[]`, "x-webhook-secret", secret+"x"), 401, "unauthorized")
	if r := do(t, nil, "GET", d.base+"/api/v1/devices", "", "x-api-key", key); r.code != 200 {
		t.Fatalf("the demo key: %d %s", r.code, r.raw)
	}
	if r := do(t, nil, "POST", d.base+"/api/v1/devices/d1/secret:rotate", "", "x-api-key", key); r.code != 200 {
		t.Fatalf("secret:rotate with the demo key: %d %s", r.code, r.raw)
	}
	if err := d.Shutdown(t); err != nil {
		t.Fatal(err)
	}
	logs := d.stderr.String()
	if !strings.Contains(logs, "NOT durable") || !strings.Contains(logs, "fleetd stopped") {
		t.Fatalf("unexpected log:\n%s", logs)
	}
	for what, s := range map[string]string{"webhook secret": secret, "demo API key": key, "demo API key (random part)": strings.TrimPrefix(key, "sk_live_")} {
		if strings.Contains(logs, s) {
			t.Errorf("the %s appears in the log (stderr)", what)
		}
		if n := strings.Count(d.stdout.String(), s); n != 1 {
			t.Errorf("the %s appears %d times on stdout, want once", what, n)
		}
	}
}

// rawExchange sends req on a new connection and reads the answer until the
// server closes it (or 2 s pass).
func rawExchange(tb testing.TB, d *daemon, req string) string {
	tb.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(d.base, "http://"))
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		tb.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	return string(b)
}

// TestFuzzFoundSecretInDebugLogOfMalformedRequest: at --log-level debug,
// a request whose headers fasthttp cannot parse puts the raw headers in
// the log, x-api-key and x-webhook-secret included. fasthttp's error
// carries a dump of the header buffer (cmd/fleetd/serve.go does not set
// fasthttp.Server.SecureErrorLogMessage), and fasthttpLogger (serve.go)
// forwards it to slog. SecureErrorLogMessage: true removes the dump, but
// fasthttp still quotes the offending line or value itself ("x-api-key
// sk_live_…" without its colon; a key followed by a control character), so
// fasthttpLogger must also stop forwarding fasthttp's text verbatim (e.g.
// replace every quoted part of the message with "…").
func TestFuzzFoundSecretInDebugLogOfMalformedRequest(t *testing.T) {
	secret := secretToken("shared-")
	srv := redistest.Start(t)
	d := MustStart(t, map[string]string{"FLEETD_REDIS_URL": srv.URL, "FLEETD_WEBHOOK_SECRET": secret}, "--log-level", "debug")
	key := "sk_live_" + secretToken("")
	for name, req := range map[string]string{
		"bad header after the key":     "GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nx-api-key: " + key + "\r\nno colon here\r\n\r\n",
		"bad length after the secret":  "POST /backend/webhook HTTP/1.1\r\nHost: x\r\nx-webhook-secret: " + secret + "\r\nContent-Length: abc\r\n\r\n",
		"key header without its colon": "GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nx-api-key " + key + "\r\n\r\n",
		"control character after key":  "GET /api/v1/devices HTTP/1.1\r\nHost: x\r\nx-api-key: " + key + "\x01\r\n\r\n",
	} {
		if got := rawExchange(t, d, req); !strings.HasPrefix(got, "HTTP/1.1 400 ") {
			t.Fatalf("%s: answer %.80q, want a 400", name, got)
		}
	}
	if err := d.Shutdown(t); err != nil {
		t.Fatal(err)
	}
	for what, s := range map[string]string{"webhook secret": secret, "API key": key} {
		if strings.Contains(d.stderr.String(), s) {
			t.Errorf("the %s of a malformed request appears in the debug log", what)
		}
	}
	if t.Failed() {
		t.Logf("daemon log:\n%s", d.stderr)
	}
}
