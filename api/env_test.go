package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/ingest"
	"github.com/fleetd/fleetd/internal/fleetfake"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/metrics"
	"github.com/fleetd/fleetd/redisstore"
	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

const webhookSecret = "test-webhook-secret"

// clock is a settable clock shared by the server and the store, so live
// durations, defaults and "now" in usage are exact in assertions.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *clock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// envOptions tune one test environment.
type envOptions struct {
	// now fixes the clock; zero means the real time.
	now time.Time
	// keyTTL is Config.KeyCacheTTL (zero: the default).
	keyTTL time.Duration
	// storeTimeout is the store's per-call timeout (zero: 2 s).
	storeTimeout time.Duration
	// authFailBurst is Config.AuthFailBurst (zero: no throttle).
	authFailBurst int
	// throttledLookups is Config.ThrottledLookups (zero: none).
	throttledLookups int
	// maxBody and maxInflight are Config.MaxBodyBytes and
	// MaxInflightBodyBytes (zero: 1 MiB, no bound).
	maxBody     int
	maxInflight int64
	// webhookSecrets and webhookAuth replace the one shared secret.
	webhookSecrets []string
	webhookAuth    string
	// inMemory runs the env on the in-memory fake store (fleetfake)
	// instead of Redis: for the tests of the HTTP surface that need no
	// Redis semantics (no outage, no stale results, no store cursors).
	inMemory bool
}

// envStore is what an env needs of its store: a redisstore.Store, or a
// fleetfake.Store.
type envStore interface {
	fleet.Ingester
	fleet.Reader
	fleet.KeyStore
	Ping(ctx context.Context) error
	SetClock(now func() time.Time)
}

// env is one fleetd HTTP surface over a real redis-server (or, with
// envOptions.inMemory, the fake store), served by a real fasthttp.Server
// on loopback.
type env struct {
	redis   *redistest.Server  // nil on a cluster or in memory
	cluster *redistest.Cluster // nil on a single server or in memory
	store   envStore
	srv     *Server
	base    string
	clock   *clock
	reg     *prometheus.Registry
	limits  *metrics.Limits
	http    *http.Client
}

// StopRedis stops every Redis node of the env, like an outage.
func (e *env) StopRedis() {
	if e.redis == nil && e.cluster == nil {
		panic("StopRedis: this env runs in memory, without Redis")
	}
	if e.redis != nil {
		e.redis.Stop()
		return
	}
	for _, n := range e.cluster.Nodes {
		n.Stop()
	}
}

// MustEnv starts Redis, the store, the batcher and the HTTP server;
// everything stops when the test ends. Redis is one redis-server, or a
// real Redis Cluster when FLEETD_TEST_BACKEND=cluster (make test runs both;
// e.redis is then nil); with o.inMemory there is no Redis at all.
func MustEnv(tb testing.TB, o envOptions) *env {
	tb.Helper()
	e := &env{reg: prometheus.NewRegistry()}
	e.limits = metrics.NewLimits(e.reg)
	if o.inMemory {
		e.store = fleetfake.New()
	} else {
		e.store = mustRedisStore(tb, e, o)
	}
	store := e.store
	now := time.Now
	if !o.now.IsZero() {
		e.clock = newClock(o.now)
		now = e.clock.Now
		store.SetClock(now)
	}
	batcher := ingest.NewBatcher(store, ingest.Config{})
	tb.Cleanup(batcher.Close)
	e.srv = MustNew(tb, Config{
		Reader:               store,
		Keys:                 store,
		Ingest:               batcher,
		API:                  metrics.NewAPI(e.reg),
		Webhook:              metrics.NewWebhook(e.reg),
		Ready:                store.Ping,
		WebhookSecrets:       o.webhookSecrets, // MustNew adds the shared test secret when empty
		WebhookAuth:          o.webhookAuth,
		RedisMode:            map[bool]string{true: "cluster", false: "single"}[e.cluster != nil], // "single" in memory too
		Queued:               batcher.Queued,
		MaxBodyBytes:         o.maxBody,
		MaxInflightBodyBytes: o.maxInflight,
		KeyCacheTTL:          o.keyTTL,
		AuthFailBurst:        o.authFailBurst,
		AuthFailRefill:       time.Minute,
		ThrottledLookups:     o.throttledLookups,
		Limits:               e.limits,
		Now:                  now,
	})
	e.base = serveServer(tb, e.srv)
	e.http = newClient(tb)
	return e
}

// mustRedisStore starts the Redis of FLEETD_TEST_BACKEND for e and opens
// the store on it, closed when the test ends.
func mustRedisStore(tb testing.TB, e *env, o envOptions) *redisstore.Store {
	tb.Helper()
	if o.storeTimeout == 0 {
		o.storeTimeout = 2 * time.Second
	}
	cfg := redisstore.Config{Timeout: o.storeTimeout, Retention: 10 * 365 * 24 * time.Hour}
	switch os.Getenv("FLEETD_TEST_BACKEND") {
	case "cluster":
		e.cluster = redistest.StartCluster(tb)
		cfg.Cluster = e.cluster.Addrs()
	case "", "single":
		e.redis = redistest.Start(tb)
		cfg.URL = e.redis.URL
	default:
		tb.Fatal("FLEETD_TEST_BACKEND must be single or cluster")
	}
	store, err := redisstore.Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { store.Close() })
	return store
}

// newClient returns an HTTP client that keeps connections alive, as real
// API clients do, and closes them when the test ends.
func newClient(tb testing.TB) *http.Client {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, ExpectContinueTimeout: 5 * time.Second}}
	tb.Cleanup(c.CloseIdleConnections)
	return c
}

// MustNew is New for tests; a config without webhook secrets gets one,
// since New refuses to run a webhook nobody can call.
func MustNew(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	if len(cfg.WebhookSecrets) == 0 {
		cfg.WebhookSecrets = []string{webhookSecret}
	}
	s, err := New(cfg)
	if err != nil {
		tb.Fatalf("api config: %v", err)
	}
	return s
}

// serve serves h on a loopback port until the test ends and returns its
// base URL.
func serve(tb testing.TB, h fasthttp.RequestHandler) string {
	tb.Helper()
	return serveWith(tb, h, nil)
}

// serveServer serves s as the daemon does: bodies read by its handlers
// (StreamBodies).
func serveServer(tb testing.TB, s *Server) string {
	tb.Helper()
	return serveWith(tb, s.Handler(), s.StreamBodies)
}

// serveWith is serve with configure applied to the fasthttp.Server.
func serveWith(tb testing.TB, h fasthttp.RequestHandler, configure func(*fasthttp.Server)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	s := &fasthttp.Server{
		Handler:            h,
		ErrorHandler:       ErrorHandler,
		ReadTimeout:        10 * time.Second,
		WriteTimeout:       10 * time.Second,
		IdleTimeout:        10 * time.Second,
		MaxRequestBodySize: 4 << 20,
		Concurrency:        4096,
	}
	if configure != nil {
		configure(s)
	}
	done := make(chan struct{})
	go func() { defer close(done); s.Serve(ln) }()
	tb.Cleanup(func() {
		s.Shutdown()
		<-done
	})
	return "http://" + ln.Addr().String()
}

const alnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

func randomString(tb testing.TB, n int) string {
	tb.Helper()
	b := make([]byte, n)
	for i := range b {
		k, err := rand.Int(rand.Reader, big.NewInt(int64(len(alnum))))
		if err != nil {
			tb.Fatal(err)
		}
		b[i] = alnum[k.Int64()]
	}
	return string(b)
}

// MustKey mints an API key of ws the way `fleetd keys create` does and
// returns the key and its id.
func (e *env) MustKey(tb testing.TB, ws string, readOnly bool) (key, id string) {
	tb.Helper()
	key = "sk_live_" + randomString(tb, 40)
	id = "key_" + randomString(tb, 12)
	h := sha256.Sum256([]byte(key))
	err := e.store.CreateKey(context.Background(), h[:], fleet.APIKey{ID: id, Workspace: ws, Name: "test", ReadOnly: readOnly, CreatedAt: time.Now()})
	if err != nil {
		tb.Fatalf("create key: %v", err)
	}
	return key, id
}

// ev is a webhook event in the wire format of SPEC §3.
type ev map[string]any

// MustSend posts events to the webhook and fails unless they are all
// committed.
func (e *env) MustSend(tb testing.TB, events ...ev) {
	tb.Helper()
	if err := e.Send(events...); err != nil {
		tb.Fatal(err)
	}
}

// Send posts events to the webhook; any answer but 200 is an error. Unlike
// MustSend it may be called from any goroutine.
func (e *env) Send(events ...ev) error {
	body, _ := json.Marshal(events)
	req, _ := http.NewRequest("POST", e.base+"/backend/webhook", bytes.NewReader(body))
	req.Header.Set("x-webhook-secret", webhookSecret)
	req.Header.Set("content-type", "application/json")
	res, err := e.http.Do(req)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		return fmt.Errorf("webhook: %d %s", res.StatusCode, b)
	}
	return nil
}

func rfc(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func registered(dev, ws, name, os string, ts time.Time) ev {
	return ev{"type": "device.registered", "qdDeviceId": dev, "workspaceId": ws, "name": name, "os": os, "ts": rfc(ts)}
}

func onlineEv(dev string, on bool, ts time.Time) ev {
	return ev{"type": "device.online.changed", "qdDeviceId": dev, "online": on, "ts": rfc(ts)}
}

func startedEv(dev, sid string, ts time.Time) ev {
	return ev{"type": "session.started", "qdDeviceId": dev, "sessionId": sid, "ts": rfc(ts)}
}

func endedEv(dev, sid, status string, dur int, ts time.Time) ev {
	return ev{"type": "session.ended", "qdDeviceId": dev, "sessionId": sid, "status": status, "durationSec": dur, "ts": rfc(ts)}
}

// response is one HTTP answer, read in full.
type response struct {
	Status int
	Header http.Header
	Body   []byte
	// Close is whether the server asked to close the connection.
	Close bool
}

// JSON decodes the body into v or fails.
func (r *response) JSON(tb testing.TB, v any) {
	tb.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		tb.Fatalf("decode %s: %v", r.Body, err)
	}
}

// errorBody is the JSON error body of SPEC §4.
type errorBody struct {
	Error   string `json:"error"`
	Status  int    `json:"status"`
	Message string `json:"message"`
}

// call is one request of a test: route is the template of the path, used
// to find the operation whose schemas the answer must satisfy ("" for a
// path that no route serves).
type call struct {
	method, path, route, key string
	body                     []byte
}

// Do sends c and checks the answer against the OpenAPI document: a routed
// answer must satisfy its operation's schema for that exact status, and any
// non-2xx must be the JSON error body repeating the status.
func (e *env) Do(tb testing.TB, c call) *response {
	tb.Helper()
	var body io.Reader
	if c.body != nil {
		body = bytes.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, e.base+c.path, body)
	if err != nil {
		tb.Fatal(err)
	}
	if c.key != "" {
		req.Header.Set("x-api-key", c.key)
	}
	if c.body != nil {
		req.Header.Set("content-type", "application/json")
	}
	res, err := e.http.Do(req)
	if err != nil {
		tb.Fatalf("%s %s: %v", c.method, c.path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		tb.Fatalf("%s %s: read: %v", c.method, c.path, err)
	}
	r := &response{Status: res.StatusCode, Header: res.Header, Body: b, Close: res.Close}
	if r.Status >= 300 {
		checkErrorBody(tb, r)
	}
	if c.route != "" {
		validate(tb, req, c.route, r)
	}
	return r
}

// Get is Do for a GET with a key.
func (e *env) Get(tb testing.TB, path, route, key string) *response {
	tb.Helper()
	return e.Do(tb, call{method: "GET", path: path, route: route, key: key})
}

// Post is Do for a POST with a key.
func (e *env) Post(tb testing.TB, path, route, key string, body []byte) *response {
	tb.Helper()
	return e.Do(tb, call{method: "POST", path: path, route: route, key: key, body: body})
}

func checkErrorBody(tb testing.TB, r *response) {
	tb.Helper()
	if ct := r.Header.Get("content-type"); ct != "application/json" {
		tb.Errorf("error answer %d has content-type %q, want application/json: %s", r.Status, ct, r.Body)
	}
	var eb errorBody
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error == "" || eb.Message == "" || eb.Status != r.Status {
		tb.Errorf("error answer %d is not the JSON error body: %s (%v)", r.Status, r.Body, err)
	}
	if (r.Status == 503 || r.Status == 429) && r.Header.Get("Retry-After") == "" {
		tb.Errorf("%d without Retry-After", r.Status)
	}
}

// wantError fails unless r is the error body with this status and name.
func wantError(tb testing.TB, r *response, status int, name string) errorBody {
	tb.Helper()
	var eb errorBody
	json.Unmarshal(r.Body, &eb)
	if r.Status != status || eb.Error != name {
		tb.Fatalf("got %d %s, want %d %q", r.Status, r.Body, status, name)
	}
	return eb
}

var (
	docOnce sync.Once
	doc     *openapi3.T
	docErr  error
)

// openAPI loads and validates the served document once per test binary.
func openAPI(tb testing.TB) *openapi3.T {
	tb.Helper()
	docOnce.Do(func() {
		doc, docErr = openapi3.NewLoader().LoadFromData(openapiDoc)
		if docErr == nil {
			docErr = doc.Validate(context.Background())
		}
	})
	if docErr != nil {
		tb.Fatalf("openapi.json: %v", docErr)
	}
	return doc
}

// validate checks an answer against the operation of route in the
// document. Undocumented statuses are failures.
func validate(tb testing.TB, req *http.Request, route string, r *response) {
	tb.Helper()
	if err := validateAnswer(openAPI(tb), req, route, r); err != nil {
		tb.Errorf("%s %s: answer %d does not match openapi.json: %v\nbody: %s", req.Method, req.URL.Path, r.Status, err, r.Body)
	}
}

func validateAnswer(d *openapi3.T, req *http.Request, route string, r *response) error {
	item := d.Paths.Value(route)
	if item == nil {
		return fmt.Errorf("openapi.json has no path %s", route)
	}
	op := item.GetOperation(req.Method)
	if op == nil {
		return fmt.Errorf("openapi.json has no %s %s", req.Method, route)
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: req,
			Route:   &routers.Route{Spec: d, Path: route, PathItem: item, Method: req.Method, Operation: op},
		},
		Status:  r.Status,
		Header:  r.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(r.Body)
	return openapi3filter.ValidateResponse(context.Background(), in)
}

// deviceList and the other reply types mirror SPEC §4 field by field;
// decoding with DisallowUnknownFields would be redundant with the schema
// check (additionalProperties: false).
type device struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	OS          string  `json:"os"`
	Online      bool    `json:"online"`
	LastSeen    string  `json:"last_seen"`
	UserID      *string `json:"user_id"`
	WorkspaceID string  `json:"workspace_id"`
}

type deviceList struct {
	Items      []device `json:"items"`
	NextCursor *string  `json:"next_cursor"`
}

type session struct {
	DeviceID    string `json:"device_id"`
	Status      string `json:"status"`
	DurationSec int64  `json:"duration_sec"`
	At          string `json:"at"`
}

type sessionList struct {
	Items      []session `json:"items"`
	NextCursor *string   `json:"next_cursor"`
}

type usage struct {
	SessionMinutes int64  `json:"session_minutes"`
	ActiveDevices  int64  `json:"active_devices"`
	Devices        int64  `json:"devices"`
	From           string `json:"from"`
	To             string `json:"to"`
	SessionSeconds int64  `json:"session_seconds"`
}

type member struct {
	Email     string `json:"email"`
	Role      string `json:"role"`
	Status    string `json:"status"`
	InvitedAt string `json:"invited_at"`
}

type memberList struct {
	Items      []member `json:"items"`
	NextCursor *string  `json:"next_cursor"`
}

// query builds a path with a query string from key, value pairs.
func query(path string, kv ...string) string {
	var sb strings.Builder
	sb.WriteString(path)
	for i := 0; i+1 < len(kv); i += 2 {
		if i == 0 {
			sb.WriteByte('?')
		} else {
			sb.WriteByte('&')
		}
		sb.WriteString(kv[i])
		sb.WriteByte('=')
		sb.WriteString(url.QueryEscape(kv[i+1]))
	}
	return sb.String()
}
