package redisstore

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
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

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/ingest"
	"github.com/fleetd/fleetd/internal/model"
	"pgregory.net/rapid"
)

// The store against the reference model (internal/model), through the
// store's own interface: generated histories delivered in ts order and
// shuffled, in random batches over two stores (replicas) on one backend,
// with extra redeliveries, must read back as the model's state. The
// end-to-end version of this property (over HTTP, two daemons) lives in
// cmd/fleetd; this one is faster and pins a failure to the store.

var modelRun atomic.Int64

// genHistory draws a history over 2-5 devices and 3 workspaces on a grid
// of ts (so that ties happen), every event with its own delivery id.
func genHistory(t *rapid.T, base int64) []fleet.Event {
	nd := rapid.IntRange(2, 5).Draw(t, "devices")
	n := rapid.IntRange(1, 40).Draw(t, "events")
	ts := func() int64 { return base + int64(rapid.IntRange(0, 24).Draw(t, "ts"))*60000 }
	var evs []fleet.Event
	for i := range n {
		d := "d" + strconv.Itoa(rapid.IntRange(0, nd-1).Draw(t, "device"))
		e := fleet.Event{DeviceID: d, TS: ts(), DurationSec: -1, ID: "e" + strconv.Itoa(i)}
		switch rapid.IntRange(0, 9).Draw(t, "kind") {
		case 0, 1:
			e.Type = fleet.EventDeviceRegistered
			e.WorkspaceID = "w" + strconv.Itoa(rapid.IntRange(0, 2).Draw(t, "ws"))
			e.Name = rapid.SampledFrom([]string{"a", "b"}).Draw(t, "name")
			e.OS = rapid.SampledFrom([]string{"Linux", "Windows"}).Draw(t, "os")
			e.UserID = rapid.SampledFrom([]string{"", "u1"}).Draw(t, "user")
		case 2:
			e.Type = fleet.EventDeviceDeleted
		case 3, 4:
			e.Type = fleet.EventOnlineChanged
			e.Online = rapid.Bool().Draw(t, "online")
		case 5:
			e.Type = fleet.EventSecretRotated
			if rapid.Bool().Draw(t, "rotation") {
				e.Type = fleet.EventOnlineChanged
			}
		case 6, 7:
			e.Type = fleet.EventSessionStarted
			e.SessionID = d + "-s" + strconv.Itoa(rapid.IntRange(0, 3).Draw(t, "session"))
		default:
			e.Type = fleet.EventSessionEnded
			e.SessionID = d + "-s" + strconv.Itoa(rapid.IntRange(0, 3).Draw(t, "session"))
			e.Status = rapid.SampledFrom([]string{"success", "failed", "weird,status"}).Draw(t, "status")
			if rapid.Bool().Draw(t, "hasDuration") {
				e.DurationSec = int64(rapid.IntRange(0, 900).Draw(t, "duration"))
			}
		}
		if rapid.IntRange(0, 9).Draw(t, "noID") == 0 {
			e.ID = ""
		}
		evs = append(evs, e)
		// Redeliveries: the same event again, under its id or a new one.
		switch rapid.IntRange(0, 9).Draw(t, "redeliver") {
		case 0:
			evs = append(evs, e)
		case 1:
			r := e
			r.ID = "r" + strconv.Itoa(i)
			evs = append(evs, r)
		}
	}
	return evs
}

// prefixed gives every id of a history a prefix, so that runs on one
// backend never share state.
func prefixed(evs []fleet.Event, p string) []fleet.Event {
	out := slices.Clone(evs)
	for i := range out {
		e := &out[i]
		e.DeviceID = p + e.DeviceID
		if e.WorkspaceID != "" {
			e.WorkspaceID = p + e.WorkspaceID
		}
		if e.SessionID != "" {
			e.SessionID = p + e.SessionID
		}
		if e.ID != "" {
			e.ID = p + e.ID
		}
	}
	return out
}

// picker makes the choices of a delivery: rapid's draws in the property,
// a seeded generator in the regression cases.
type picker interface {
	pick(lo, hi int, label string) int
}

type rapidPicker struct{ t *rapid.T }

func (p rapidPicker) pick(lo, hi int, label string) int {
	return rapid.IntRange(lo, hi).Draw(p.t, label)
}

type seededPicker struct{ r *rand.Rand }

func (p seededPicker) pick(lo, hi int, _ string) int { return lo + p.r.IntN(hi-lo+1) }

// replayPicker makes the choices of a failing delivery again.
type replayPicker struct{ picks []int }

func (p *replayPicker) pick(lo, hi int, _ string) int {
	if len(p.picks) == 0 {
		return lo
	}
	v := p.picks[0]
	p.picks = p.picks[1:]
	return min(max(v, lo), hi)
}

// deliver sends evs in batches of random sizes to random replicas, with
// random extra redeliveries; shuffled when shuffle; with every replica
// applying its batches at the same time as the others when concurrent.
func deliver(p picker, replicas []*Store, evs []fleet.Event, shuffle, concurrent bool, label string) error {
	order := slices.Clone(evs)
	if shuffle {
		for i := len(order) - 1; i > 0; i-- {
			j := p.pick(0, i, label+"shuffle")
			order[i], order[j] = order[j], order[i]
		}
	} else {
		sort.SliceStable(order, func(i, j int) bool { return order[i].TS < order[j].TS })
	}
	streams := make([][][]fleet.Event, len(replicas))
	// With a small Config.ReplayStep (TestStoreMatchesModelReplayingInSteps)
	// the background moves of sessions run between batches too.
	replaying := replicas[0].cfg.ReplayStep < DefaultReplayStep
	for len(order) > 0 {
		n := p.pick(1, len(order), label+"batch")
		batch := slices.Clone(order[:n])
		if p.pick(0, 4, label+"again") == 0 {
			batch = append(batch, batch[p.pick(0, n-1, label+"which")])
		}
		order = order[n:]
		r := p.pick(0, len(replicas)-1, label+"replica")
		if !concurrent {
			if err := replicas[r].Apply(context.Background(), batch, make([]fleet.Result, len(batch))); err != nil {
				return err
			}
			if replaying && p.pick(0, 1, label+"replay") == 0 {
				if err := replicas[p.pick(0, len(replicas)-1, label+"replayer")].ReplayStep(context.Background(), 8); err != nil {
					return err
				}
			}
			continue
		}
		streams[r] = append(streams[r], batch)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(replicas))
	for r, stream := range streams {
		wg.Go(func() {
			for _, batch := range stream {
				if err := replicas[r].Apply(context.Background(), batch, make([]fleet.Result, len(batch))); err != nil {
					errs[r] = err
					return
				}
				if replaying {
					if err := replicas[r].ReplayStep(context.Background(), 8); err != nil {
						errs[r] = err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return drainReplays(replicas[0])
}

// drainReplays runs the background moves of sessions (replay.go) until
// none is left, as RunReplays would.
func drainReplays(s *Store) error {
	for step := 0; ; step++ {
		n, err := s.rdb.ZCard(context.Background(), keyReplays).Result()
		if err != nil || n == 0 {
			return err
		}
		if step == 10000 {
			return fmt.Errorf("%d devices still listed for replay after %d steps", n, step)
		}
		if err := s.ReplayStep(context.Background(), 8); err != nil {
			return err
		}
	}
}

// deliveryModes are the ways every history is delivered.
var deliveryModes = []string{"in ts order", "shuffled", "shuffled, replicas at once"}

// checkHistory delivers evs in every mode (each under a fresh id prefix)
// and returns the first difference from the model, "" for none.
func checkHistory(tb testing.TB, p picker, replicas []*Store, evs []fleet.Event) string {
	base := ms(t0) - 2*3600*1000
	for k, mode := range deliveryModes {
		prefix := fmt.Sprintf("m%d%c-", modelRun.Add(1), "abc"[k])
		pe := prefixed(evs, prefix)
		if err := deliver(p, replicas, pe, k > 0, k > 1, mode); err != nil {
			return fmt.Sprintf("%s: apply: %v\nhistory (ids without the prefix %s):\n%s", mode, err, prefix, historyJSON(evs))
		}
		if diff := differsFromModel(tb, replicas[0], pe, prefix, base-3600*1000); diff != "" {
			return fmt.Sprintf("%s: %s\nhistory (ids without the prefix %s):\n%s", mode, diff, prefix, historyJSON(evs))
		}
	}
	return ""
}

// differsFromModel reads the state of workspaces prefix+w0..w2 through s
// and returns the first difference from the model of events evs, "" for
// none; usage is read over [from, now+1h).
func differsFromModel(tb testing.TB, s *Store, evs []fleet.Event, prefix string, from int64) string {
	want := model.Run(evs, ms(t0), model.Config{LiveBound: s.cfg.LiveSessionBound})
	wss := []string{prefix + "w0", prefix + "w1", prefix + "w2"}
	to := ms(t0) + 3600*1000
	gd, gs, gf, gu := observed(tb, s, wss, from, to)
	wd, ws, wf, wu := expected(want, wss, from, to)
	for _, c := range []struct {
		what      string
		got, want any
	}{{"devices", gd, wd}, {"sessions", gs, ws}, {"fleet series", gf, wf}, {"usage", gu, wu}} {
		if diff := firstDifference(c.got, c.want); diff != "" {
			return c.what + " differ: " + diff
		}
	}
	for _, ws := range wss {
		if diff := filtersDiffer(tb, s, ws); diff != "" {
			return "filtered listings differ: " + diff
		}
		if diff := deviceFiltersDiffer(tb, s, ws); diff != "" {
			return "filtered listings differ: " + diff
		}
	}
	return ""
}

// observed is the state read back through the store's reads, in the
// model's terms.
func observed(tb testing.TB, s *Store, wss []string, from, to int64) (map[string]model.Device, map[string][]string, map[string]model.Series, map[string]fleet.Usage) {
	ctx := context.Background()
	devs := map[string]model.Device{}
	sess := map[string][]string{}
	series := map[string]model.Series{}
	usage := map[string]fleet.Usage{}
	stats, err := s.Stats(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for _, ws := range wss {
		for cursor := ""; ; {
			p, err := s.ListDevices(ctx, ws, fleet.DeviceFilter{}, cursor, 7)
			if err != nil {
				tb.Fatal(err)
			}
			for _, d := range p.Items {
				if _, dup := devs[d.ID]; dup {
					tb.Fatalf("device %s listed twice (also in %s)", d.ID, ws)
				}
				devs[d.ID] = model.Device{ID: d.ID, Workspace: ws, Name: d.Name, OS: d.OS, UserID: d.UserID, Online: d.Online, LastSeen: d.LastSeen.UnixMilli()}
			}
			if cursor = p.Next; cursor == "" {
				break
			}
		}
		for cursor := ""; ; {
			p, err := s.ListSessions(ctx, ws, fleet.SessionFilter{}, cursor, 5)
			if err != nil {
				tb.Fatal(err)
			}
			for _, x := range p.Items {
				sess[ws] = append(sess[ws], sessionKey(x.ID, x.DeviceID, x.Status, x.DurationSec, x.At.UnixMilli()))
			}
			if cursor = p.Next; cursor == "" {
				break
			}
		}
		sort.Strings(sess[ws])
		u, err := s.Usage(ctx, ws, time.UnixMilli(from).UTC(), time.UnixMilli(to).UTC())
		if err != nil {
			tb.Fatal(err)
		}
		u.From, u.To = time.Time{}, time.Time{}
		usage[ws] = u
	}
	for _, st := range stats {
		if !slices.Contains(wss, st.Workspace) {
			continue
		}
		x := model.Series{Devices: st.Devices, Online: st.Online, Live: st.LiveSessions, SessionSeconds: st.SessionSeconds, Ended: map[string]int64{}}
		for k, v := range st.Ended {
			if v != 0 {
				x.Ended[k] += v
			}
		}
		series[st.Workspace] = x
	}
	return devs, sess, series, usage
}

func sessionKey(id, dev, status string, dur, at int64) string {
	return fmt.Sprintf("%s dev=%s status=%s dur=%d at=%d", id, dev, status, dur, at)
}

// expected is the model's state in the same terms.
func expected(st model.State, wss []string, from, to int64) (map[string]model.Device, map[string][]string, map[string]model.Series, map[string]fleet.Usage) {
	sess := map[string][]string{}
	for _, x := range st.Sessions {
		sess[x.Workspace] = append(sess[x.Workspace], sessionKey(x.ID, x.Device, x.Status, x.DurationSec, x.At))
	}
	for ws := range sess {
		sort.Strings(sess[ws])
	}
	series := map[string]model.Series{}
	for ws, x := range st.Fleet {
		series[ws] = x
	}
	usage := map[string]fleet.Usage{}
	for _, ws := range wss {
		u := st.Usage(ws, from, to)
		u.From, u.To = time.Time{}, time.Time{}
		usage[ws] = u
	}
	return st.Devices, sess, series, usage
}

// firstDifference names the first field where got and want differ.
func firstDifference(got, want any) string {
	g, _ := json.MarshalIndent(got, "", " ")
	w, _ := json.MarshalIndent(want, "", " ")
	if string(g) == string(w) {
		return ""
	}
	gl, wl := strings.Split(string(g), "\n"), strings.Split(string(w), "\n")
	for i := 0; i < len(gl) || i < len(wl); i++ {
		var a, b string
		if i < len(gl) {
			a = gl[i]
		}
		if i < len(wl) {
			b = wl[i]
		}
		if a != b {
			return fmt.Sprintf("line %d: got %s, want %s\ngot:\n%s\nwant:\n%s", i+1, strings.TrimSpace(a), strings.TrimSpace(b), g, w)
		}
	}
	return ""
}

// historyJSON prints events as webhook JSON, one a line.
func historyJSON(evs []fleet.Event) string {
	var b strings.Builder
	for _, e := range evs {
		m := map[string]any{"type": e.Type.String(), "qdDeviceId": e.DeviceID, "ts": e.TS}
		if e.ID != "" {
			m["id"] = e.ID
		}
		switch e.Type {
		case fleet.EventDeviceRegistered:
			m["workspaceId"], m["name"], m["os"] = e.WorkspaceID, e.Name, e.OS
			if e.UserID != "" {
				m["userId"] = e.UserID
			}
		case fleet.EventOnlineChanged:
			m["online"] = e.Online
		case fleet.EventSessionStarted:
			m["sessionId"] = e.SessionID
		case fleet.EventSessionEnded:
			m["sessionId"], m["status"] = e.SessionID, e.Status
			if e.DurationSec >= 0 {
				m["durationSec"] = e.DurationSec
			}
		}
		j, _ := json.Marshal(m)
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestStoreMatchesModel(t *testing.T) {
	b := newBackend(t)
	replicas := []*Store{b.open(t), b.open(t)}
	// -rapid.checks (default 100) or FLEETD_MODEL_N sets the number of
	// histories.
	if v, err := strconv.Atoi(os.Getenv("FLEETD_MODEL_N")); err == nil && v > 0 {
		flag.Set("rapid.checks", strconv.Itoa(v))
	}
	rapid.Check(t, func(rt *rapid.T) {
		if diff := checkHistory(t, rapidPicker{rt}, replicas, genHistory(rt, ms(t0)-2*3600*1000)); diff != "" {
			rt.Fatal(diff)
		}
	})
}

// TestStoreConvergenceRegressions replays the histories the property found
// (testdata/convergence), each delivered in every mode under 20 seeds, and
// with the choices of the delivery that failed ("picks", "runs" times)
// when the case has them.
func TestStoreConvergenceRegressions(t *testing.T) {
	b := newBackend(t)
	replicas := []*Store{b.open(t), b.open(t)}
	files, _ := filepath.Glob("testdata/convergence/*.json")
	if len(files) == 0 {
		t.Fatal("no regression cases in testdata/convergence")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".json"), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var c struct {
				Events json.RawMessage `json:"events"`
				Picks  []int           `json:"picks"`
				Runs   int             `json:"runs"`
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				t.Fatal(err)
			}
			evs, err := ingest.Decode(c.Events, nil, t0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for seed := range uint64(20) {
				if diff := checkHistory(t, seededPicker{rand.New(rand.NewPCG(seed, 1))}, replicas, evs); diff != "" {
					t.Fatalf("seed %d: %s", seed, diff)
				}
			}
			for run := range c.Runs {
				if diff := checkHistory(t, &replayPicker{slices.Clone(c.Picks)}, replicas, evs); diff != "" {
					t.Fatalf("replayed delivery, run %d: %s", run, diff)
				}
			}
		})
	}
}

// A crash after any step of a placement (or of the session moves it
// causes) heals when the placement is redelivered: the state then equals
// the model's. Each case delivers its history but the last event, then
// the last event with a crash after the step, then the last event again.
func TestCrashBetweenStepsHeals(t *testing.T) {
	b := newBackend(t)
	s := b.open(t)
	at := func(min int) int64 { return ms(t0) - 2*3600*1000 + int64(min)*60000 }
	regAt := func(d, ws string, m int) fleet.Event {
		return fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: d, WorkspaceID: ws, Name: "n", OS: "Linux", TS: at(m), DurationSec: -1}
	}
	cases := map[string][]fleet.Event{
		// A move with presence, an ended and a live session in the old home.
		"move": {regAt("d", "w0", 0), {Type: fleet.EventOnlineChanged, DeviceID: "d", Online: true, TS: at(1), DurationSec: -1},
			{Type: fleet.EventSessionStarted, DeviceID: "d", SessionID: "s1", TS: at(2), DurationSec: -1},
			{Type: fleet.EventSessionEnded, DeviceID: "d", SessionID: "s1", Status: "success", TS: at(5), DurationSec: -1},
			{Type: fleet.EventSessionStarted, DeviceID: "d", SessionID: "s2", TS: at(20), DurationSec: -1},
			regAt("d", "w1", 10)},
		// A registration older than sessions already homed: they move.
		"late registration": {regAt("d", "w0", 30), {Type: fleet.EventSessionStarted, DeviceID: "d", SessionID: "s1", TS: at(10), DurationSec: -1},
			{Type: fleet.EventSessionEnded, DeviceID: "d", SessionID: "s1", Status: "failed", TS: at(12), DurationSec: 60},
			{Type: fleet.EventSessionStarted, DeviceID: "d", SessionID: "s2", TS: at(35), DurationSec: -1},
			regAt("d", "w1", 5)},
		// Kept events of a device that registers at last.
		"kept events": {{Type: fleet.EventOnlineChanged, DeviceID: "d", Online: true, TS: at(1), DurationSec: -1},
			{Type: fleet.EventSessionEnded, DeviceID: "d", SessionID: "s1", Status: "success", TS: at(5), DurationSec: 120},
			regAt("d", "w2", 0)},
		// A delete with a live session: its end waits for no one.
		"delete": {regAt("d", "w0", 0), {Type: fleet.EventSessionStarted, DeviceID: "d", SessionID: "s1", TS: at(2), DurationSec: -1},
			{Type: fleet.EventSessionStarted, DeviceID: "d", SessionID: "s2", TS: at(12), DurationSec: -1},
			{Type: fleet.EventDeviceDeleted, DeviceID: "d", TS: at(10), DurationSec: -1}},
	}
	crash := errors.New("crash")
	n := 0
	for name, evs := range cases {
		for _, step := range []string{"placed", "synced", "adopted", "tombstoned", "merged"} {
			t.Run(name+"/after "+step, func(t *testing.T) {
				n++
				p := fmt.Sprintf("crash%d-", n)
				pe := prefixed(evs, p)
				last := pe[len(pe)-1]
				if err := s.Apply(context.Background(), pe[:len(pe)-1], make([]fleet.Result, len(pe)-1)); err != nil {
					t.Fatal(err)
				}
				crashed := false
				s.hookStep = func(st string) error {
					if st == step && !crashed {
						crashed = true
						return crash
					}
					return nil
				}
				err := s.Apply(context.Background(), []fleet.Event{last}, make([]fleet.Result, 1))
				s.hookStep = nil
				if crashed != errors.Is(err, crash) {
					t.Fatalf("apply: %v (crashed %v)", err, crashed)
				}
				if !crashed {
					t.Skipf("this placement has no step %q", step)
				}
				if err := s.Apply(context.Background(), []fleet.Event{last}, make([]fleet.Result, 1)); err != nil {
					t.Fatal(err)
				}
				if diff := differsFromModel(t, s, pe, p, at(-60)); diff != "" {
					t.Fatalf("after the redelivery, %s", diff)
				}
			})
		}
	}
}

// TestStoreMatchesModelReplayingInSteps is TestStoreMatchesModel with
// Config.ReplayStep = 1: a placement moves one session home within its
// commit and the rest in background steps, which run between the batches
// (and, with replicas at once, alongside them). Its live-session bound
// falls amid the history's times (between two of its minutes), so that
// sessions without an end are live or abandoned.
func TestStoreMatchesModelReplayingInSteps(t *testing.T) {
	b := newBackend(t)
	b.cfg.ReplayStep = 1
	b.cfg.LiveSessionBound = 108*time.Minute + 30*time.Second
	replicas := []*Store{b.open(t), b.open(t)}
	rapid.Check(t, func(rt *rapid.T) {
		if diff := checkHistory(t, rapidPicker{rt}, replicas, genHistory(rt, ms(t0)-2*3600*1000)); diff != "" {
			rt.Fatal(diff)
		}
	})
}

// TestStoreMatchesModelByEval is TestStoreMatchesModel with the scripts run
// by EVALSHA (as on miniredis, the embedded mode, and Redis before 7)
// instead of as the Functions library.
func TestStoreMatchesModelByEval(t *testing.T) {
	b := newBackend(t)
	b.cfg.NoFunctions = true
	replicas := []*Store{b.open(t), b.open(t)}
	if replicas[0].functions.Load() {
		t.Fatal("the store runs Functions though NoFunctions is set")
	}
	rapid.Check(t, func(rt *rapid.T) {
		if diff := checkHistory(t, rapidPicker{rt}, replicas, genHistory(rt, ms(t0)-2*3600*1000)); diff != "" {
			rt.Fatal(diff)
		}
	})
}
