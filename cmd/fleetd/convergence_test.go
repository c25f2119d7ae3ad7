package main

// Convergence (SPEC §3): the state that fleetd reaches depends only on the
// set of events delivered, never on their order, batching, replica split or
// redeliveries. The property test draws random histories, delivers each
// (a) in ts order and (b) shuffled with extra redeliveries, both cut into
// random batches split over two fleetd replicas on one real Redis (or the
// real 3-master Cluster on FLEETD_TEST_BACKEND=cluster), reads the final
// state through the public REST API and /metrics only, and compares it with
// internal/model, the spec in code.
//
// The comparison is at the REST API's precision: times are RFC 3339
// seconds, shown relative to the history's base ("base+1h10m0s"). Session
// items carry no session id, so a workspace's sessions are compared as a
// multiset, grouped by device and at. A live session's duration_sec is
// elapsed time: it is checked against the bracket of the read (the start's
// second, the clock before and after the read), not against the model's
// figure. Workspaces whose fleet_* series are absent count as zeros (a
// workspace becomes known to /metrics by its API key as well as by a
// registration, while the model knows only registrations).
//
// Every failure is shrunk by rapid, printed as the webhook JSON that was
// sent, the delivery (batches, replica, sequential or concurrent) and the
// differing fields, and written to testdata/convergence/ as a case that
// TestConvergenceRegressions replays on every run.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/model"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/fleetd/fleetd/redisstore"
)

// The time grid of histories. Every ts is base + slot×convSlot + jitter,
// base being two hours before the history is delivered, so ties are common
// and nothing is in the future. The live bound falls between two slots with
// five minutes to spare on either side: a session started in slot 6 or
// later is live for the whole check, one of slot 5 or earlier abandoned.
const (
	convSlot      = 10 * time.Minute
	convSlots     = 12
	convSpan      = 2 * time.Hour
	convLiveBound = 65 * time.Minute
)

// convJitters are the offsets added to a slot: none mostly (ties), and
// some that matter or not at the API's second precision.
var convJitters = []int64{0, 0, 0, 0, 0, 0, 999, 1000, 30000}

// convDurations are the durationSec values of session.ended; -1 is absent.
// Multiples of the slot make "end minus duration" land on other events' ts.
var convDurations = []int64{-1, -1, -1, 0, 59, 600, 1200, 3600}

// convWorkspaces are the workspaces of every history.
var convWorkspaces = []string{"w0", "w1", "w2"}

// hev is one event of a history, as a case file stores it: ids without the
// delivery's prefix, ts in ms after the history's base.
type hev struct {
	Type      string `json:"type"`
	ID        string `json:"id,omitempty"`
	TS        int64  `json:"ts"`
	RFC3339   bool   `json:"rfc3339,omitempty"` // ts sent as an RFC 3339 string, else Unix ms
	Device    string `json:"qdDeviceId"`
	Workspace string `json:"workspaceId,omitempty"`
	Name      string `json:"name,omitempty"`
	OS        string `json:"os,omitempty"`
	User      string `json:"userId,omitempty"`
	Online    *bool  `json:"online,omitempty"`
	Session   string `json:"sessionId,omitempty"`
	Status    string `json:"status,omitempty"`
	Duration  *int64 `json:"durationSec,omitempty"`
}

// wireEvent is the webhook JSON of an event.
type wireEvent struct {
	Type      string `json:"type"`
	ID        string `json:"id,omitempty"`
	TS        any    `json:"ts"`
	Device    string `json:"qdDeviceId"`
	Workspace string `json:"workspaceId,omitempty"`
	Name      string `json:"name,omitempty"`
	OS        string `json:"os,omitempty"`
	User      string `json:"userId,omitempty"`
	Online    *bool  `json:"online,omitempty"`
	Session   string `json:"sessionId,omitempty"`
	Status    string `json:"status,omitempty"`
	Duration  *int64 `json:"durationSec,omitempty"`
}

// pfx returns id with the delivery's prefix ("" stays "").
func pfx(prefix, id string) string {
	if id == "" {
		return ""
	}
	return prefix + id
}

// wire returns the webhook JSON of e for a delivery with prefix and base.
func (e hev) wire(prefix string, base int64) []byte {
	w := wireEvent{Type: e.Type, ID: pfx(prefix, e.ID), TS: base + e.TS, Device: pfx(prefix, e.Device),
		Workspace: pfx(prefix, e.Workspace), Name: e.Name, OS: e.OS, User: e.User, Online: e.Online,
		Session: pfx(prefix, e.Session), Status: e.Status, Duration: e.Duration}
	if e.RFC3339 {
		w.TS = time.UnixMilli(base + e.TS).UTC().Format("2006-01-02T15:04:05.000Z07:00")
	}
	b, err := json.Marshal(w)
	if err != nil {
		panic(err)
	}
	return b
}

// event returns e as the validated event the model takes.
func (e hev) event(prefix string, base int64) fleet.Event {
	x := fleet.Event{Type: fleet.ParseEventType([]byte(e.Type)), ID: pfx(prefix, e.ID), TS: base + e.TS,
		DeviceID: pfx(prefix, e.Device), WorkspaceID: pfx(prefix, e.Workspace), Name: e.Name, OS: e.OS,
		UserID: e.User, SessionID: pfx(prefix, e.Session), Status: e.Status, DurationSec: -1}
	if e.Online != nil {
		x.Online = *e.Online
	}
	if e.Duration != nil {
		x.DurationSec = *e.Duration
	}
	return x
}

// convBatch is one webhook request: events (indexes into the case's
// events, repeats are redeliveries) sent to one replica.
type convBatch struct {
	Replica int   `json:"replica"`
	Events  []int `json:"events"`
	// Step orders batches in steps: every batch of a step is answered
	// before the next step starts (the generator uses step 0 alone).
	Step int `json:"step,omitempty"`
}

// convDelivery is how a history is sent, step by step. Sequential: one
// request after the other, in order. Concurrent: each replica's requests
// of a step in order, the two replicas at once.
type convDelivery struct {
	Name       string      `json:"name"`
	Concurrent bool        `json:"concurrent"`
	Batches    []convBatch `json:"batches"`
}

// convPeriod is an explicit usage period, ms after the base.
type convPeriod struct {
	From int64 `json:"from"`
	To   int64 `json:"to"`
}

// convCase is a history and one delivery of it: what a failure prints and
// what a regression file holds.
type convCase struct {
	// Found says what the case showed when it was found (for people).
	Found    string       `json:"found,omitempty"`
	Events   []hev        `json:"events"`
	Delivery convDelivery `json:"delivery"`
	Periods  []convPeriod `json:"periods"`
}

// genHistory draws a history over 2–5 devices and 3 workspaces.
func genHistory(t *rapid.T) []hev {
	nd := rapid.IntRange(2, 5).Draw(t, "devices")
	n := rapid.IntRange(1, 30).Draw(t, "events")
	type sess struct{ id, dev string }
	var sessions []sess
	var evs []hev
	ts := func() int64 {
		slot := rapid.IntRange(0, convSlots-1).Draw(t, "slot")
		return int64(slot)*convSlot.Milliseconds() + convJitters[rapid.IntRange(0, len(convJitters)-1).Draw(t, "jitter")]
	}
	dev := func() string { return fmt.Sprintf("d%d", rapid.IntRange(0, nd-1).Draw(t, "device")) }
	session := func() sess {
		// Mostly a new session; else one that already has an event. A
		// session belongs to one device.
		if i := rapid.IntRange(0, len(sessions)).Draw(t, "session"); i < len(sessions) {
			return sessions[i]
		}
		s := sess{fmt.Sprintf("s%d", len(sessions)), dev()}
		sessions = append(sessions, s)
		return s
	}
	for i := range n {
		id := fmt.Sprintf("e%d", i)
		if rapid.IntRange(0, 9).Draw(t, "noID") == 9 {
			id = "" // no delivery id: never a duplicate by id
		}
		kind := rapid.IntRange(0, 9).Draw(t, "kind")
		if kind >= 8 && len(evs) == 0 {
			kind = 0
		}
		var e hev
		switch kind {
		case 0, 1: // registrations: first ones, moves and re-registrations
			e = hev{Type: "device.registered", Device: dev(),
				Workspace: rapid.SampledFrom(convWorkspaces).Draw(t, "workspace"),
				Name:      rapid.SampledFrom([]string{"n0", "n1"}).Draw(t, "name"),
				OS:        rapid.SampledFrom([]string{"Linux", "Windows"}).Draw(t, "os"),
				User:      rapid.SampledFrom([]string{"", "u0", "u1"}).Draw(t, "user")}
		case 2:
			e = hev{Type: "device.deleted", Device: dev()}
		case 3, 4:
			on := rapid.Bool().Draw(t, "online")
			e = hev{Type: "device.online.changed", Device: dev(), Online: &on}
		case 5:
			s := session()
			e = hev{Type: "session.started", Device: s.dev, Session: s.id}
		case 6, 7:
			s := session()
			e = hev{Type: "session.ended", Device: s.dev, Session: s.id,
				Status: rapid.SampledFrom([]string{"success", "failed", "timeout", "x-custom"}).Draw(t, "status")}
			if d := convDurations[rapid.IntRange(0, len(convDurations)-1).Draw(t, "duration")]; d >= 0 {
				e.Duration = &d
			}
		case 8: // a redelivery under the same id: the very same bytes
			evs = append(evs, evs[rapid.IntRange(0, len(evs)-1).Draw(t, "redeliver")])
			continue
		case 9: // a redelivery under a new id
			e = evs[rapid.IntRange(0, len(evs)-1).Draw(t, "redeliverNewID")]
			e.ID = fmt.Sprintf("e%d", i)
			evs = append(evs, e)
			continue
		}
		e.ID = id
		e.TS = ts()
		e.RFC3339 = rapid.Bool().Draw(t, "rfc3339")
		evs = append(evs, e)
	}
	return evs
}

// cut draws batches of 1..8 events of order, each for a random replica.
func cut(t *rapid.T, order []int) []convBatch {
	var out []convBatch
	for len(order) > 0 {
		n := rapid.IntRange(1, min(8, len(order))).Draw(t, "batch")
		out = append(out, convBatch{Replica: rapid.IntRange(0, 1).Draw(t, "replica"), Events: order[:n:n]})
		order = order[n:]
	}
	return out
}

// inOrder draws delivery (a): ts order, sequential, batched, both replicas.
func inOrder(t *rapid.T, evs []hev) convDelivery {
	order := make([]int, len(evs))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(i, j int) bool { return evs[order[i]].TS < evs[order[j]].TS })
	return convDelivery{Name: "in ts order", Batches: cut(t, order)}
}

// shuffled draws delivery (b): any order, extra redeliveries, batched,
// both replicas, sequential or concurrent.
func shuffled(t *rapid.T, evs []hev) convDelivery {
	order := make([]int, len(evs))
	for i := range order {
		order[i] = i
	}
	order = rapid.Permutation(order).Draw(t, "shuffle")
	for range rapid.IntRange(0, len(evs)).Draw(t, "redeliveries") {
		i := rapid.IntRange(0, len(evs)-1).Draw(t, "again")
		at := rapid.IntRange(0, len(order)).Draw(t, "againAt")
		order = slices.Insert(order, at, i)
	}
	return convDelivery{Name: "shuffled", Concurrent: rapid.Bool().Draw(t, "concurrent"), Batches: cut(t, order)}
}

// genPeriods draws the explicit usage periods: one around the whole
// history that contains now, and one between two grid points (bounds on
// events' ts), entirely in the past.
func genPeriods(t *rapid.T) []convPeriod {
	slot := convSlot.Milliseconds()
	a := rapid.IntRange(0, convSlots-1).Draw(t, "periodFrom")
	b := rapid.IntRange(a+1, convSlots).Draw(t, "periodTo")
	return []convPeriod{
		{From: -time.Hour.Milliseconds(), To: (convSpan + time.Hour).Milliseconds()},
		{From: int64(a) * slot, To: int64(b) * slot},
	}
}

// convHarness is two fleetd replicas on one Redis, shared by every history
// of a test; each delivery gets its own id prefix for workspaces, devices,
// sessions and delivery ids, so deliveries never see each other's state.
type convHarness struct {
	store    *redisstore.Store
	replicas [2]*daemon
	client   *http.Client
	seq      atomic.Int64
	// figures for the closing log line
	deliveries, events, requests atomic.Int64
	tDeliver, tREST, tScrape     atomic.Int64 // ns
	flush                        func() error
	sinceFlush                   int
}

// convFlushEvery is how many deliveries share the Redis between flushes.
// Prefixes keep them apart, so a flush is not needed for correctness; it is
// for speed: a /metrics scrape reads every known workspace (3 more per
// delivery), measured at 270 ms with 1,200 workspaces under -race, which
// made the scrapes 85 % of a 200-history run. A FLUSHALL between deliveries
// (scripts survive it) keeps the scrape at under 130 workspaces.
const convFlushEvery = 40

func startConvHarness(t *testing.T) *convHarness {
	t.Helper()
	env := map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret}
	h := &convHarness{client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 30 * time.Second}}
	var cfg redisstore.Config
	switch backendName() {
	case "cluster":
		c := redistest.StartCluster(t)
		env["FLEETD_REDIS_CLUSTER"] = c.Seeds()
		cfg.Cluster = c.Addrs()
		h.flush = func() error {
			for _, n := range c.Masters(t) {
				if _, err := n.Do("FLUSHALL"); err != nil {
					return fmt.Errorf("FLUSHALL %s: %w", n.Addr, err)
				}
			}
			return nil
		}
	case "single":
		srv := redistest.Start(t)
		env["FLEETD_REDIS_URL"] = srv.URL
		cfg.URL = srv.URL
		h.flush = func() error {
			_, err := srv.Do("FLUSHALL")
			return err
		}
	default:
		t.Fatal("FLEETD_TEST_BACKEND must be single or cluster")
	}
	store, err := redisstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	h.store = store
	args := []string{"--live-session-bound", convLiveBound.String(), "--metrics-max-workspaces", "-1", "--metrics-share", "0",
		"--ingest-timeout", "10s", "--redis-timeout", "5s", "--log-level", "warn"}
	for i := range h.replicas {
		h.replicas[i] = MustStart(t, env, args...)
	}
	return h
}

// convRun is one delivery of a history, ready to compare.
type convRun struct {
	c      convCase
	prefix string
	base   int64    // ms
	wire   [][]byte // webhook JSON of each event
	keys   map[string]string
}

// newRun prepares a delivery: a fresh prefix, the base, the wire JSON and
// an API key per workspace (the `keys create` code path).
func (h *convHarness) newRun(c convCase) (*convRun, error) {
	if h.sinceFlush++; h.sinceFlush > convFlushEvery {
		if err := h.flush(); err != nil {
			return nil, err
		}
		h.sinceFlush = 1
	}
	r := &convRun{c: c, prefix: fmt.Sprintf("c%d-", h.seq.Add(1)), keys: map[string]string{}}
	r.base = time.Now().Truncate(time.Second).Add(-convSpan).UnixMilli()
	for _, e := range c.Events {
		r.wire = append(r.wire, e.wire(r.prefix, r.base))
	}
	for _, ws := range convWorkspaces {
		key, _, err := createKey(context.Background(), h.store, r.prefix+ws, "model", true)
		if err != nil {
			return nil, fmt.Errorf("keys create: %w", err)
		}
		r.keys[ws] = key
	}
	return r, nil
}

// post sends one webhook request; 429 and 503 are retried like a sender
// would (a redelivery).
func (h *convHarness) post(replica int, body []byte, n int) error {
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest("POST", h.replicas[replica].base+"/backend/webhook", bytes.NewReader(body))
		req.Header.Set("x-webhook-secret", testSecret)
		req.Header.Set("content-type", "application/json")
		resp, err := h.client.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		h.requests.Add(1)
		if (resp.StatusCode == 429 || resp.StatusCode == 503) && attempt < 20 {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if resp.StatusCode != 200 {
			return fmt.Errorf("replica %d answered %d %s to %s", replica, resp.StatusCode, b, body)
		}
		var counts struct{ Accepted, Duplicate, Stale, Ignored int }
		if err := json.Unmarshal(b, &counts); err != nil || counts.Accepted+counts.Duplicate+counts.Stale+counts.Ignored != n {
			return fmt.Errorf("replica %d answered %s to %d events", replica, b, n)
		}
		return nil
	}
}

// deliver sends the run's batches as its delivery says.
func (h *convHarness) deliver(r *convRun) error {
	body := func(b convBatch) []byte {
		if len(b.Events) == 1 {
			return r.wire[b.Events[0]] // a single event, not a batch
		}
		parts := make([][]byte, len(b.Events))
		for i, x := range b.Events {
			parts[i] = r.wire[x]
		}
		return append(append([]byte{'['}, bytes.Join(parts, []byte{','})...), ']')
	}
	h.deliveries.Add(1)
	for _, b := range r.c.Delivery.Batches {
		h.events.Add(int64(len(b.Events)))
	}
	batches := r.c.Delivery.Batches
	for len(batches) > 0 {
		n := 1
		for n < len(batches) && batches[n].Step == batches[0].Step {
			n++
		}
		step := batches[:n]
		batches = batches[n:]
		if !r.c.Delivery.Concurrent {
			for _, b := range step {
				if err := h.post(b.Replica, body(b), len(b.Events)); err != nil {
					return err
				}
			}
			continue
		}
		var wg sync.WaitGroup
		errs := make([]error, 2)
		ready := make(chan struct{})
		for rep := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-ready // both replicas start at once
				for _, b := range step {
					if b.Replica == rep {
						if errs[rep] = h.post(rep, body(b), len(b.Events)); errs[rep] != nil {
							return
						}
					}
				}
			}()
		}
		close(ready)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return err
		}
	}
	return nil
}

// view is a state flattened to field path → value, for diffing.
type view map[string]string

// diff lists the fields where got and want differ, in path order.
func diff(got, want view) []string {
	paths := map[string]bool{}
	for p := range got {
		paths[p] = true
	}
	for p := range want {
		paths[p] = true
	}
	keys := make([]string, 0, len(paths))
	for p := range paths {
		keys = append(keys, p)
	}
	// REST fields first, then /metrics: the REST difference says more.
	sort.Slice(keys, func(i, j int) bool {
		mi, mj := strings.HasPrefix(keys[i], "metrics "), strings.HasPrefix(keys[j], "metrics ")
		if mi != mj {
			return mj
		}
		return keys[i] < keys[j]
	})
	var out []string
	for _, p := range keys {
		g, okg := got[p]
		w, okw := want[p]
		if !okg {
			g = "<absent>"
		}
		if !okw {
			w = "<absent>"
		}
		if g != w {
			out = append(out, fmt.Sprintf("%s: got %s, want %s", p, g, w))
		}
	}
	return out
}

// rel shows a time at the API's precision relative to the base.
func rel(base, ms int64) string {
	d := time.Duration(ms/1000-base/1000) * time.Second // both > 0: floor
	if d < 0 {
		return "base" + d.String()
	}
	return "base+" + d.String()
}

func relTime(base int64, v string) string {
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return "unparsable " + strconv.Quote(v)
	}
	return rel(base, t.UnixMilli())
}

func periodLabel(base int64, p convPeriod) string {
	return "[" + rel(base, base+p.From) + "," + rel(base, base+p.To) + ")"
}

// get reads a REST resource with the workspace's key; dst may be nil.
func (h *convHarness) get(replica int, path, key string, dst any) (int, error) {
	req, _ := http.NewRequest("GET", h.replicas[replica].base+path, nil)
	if key != "" {
		req.Header.Set("x-api-key", key)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == 200 && dst != nil {
		if err := json.Unmarshal(b, dst); err != nil {
			return 0, fmt.Errorf("GET %s: %v: %s", path, err, b)
		}
	}
	if resp.StatusCode != 200 && resp.StatusCode != 404 {
		return resp.StatusCode, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return resp.StatusCode, nil
}

type apiDevice struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	OS          string  `json:"os"`
	Online      bool    `json:"online"`
	LastSeen    string  `json:"last_seen"`
	UserID      *string `json:"user_id"`
	WorkspaceID string  `json:"workspace_id"`
}

type apiSession struct {
	DeviceID    string `json:"device_id"`
	Status      string `json:"status"`
	DurationSec int64  `json:"duration_sec"`
	At          string `json:"at"`
}

type apiUsage struct {
	SessionMinutes int64  `json:"session_minutes"`
	SessionSeconds int64  `json:"session_seconds"`
	ActiveDevices  int64  `json:"active_devices"`
	Devices        int64  `json:"devices"`
	From           string `json:"from"`
	To             string `json:"to"`
}

// observed is the state read back through the API.
type observed struct {
	v view
	// month is the default usage period each workspace's reply echoed.
	month map[string][2]int64
	// t0, t1 bracket the reads (ms).
	t0, t1 int64
}

// observe reads the run's workspaces through REST (replica 0) and
// /metrics (replica 1).
func (h *convHarness) observe(r *convRun) (*observed, error) {
	o := &observed{v: view{}, month: map[string][2]int64{}, t0: time.Now().UnixMilli()}
	unp := func(id string) string { return strings.TrimPrefix(id, r.prefix) }
	type liveItem struct {
		path string
		at   string
		dur  int64
	}
	var live []liveItem
	for _, ws := range convWorkspaces {
		key := r.keys[ws]
		listed := map[string]bool{}
		for cursor := ""; ; {
			var page struct {
				Items []apiDevice `json:"items"`
				Next  *string     `json:"next_cursor"`
			}
			if _, err := h.get(0, "/api/v1/devices?limit=2&cursor="+url.QueryEscape(cursor), key, &page); err != nil {
				return nil, err
			}
			for _, d := range page.Items {
				p := fmt.Sprintf("%s devices[%s]", ws, unp(d.ID))
				if listed[d.ID] {
					o.v[p] = "listed twice"
					continue
				}
				listed[d.ID] = true
				o.v[p] = "listed"
				o.v[p+".name"], o.v[p+".os"] = d.Name, d.OS
				o.v[p+".online"] = strconv.FormatBool(d.Online)
				o.v[p+".last_seen"] = relTime(r.base, d.LastSeen)
			}
			if page.Next == nil {
				break
			}
			cursor = *page.Next
		}
		// Every device of the history, here or not.
		for _, e := range r.c.Events {
			id := r.prefix + e.Device
			p := fmt.Sprintf("%s device %s", ws, e.Device)
			if _, done := o.v[p]; done {
				continue
			}
			var d apiDevice
			code, err := h.get(0, "/api/v1/devices/"+id, key, &d)
			if err != nil {
				return nil, err
			}
			if code == 404 {
				o.v[p] = "404"
				continue
			}
			o.v[p] = "200"
			o.v[p+".name"], o.v[p+".os"] = d.Name, d.OS
			o.v[p+".online"] = strconv.FormatBool(d.Online)
			o.v[p+".last_seen"] = relTime(r.base, d.LastSeen)
			o.v[p+".workspace_id"] = unp(d.WorkspaceID)
			o.v[p+".user_id"] = "null"
			if d.UserID != nil {
				o.v[p+".user_id"] = *d.UserID
			}
		}
		groups := map[string][]string{}
		prevAt := ""
		for cursor := ""; ; {
			var page struct {
				Items []apiSession `json:"items"`
				Next  *string      `json:"next_cursor"`
			}
			if _, err := h.get(0, "/api/v1/sessions?limit=3&cursor="+url.QueryEscape(cursor), key, &page); err != nil {
				return nil, err
			}
			for _, s := range page.Items {
				g := fmt.Sprintf("%s sessions[%s@%s]", ws, unp(s.DeviceID), relTime(r.base, s.At))
				if prevAt != "" && s.At > prevAt {
					o.v[ws+" sessions order"] = fmt.Sprintf("at %s listed after %s", s.At, prevAt)
				}
				prevAt = s.At
				if s.Status == fleet.StatusLive {
					groups[g] = append(groups[g], "live")
					live = append(live, liveItem{g, s.At, s.DurationSec})
					continue
				}
				groups[g] = append(groups[g], fmt.Sprintf("%s/%d", s.Status, s.DurationSec))
			}
			if page.Next == nil {
				break
			}
			cursor = *page.Next
		}
		for g, xs := range groups {
			sort.Strings(xs)
			o.v[g] = strings.Join(xs, " ")
		}
		var u apiUsage
		if _, err := h.get(0, "/api/v1/usage", key, &u); err != nil {
			return nil, err
		}
		from, err1 := time.Parse(time.RFC3339Nano, u.From)
		to, err2 := time.Parse(time.RFC3339Nano, u.To)
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("usage echoed from %q to %q", u.From, u.To)
		}
		o.month[ws] = [2]int64{from.UnixMilli(), to.UnixMilli()}
		usageView(o.v, ws+" usage[month]", u.SessionSeconds, u.SessionMinutes, u.ActiveDevices, u.Devices)
		for _, p := range r.c.Periods {
			q := "?from=" + url.QueryEscape(time.UnixMilli(r.base+p.From).UTC().Format(time.RFC3339Nano)) +
				"&to=" + url.QueryEscape(time.UnixMilli(r.base+p.To).UTC().Format(time.RFC3339Nano))
			var u apiUsage
			if _, err := h.get(0, "/api/v1/usage"+q, key, &u); err != nil {
				return nil, err
			}
			usageView(o.v, ws+" usage"+periodLabel(r.base, p), u.SessionSeconds, u.SessionMinutes, u.ActiveDevices, u.Devices)
		}
	}
	t1 := time.Now()
	if err := h.scrape(r, o.v); err != nil {
		return nil, err
	}
	h.tScrape.Add(int64(time.Since(t1)))
	h.tREST.Add(int64(t1.Sub(time.UnixMilli(o.t0))))
	o.t1 = time.Now().UnixMilli()
	// A live session's elapsed duration lies between the clock before and
	// after the reads, from its start's second.
	for _, l := range live {
		at, _ := time.Parse(time.RFC3339, l.at)
		lo := (o.t0 - at.UnixMilli() - 999) / 1000
		hi := (o.t1 - at.UnixMilli()) / 1000
		if l.dur < max(lo, 0) || l.dur > hi {
			o.v[l.path+" live duration_sec"] = fmt.Sprintf("%d, outside [%d, %d]", l.dur, max(lo, 0), hi)
		}
	}
	return o, nil
}

func usageView(v view, p string, secs, mins, active, devices int64) {
	v[p+".session_seconds"] = strconv.FormatInt(secs, 10)
	v[p+".session_minutes"] = strconv.FormatInt(mins, 10)
	v[p+".active_devices"] = strconv.FormatInt(active, 10)
	v[p+".devices"] = strconv.FormatInt(devices, 10)
}

// scrape reads the fleet_* series of the run's workspaces from /metrics.
// Absent series count as zeros.
func (h *convHarness) scrape(r *convRun, v view) error {
	for _, ws := range convWorkspaces {
		metricsView(v, ws, model.Series{})
	}
	resp, err := h.client.Get(h.replicas[1].base + "/metrics")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return fmt.Errorf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, "fleet_") {
			continue
		}
		name, rest, ok := strings.Cut(line, "{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return fmt.Errorf("/metrics line %q", line)
		}
		var ws, status string
		for _, l := range strings.Split(labels, ",") {
			k, val, _ := strings.Cut(l, "=")
			val = strings.Trim(val, `"`)
			switch k {
			case "workspace":
				ws = val
			case "status":
				status = val
			}
		}
		ws, ok = strings.CutPrefix(ws, r.prefix)
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return fmt.Errorf("/metrics line %q", line)
		}
		p := fmt.Sprintf("metrics %s{%s}", name, ws)
		if status != "" {
			p = fmt.Sprintf("metrics %s{%s,%s}", name, ws, status)
		}
		v[p] = strconv.FormatInt(int64(f), 10)
	}
	return nil
}

func metricsView(v view, ws string, s model.Series) {
	v[fmt.Sprintf("metrics fleet_devices{%s}", ws)] = strconv.FormatInt(s.Devices, 10)
	v[fmt.Sprintf("metrics fleet_devices_online{%s}", ws)] = strconv.FormatInt(s.Online, 10)
	v[fmt.Sprintf("metrics fleet_sessions_live{%s}", ws)] = strconv.FormatInt(s.Live, 10)
	v[fmt.Sprintf("metrics fleet_session_seconds_total{%s}", ws)] = strconv.FormatInt(s.SessionSeconds, 10)
	for _, st := range fleet.StatusLabels {
		v[fmt.Sprintf("metrics fleet_sessions_ended_total{%s,%s}", ws, st)] = strconv.FormatInt(s.Ended[st], 10)
	}
}

// expect renders the model's state of the run as observe reads it.
func expect(r *convRun, o *observed) view {
	evs := make([]fleet.Event, len(r.c.Events))
	for i, e := range r.c.Events {
		evs[i] = e.event(r.prefix, r.base)
	}
	st := model.Run(evs, o.t0, model.Config{LiveBound: convLiveBound})
	v := view{}
	unp := func(id string) string { return strings.TrimPrefix(id, r.prefix) }
	for _, ws := range convWorkspaces {
		full := r.prefix + ws
		for _, d := range st.Devices {
			if d.Workspace != full {
				continue
			}
			p := fmt.Sprintf("%s devices[%s]", ws, unp(d.ID))
			v[p] = "listed"
			v[p+".name"], v[p+".os"] = d.Name, d.OS
			v[p+".online"] = strconv.FormatBool(d.Online)
			v[p+".last_seen"] = rel(r.base, d.LastSeen)
		}
		for _, e := range r.c.Events {
			p := fmt.Sprintf("%s device %s", ws, e.Device)
			d, ok := st.Devices[r.prefix+e.Device]
			if !ok || d.Workspace != full {
				v[p] = "404"
				continue
			}
			v[p] = "200"
			v[p+".name"], v[p+".os"] = d.Name, d.OS
			v[p+".online"] = strconv.FormatBool(d.Online)
			v[p+".last_seen"] = rel(r.base, d.LastSeen)
			v[p+".workspace_id"] = ws
			v[p+".user_id"] = "null"
			if d.UserID != "" {
				v[p+".user_id"] = d.UserID
			}
		}
		groups := map[string][]string{}
		for _, s := range st.Sessions {
			if s.Workspace != full {
				continue
			}
			g := fmt.Sprintf("%s sessions[%s@%s]", ws, unp(s.Device), rel(r.base, s.At))
			if s.Status == fleet.StatusLive {
				groups[g] = append(groups[g], "live")
				continue
			}
			groups[g] = append(groups[g], fmt.Sprintf("%s/%d", s.Status, s.DurationSec))
		}
		for g, xs := range groups {
			sort.Strings(xs)
			v[g] = strings.Join(xs, " ")
		}
		m := o.month[ws]
		u := st.Usage(full, m[0], m[1])
		usageView(v, ws+" usage[month]", u.SessionSeconds, u.SessionMinutes(), u.ActiveDevices, u.Devices)
		for _, p := range r.c.Periods {
			u := st.Usage(full, r.base+p.From, r.base+p.To)
			usageView(v, ws+" usage"+periodLabel(r.base, p), u.SessionSeconds, u.SessionMinutes(), u.ActiveDevices, u.Devices)
		}
		metricsView(v, ws, st.Fleet[full])
	}
	return v
}

// check delivers the case and compares the state with the model's. It
// returns the differing fields (nil when the state converged) and, with
// them, a report of the failure.
func (h *convHarness) check(c convCase) (diffs []string, report string, err error) {
	r, err := h.newRun(c)
	if err != nil {
		return nil, "", err
	}
	t0 := time.Now()
	if err := h.deliver(r); err != nil {
		return nil, "", err
	}
	h.tDeliver.Add(int64(time.Since(t0)))
	diffs, report, _, err = h.compare(r)
	return diffs, report, err
}

// compare reads the run's state and compares it with the model's; it also
// returns what it read.
func (h *convHarness) compare(r *convRun) (diffs []string, report string, got view, err error) {
	o, err := h.observe(r)
	if err != nil {
		return nil, "", nil, err
	}
	if diffs = diff(o.v, expect(r, o)); len(diffs) == 0 {
		return nil, "", o.v, nil
	}
	return diffs, r.report(diffs), o.v, nil
}

// report prints a failure: the history as sent, the delivery, the fields.
func (r *convRun) report(diffs []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "state differs from the model after delivery %q (prefix %s, base %s = now-2h)\n",
		r.c.Delivery.Name, r.prefix, time.UnixMilli(r.base).UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "first difference: %s\n", diffs[0])
	b.WriteString("history (webhook JSON as sent; batches index it from 0):\n[\n")
	for i, w := range r.wire {
		sep := ","
		if i == len(r.wire)-1 {
			sep = ""
		}
		fmt.Fprintf(&b, "  %s%s\n", w, sep)
	}
	b.WriteString("]\n")
	mode := "sequential"
	if r.c.Delivery.Concurrent {
		mode = "concurrent (each replica's batches in order, both replicas at once)"
	}
	fmt.Fprintf(&b, "delivery: %s, %s:\n", r.c.Delivery.Name, mode)
	for _, bt := range r.c.Delivery.Batches {
		fmt.Fprintf(&b, "  step %d, replica %d: %v\n", bt.Step, bt.Replica, bt.Events)
	}
	fmt.Fprintf(&b, "all %d differences:\n", len(diffs))
	for _, d := range diffs {
		fmt.Fprintf(&b, "  %s\n", d)
	}
	return b.String()
}

// convChecks is the number of histories: FLEETD_MODEL_N, default 200.
func convChecks(t *testing.T) int {
	t.Helper()
	v := os.Getenv("FLEETD_MODEL_N")
	if v == "" {
		return 200
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("FLEETD_MODEL_N=%q: want a positive number of histories", v)
	}
	return n
}

// setRapidFlag sets a rapid flag unless the command line set it.
func setRapidFlag(t *testing.T, name, value string) {
	t.Helper()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	if !set {
		if err := flag.Set(name, value); err != nil {
			t.Fatal(err)
		}
	}
}

const convCaseDir = "testdata/convergence"

// saveCase writes a failing case under testdata/convergence (named by its
// content, so the same failure found twice is one file) and returns the path.
func saveCase(c convCase) (string, error) {
	b, err := marshalCase(c)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	p := filepath.Join(convCaseDir, hex.EncodeToString(sum[:6])+".json")
	if err := os.MkdirAll(convCaseDir, 0o755); err != nil {
		return "", err
	}
	return p, os.WriteFile(p, b, 0o644)
}

// marshalCase writes a case for people to read: one event, one batch, one
// period a line.
func marshalCase(c convCase) ([]byte, error) {
	var b bytes.Buffer
	line := func(v any) error {
		j, err := json.Marshal(v)
		b.Write(j)
		return err
	}
	b.WriteString("{\n\"found\": ")
	line(c.Found)
	b.WriteString(",\n\"events\": [\n")
	for i, e := range c.Events {
		b.WriteString("  ")
		if err := line(e); err != nil {
			return nil, err
		}
		if i < len(c.Events)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	fmt.Fprintf(&b, "],\n\"delivery\": {\"name\": %q, \"concurrent\": %v, \"batches\": [\n", c.Delivery.Name, c.Delivery.Concurrent)
	for i, bt := range c.Delivery.Batches {
		b.WriteString("  ")
		line(bt)
		if i < len(c.Delivery.Batches)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]},\n\"periods\": ")
	line(c.Periods)
	b.WriteString("\n}\n")
	var check convCase
	if err := json.Unmarshal(b.Bytes(), &check); err != nil {
		return nil, fmt.Errorf("case file: %v\n%s", err, b.Bytes())
	}
	return b.Bytes(), nil
}

// TestConvergence is the property test of SPEC §3 "Convergence".
//
// FLEETD_MODEL_N sets the number of histories (default 200; `make model
// N=5000`). Two knobs help to work through a list of divergences:
// FLEETD_MODEL_SURVEY=1 goes on after a divergence and ends with a table of
// the kinds of differences found, with the smallest history of each;
// FLEETD_MODEL_FOCUS=TEXT fails (and shrinks) only on a divergence with a
// difference whose kind contains TEXT (e.g. "sessions[]"), passing the others.
func TestConvergence(t *testing.T) {
	n := convChecks(t)
	setRapidFlag(t, "rapid.checks", strconv.Itoa(n))
	setRapidFlag(t, "rapid.nofailfile", "true") // failures go to testdata/convergence
	survey := os.Getenv("FLEETD_MODEL_SURVEY") == "1"
	focus := os.Getenv("FLEETD_MODEL_FOCUS")
	h := startConvHarness(t)
	start := time.Now()
	var last *convCase // the latest failing case: after shrinking, the smallest
	type kindSeen struct {
		n      int
		report string
		size   int
	}
	kinds := map[string]*kindSeen{}
	histories := 0
	ok := t.Run("histories", func(t *testing.T) {
		rapid.Check(t, func(rt *rapid.T) {
			evs := genHistory(rt)
			periods := genPeriods(rt)
			a := inOrder(rt, evs)
			b := shuffled(rt, evs)
			histories++
			for _, d := range []convDelivery{a, b} {
				c := convCase{Events: evs, Delivery: d, Periods: periods}
				diffs, report, err := h.check(c)
				if err != nil {
					rt.Fatalf("delivery %q: %v", d.Name, err)
				}
				if diffs == nil {
					continue
				}
				if c.Delivery.Concurrent {
					// A divergence of a concurrent delivery is shown
					// by the same batches sent one after the other when
					// it can be: that failure reproduces, so rapid can
					// shrink it (a flaky one stops the shrinking).
					seq := c
					seq.Delivery.Concurrent = false
					d2, r2, err := h.check(seq)
					if err != nil {
						rt.Fatalf("delivery %q: %v", d.Name, err)
					}
					if d2 != nil {
						c, diffs, report = seq, d2, r2
					}
				}
				first := diffs[0]
				if focus != "" {
					first = ""
					for _, x := range diffs {
						if strings.Contains(fieldKind(x), focus) {
							first = x
							break
						}
					}
					if first == "" {
						continue
					}
				}
				kind := fmt.Sprintf("delivery %q: %s differs", d.Name, fieldKind(first))
				if survey {
					k := kinds[kind]
					if k == nil {
						k = &kindSeen{}
						kinds[kind] = k
					}
					k.n++
					if k.report == "" || len(c.Events) < k.size {
						k.report, k.size = report, len(c.Events)
					}
					continue
				}
				c.Found = first
				last = &c
				rt.Log(report)
				// rapid shrinks while the failure stays the same, as told
				// by this message: the kind of the differing field.
				rt.Fatal(kind)
			}
		})
	})
	t.Logf("%d histories (%d deliveries, %d events, %d webhook requests) on %s in %v (delivering %v, REST reads %v, scrapes %v)",
		histories, h.deliveries.Load(), h.events.Load(), h.requests.Load(), backendName(), time.Since(start).Round(time.Millisecond),
		time.Duration(h.tDeliver.Load()).Round(time.Millisecond), time.Duration(h.tREST.Load()).Round(time.Millisecond),
		time.Duration(h.tScrape.Load()).Round(time.Millisecond))
	if len(kinds) > 0 {
		names := make([]string, 0, len(kinds))
		for k := range kinds {
			names = append(names, k)
		}
		sort.Slice(names, func(i, j int) bool { return kinds[names[i]].n > kinds[names[j]].n })
		var b strings.Builder
		for _, k := range names {
			fmt.Fprintf(&b, "%5d  %s\n", kinds[k].n, k)
		}
		for _, k := range names {
			fmt.Fprintf(&b, "\n--- %s: smallest history (%d events)\n%s", k, kinds[k].size, kinds[k].report)
		}
		t.Errorf("survey: divergences by kind of the first differing field:\n%s", b.String())
	}
	if !ok && last != nil {
		last.Found += " (found on " + backendName() + ")"
		p, err := saveCase(*last)
		if err != nil {
			t.Fatalf("saving the failing case: %v", err)
		}
		t.Errorf("the shrunk failing case is saved as cmd/fleetd/%s: commit it, TestConvergenceRegressions replays it", p)
	}
}

// fieldKind generalizes a difference to its field: "w1 devices[d0].name:
// got ..." is "devices[].name".
func fieldKind(d string) string {
	p, _, _ := strings.Cut(d, ": got ")
	if _, rest, ok := strings.Cut(p, " "); ok && !strings.HasPrefix(p, "metrics ") {
		p = rest
	}
	var b strings.Builder
	skip := byte(0)
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case skip != 0 && c == skip:
			skip = 0
			b.WriteByte(c)
		case skip != 0:
		case c == '[':
			skip = ']'
			b.WriteByte(c)
		case c == '{':
			skip = '}'
			b.WriteByte(c)
		case c == ' ' && strings.HasPrefix(p[i:], " d") && strings.HasPrefix(p, "device "):
			b.WriteString(" D")
			for i+1 < len(p) && p[i+1] != '.' {
				i++
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func backendName() string {
	if b := os.Getenv("FLEETD_TEST_BACKEND"); b != "" {
		return b
	}
	return "single"
}

// TestConvergenceRegressions replays every case of testdata/convergence:
// failures the property test found, with the delivery that showed them.
func TestConvergenceRegressions(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(convCaseDir, "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no cases in %s", convCaseDir)
	}
	h := startConvHarness(t)
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var c convCase
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&c); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			diffs, report, err := h.check(c)
			if err != nil {
				t.Fatal(err)
			}
			if diffs != nil {
				t.Fatalf("%s (found: %s)\n%s", f, c.Found, report)
			}
		})
	}
}
