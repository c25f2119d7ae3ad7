package loadtest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fakeFleetd is a test double of fleetd's webhook, /metrics and the two REST
// endpoints the verifier reads, written straight from SPEC §3-§5 and
// independent of the package's reference model. It exists only to exercise
// the load-test client until the real daemon can be run in-process.
type fakeFleetd struct {
	secret string
	// every503 answers every Nth webhook request 503 without applying it.
	every503 int
	// countEndedTwice is a planted bug: a redelivered session.ended adds its
	// seconds again, which verification must catch.
	countEndedTwice bool

	mu       sync.Mutex
	requests int
	seen     map[string]bool
	devices  map[string]*fakeDevice
	sessions map[string]*fakeSession
	known    map[string]bool   // workspaces
	keys     map[string]string // key → workspace
}

type fakeDevice struct {
	ws         string
	registered bool
	hasOnline  bool
	online     bool
	onlineTs   int64
}

type fakeSession struct {
	device  string
	started bool
	ended   bool
	secs    int64
	status  string
}

type fakeEvent struct {
	ID          string `json:"id"`
	Type        string `json:"type"`
	TS          *int64 `json:"ts"`
	QdDeviceID  string `json:"qdDeviceId"`
	WorkspaceID string `json:"workspaceId"`
	Name        string `json:"name"`
	OS          string `json:"os"`
	Online      *bool  `json:"online"`
	SessionID   string `json:"sessionId"`
	Status      string `json:"status"`
	DurationSec *int64 `json:"durationSec"`
}

func newFakeFleetd(secret string) *fakeFleetd {
	return &fakeFleetd{
		secret:   secret,
		seen:     make(map[string]bool),
		devices:  make(map[string]*fakeDevice),
		sessions: make(map[string]*fakeSession),
		known:    make(map[string]bool),
		keys:     make(map[string]string),
	}
}

// start serves f on a loopback httptest server closed at test cleanup.
func (f *fakeFleetd) start(tb testing.TB) *httptest.Server {
	tb.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /backend/webhook", f.webhook)
	mux.HandleFunc("GET /metrics", f.metrics)
	mux.HandleFunc("GET /api/v1/usage", f.usage)
	mux.HandleFunc("GET /api/v1/devices", f.listDevices)
	srv := httptest.NewServer(mux)
	tb.Cleanup(srv.Close)
	return srv
}

// mintKey is an Options.MintKey backed by the fake's key table.
func (f *fakeFleetd) mintKey(_ context.Context, ws string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := "sk_live_" + strings.Repeat("x", 32) + strconv.Itoa(len(f.keys))
	f.keys[key] = ws
	return key, nil
}

func writeJSONErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":%q,"status":%d,"message":%q}`, code, status, msg)
}

func (f *fakeFleetd) webhook(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("x-webhook-secret") != f.secret {
		writeJSONErr(w, 401, "unauthorized", "bad secret")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		writeJSONErr(w, 400, "invalid_request", err.Error())
		return
	}
	var evs []fakeEvent
	if t := bytes.TrimSpace(body); len(t) > 0 && t[0] == '[' {
		err = json.Unmarshal(t, &evs)
	} else {
		var e fakeEvent
		err = json.Unmarshal(t, &e)
		evs = []fakeEvent{e}
	}
	if err != nil {
		writeJSONErr(w, 400, "invalid_request", err.Error())
		return
	}
	for i, e := range evs {
		if e.ID == "" || e.QdDeviceID == "" || e.TS == nil {
			writeJSONErr(w, 400, "invalid_request", fmt.Sprintf("event %d: missing field", i))
			return
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.requests++
	if f.every503 > 0 && f.requests%f.every503 == 0 {
		w.Header().Set("Retry-After", "0")
		writeJSONErr(w, 503, "unavailable", "injected")
		return
	}
	var c serverCounts
	for _, e := range evs {
		switch f.apply(e) {
		case "accepted":
			c.Accepted++
		case "duplicate":
			c.Duplicate++
		case "stale":
			c.Stale++
		default:
			c.Ignored++
		}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"accepted":%d,"duplicate":%d,"stale":%d,"ignored":%d}`, c.Accepted, c.Duplicate, c.Stale, c.Ignored)
}

// apply is called with f.mu held.
func (f *fakeFleetd) apply(e fakeEvent) string {
	if f.seen[e.ID] {
		if f.countEndedTwice && e.Type == "session.ended" && e.DurationSec != nil {
			if s := f.sessions[e.SessionID]; s != nil {
				s.secs += *e.DurationSec
			}
		}
		return "duplicate"
	}
	f.seen[e.ID] = true
	d := f.devices[e.QdDeviceID]
	if d == nil {
		d = &fakeDevice{}
		f.devices[e.QdDeviceID] = d
	}
	switch e.Type {
	case "device.registered":
		d.ws, d.registered = e.WorkspaceID, true
		f.known[e.WorkspaceID] = true
	case "device.online.changed":
		if d.hasOnline && *e.TS < d.onlineTs {
			return "stale"
		}
		d.hasOnline, d.online, d.onlineTs = true, *e.Online, *e.TS
	case "session.started", "session.ended":
		s := f.sessions[e.SessionID]
		if s == nil {
			s = &fakeSession{device: e.QdDeviceID}
			f.sessions[e.SessionID] = s
		}
		if e.Type == "session.started" {
			s.started = true
			break
		}
		if s.ended {
			return "duplicate"
		}
		s.ended, s.status = true, e.Status
		if e.DurationSec != nil {
			s.secs = *e.DurationSec
		}
	default:
		return "ignored"
	}
	return "accepted"
}

type fakeWS struct {
	devices, online, live, secs int64
	ended                       map[string]int64
	active                      map[string]bool
}

// snapshot computes per-workspace state; called with f.mu held.
func (f *fakeFleetd) snapshot() map[string]*fakeWS {
	out := make(map[string]*fakeWS)
	for ws := range f.known {
		out[ws] = &fakeWS{ended: make(map[string]int64), active: make(map[string]bool)}
	}
	for _, d := range f.devices {
		if !d.registered {
			continue
		}
		st := out[d.ws]
		st.devices++
		if d.hasOnline && d.online {
			st.online++
		}
	}
	for _, s := range f.sessions {
		d := f.devices[s.device]
		if d == nil || !d.registered {
			continue
		}
		st := out[d.ws]
		switch {
		case s.ended:
			st.secs += s.secs
			st.ended[s.status]++
			st.active[s.device] = true
		case s.started:
			st.live++
			st.active[s.device] = true
		}
	}
	return out
}

func (f *fakeFleetd) metrics(w http.ResponseWriter, _ *http.Request) {
	f.mu.Lock()
	snap := f.snapshot()
	f.mu.Unlock()
	var b strings.Builder
	b.WriteString("# HELP fleet_devices Registered devices.\n# TYPE fleet_devices gauge\n")
	names := make([]string, 0, len(snap))
	for ws := range snap {
		names = append(names, ws)
	}
	sort.Strings(names)
	for _, ws := range names {
		st := snap[ws]
		fmt.Fprintf(&b, "fleet_devices{workspace=%q} %d\n", ws, st.devices)
		fmt.Fprintf(&b, "fleet_devices_online{workspace=%q} %d\n", ws, st.online)
		fmt.Fprintf(&b, "fleet_sessions_live{workspace=%q} %d\n", ws, st.live)
		fmt.Fprintf(&b, "fleet_session_seconds_total{workspace=%q} %d\n", ws, st.secs)
		for status, n := range st.ended {
			fmt.Fprintf(&b, "fleet_sessions_ended_total{status=%q,workspace=%q} %d\n", status, ws, n)
		}
	}
	b.WriteString("# TYPE go_goroutines gauge\ngo_goroutines 7\n")
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	io.WriteString(w, b.String())
}

func (f *fakeFleetd) workspace(w http.ResponseWriter, r *http.Request) (string, bool) {
	f.mu.Lock()
	ws, ok := f.keys[r.Header.Get("x-api-key")]
	f.mu.Unlock()
	if !ok {
		writeJSONErr(w, 401, "unauthorized", "bad key")
	}
	return ws, ok
}

func (f *fakeFleetd) usage(w http.ResponseWriter, r *http.Request) {
	ws, ok := f.workspace(w, r)
	if !ok {
		return
	}
	f.mu.Lock()
	st := f.snapshot()[ws]
	f.mu.Unlock()
	if st == nil {
		st = &fakeWS{active: map[string]bool{}}
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"from":"x","to":"y","session_minutes":%d,"session_seconds":%d,"active_devices":%d,"devices":%d}`,
		st.secs/60, st.secs, len(st.active), st.devices)
}

// listDevices pages with a plain offset cursor over ids in order.
func (f *fakeFleetd) listDevices(w http.ResponseWriter, r *http.Request) {
	ws, ok := f.workspace(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 1 || limit > 500 {
		writeJSONErr(w, 400, "invalid_request", "limit")
		return
	}
	offset := 0
	if c := q.Get("cursor"); c != "" {
		if offset, err = strconv.Atoi(c); err != nil {
			writeJSONErr(w, 400, "invalid_request", "cursor")
			return
		}
	}
	type item struct {
		ID     string `json:"id"`
		Online bool   `json:"online"`
	}
	var items []item
	f.mu.Lock()
	for id, d := range f.devices {
		if !d.registered || d.ws != ws {
			continue
		}
		on := d.hasOnline && d.online
		if o := q.Get("online"); o != "" && (o == "true") != on {
			continue
		}
		items = append(items, item{ID: id, Online: on})
	}
	f.mu.Unlock()
	sort.Slice(items, func(i, j int) bool { return items[i].ID < items[j].ID })
	end := min(offset+limit, len(items))
	page := struct {
		Items      []item  `json:"items"`
		NextCursor *string `json:"next_cursor"`
	}{Items: items[min(offset, len(items)):end]}
	if page.Items == nil {
		page.Items = []item{}
	}
	if end < len(items) {
		c := strconv.Itoa(end)
		page.NextCursor = &c
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(page)
}
