package redisstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// t0 is a fixed "now" for tests: 2026-06-28T07:30:00Z.
var t0 = time.Date(2026, 6, 28, 7, 30, 0, 0, time.UTC)

func ms(t time.Time) int64 { return t.UnixMilli() }

// backend is where a test's store lives: one redis-server, or a Redis
// Cluster when FLEETD_TEST_BACKEND=cluster (make test runs both).
type backend struct {
	cfg Config
	srv *redistest.Server // nil on a cluster
}

func newBackend(tb testing.TB) backend {
	tb.Helper()
	cfg := Config{Timeout: 2 * time.Second, Retention: 10 * 365 * 24 * time.Hour}
	switch os.Getenv("FLEETD_TEST_BACKEND") {
	case "cluster":
		cfg.Cluster = redistest.StartCluster(tb).Addrs()
		return backend{cfg: cfg}
	case "", "single":
		srv := redistest.Start(tb)
		cfg.URL = srv.URL
		return backend{cfg: cfg, srv: srv}
	default:
		tb.Fatalf("FLEETD_TEST_BACKEND must be single or cluster")
		return backend{}
	}
}

func (b backend) open(tb testing.TB) *Store {
	tb.Helper()
	s, err := Open(context.Background(), b.cfg)
	if err != nil {
		tb.Fatalf("open: %v", err)
	}
	s.SetClock(func() time.Time { return t0 })
	tb.Cleanup(func() { s.Close() })
	return s
}

// MustOpen starts a backend and opens a store on it with a fixed clock.
func MustOpen(tb testing.TB) (*Store, backend) {
	tb.Helper()
	b := newBackend(tb)
	return b.open(tb), b
}

// MustOpenSingle is MustOpen on one redis-server, for fault tests that
// stop or restart it.
func MustOpenSingle(tb testing.TB) (*Store, *redistest.Server) {
	tb.Helper()
	srv := redistest.Start(tb)
	b := backend{cfg: Config{URL: srv.URL, Timeout: 2 * time.Second}, srv: srv}
	return b.open(tb), srv
}

// keysMatching runs KEYS on every master.
func keysMatching(tb testing.TB, s *Store, pattern string) []string {
	tb.Helper()
	var mu sync.Mutex
	var out []string
	each := func(ctx context.Context, c *redis.Client) error {
		k, err := c.Keys(ctx, pattern).Result()
		mu.Lock()
		out = append(out, k...)
		mu.Unlock()
		return err
	}
	ctx := context.Background()
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, each)
	} else {
		err = each(ctx, s.rdb.(*redis.Client))
	}
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// apply applies events and returns their results, failing on error.
func apply(tb testing.TB, s *Store, events ...fleet.Event) []fleet.Result {
	tb.Helper()
	res := make([]fleet.Result, len(events))
	for i := range events {
		if events[i].DurationSec == 0 && events[i].Type != fleet.EventSessionEnded {
			events[i].DurationSec = -1
		}
		if events[i].TS == 0 {
			events[i].TS = ms(t0)
		}
	}
	if err := s.Apply(context.Background(), events, res); err != nil {
		tb.Fatalf("apply: %v", err)
	}
	return res
}

func reg(dev, ws string, ts time.Time) fleet.Event {
	return fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: dev, WorkspaceID: ws, Name: "n-" + dev, OS: "Linux", TS: ms(ts)}
}

func online(dev string, on bool, ts time.Time, id string) fleet.Event {
	return fleet.Event{Type: fleet.EventOnlineChanged, DeviceID: dev, Online: on, TS: ms(ts), ID: id}
}

func started(dev, sid string, ts time.Time) fleet.Event {
	return fleet.Event{Type: fleet.EventSessionStarted, DeviceID: dev, SessionID: sid, TS: ms(ts), DurationSec: -1}
}

func ended(dev, sid, status string, dur int64, ts time.Time) fleet.Event {
	return fleet.Event{Type: fleet.EventSessionEnded, DeviceID: dev, SessionID: sid, Status: status, DurationSec: dur, TS: ms(ts)}
}

func stats(tb testing.TB, s *Store, ws string) fleet.WorkspaceStats {
	tb.Helper()
	all, err := s.Stats(context.Background())
	if err != nil {
		tb.Fatalf("stats: %v", err)
	}
	for _, st := range all {
		if st.Workspace == ws {
			return st
		}
	}
	tb.Fatalf("workspace %s not in stats", ws)
	return fleet.WorkspaceStats{}
}

func device(tb testing.TB, s *Store, ws, id string) fleet.Device {
	tb.Helper()
	d, err := s.Device(context.Background(), ws, id)
	if err != nil {
		tb.Fatalf("device %s/%s: %v", ws, id, err)
	}
	return d
}

func wantResults(tb testing.TB, got []fleet.Result, want ...fleet.Result) {
	tb.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		tb.Fatalf("results = %v, want %v", got, want)
	}
}

func TestRegisterAndOnline(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	wantResults(t, apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)), reg("d2", "acme", t0)), fleet.Accepted, fleet.Accepted)
	if d := device(t, s, "acme", "d1"); d.Online || d.Name != "n-d1" || d.OS != "Linux" || !d.LastSeen.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("new device = %+v, want offline with last_seen = registration ts", d)
	}
	wantResults(t, apply(t, s, online("d1", true, t0, "")), fleet.Accepted)
	st := stats(t, s, "acme")
	if st.Devices != 2 || st.Online != 1 {
		t.Fatalf("stats = %+v, want 2 devices, 1 online", st)
	}
	// A device of another workspace is not found there.
	if _, err := s.Device(ctx, "other", "d1"); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("device in other workspace: err = %v, want not_found", err)
	}
}

func TestDedupeByID(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)))
	wantResults(t, apply(t, s, online("d1", true, t0, "e1"), online("d1", true, t0, "e1")), fleet.Accepted, fleet.Duplicate)
	// A redelivery a day later is still a duplicate (window ≥ 24 h).
	s.SetClock(func() time.Time { return t0.Add(24 * time.Hour) })
	wantResults(t, apply(t, s, online("d1", false, t0.Add(time.Second), "e1")), fleet.Duplicate)
	if d := device(t, s, "acme", "d1"); !d.Online {
		t.Fatal("a duplicate changed the device")
	}
}

// De-duplication over three days with enough ids that the second and
// third days use several buckets (sized from the day before): every
// redelivery within the window is a duplicate, and the buckets stay small
// hashes (listpack), which is what makes an id cost ~20 bytes.
func TestDedupeAcrossDaysAndBuckets(t *testing.T) {
	s, _ := MustOpen(t)
	day := t0.Truncate(24 * time.Hour).Add(time.Hour)
	s.SetClock(func() time.Time { return day })
	apply(t, s, reg("d1", "acme", day.Add(-time.Hour)))
	ts := day
	batch := func(prefix string, n int) []fleet.Event {
		var out []fleet.Event
		for i := range n {
			ts = ts.Add(time.Millisecond)
			out = append(out, online("d1", i%2 == 0, ts, fmt.Sprintf("%s-%d", prefix, i)))
		}
		return out
	}
	want := func(res []fleet.Result, r fleet.Result, what string) {
		t.Helper()
		for i, got := range res {
			if got != r {
				t.Fatalf("%s: event %d is %v, want %v", what, i, got, r)
			}
		}
	}
	want(apply(t, s, batch("a", 600)...), fleet.Accepted, "day 1, new ids")
	s.SetClock(func() time.Time { return day.Add(24 * time.Hour) })
	want(apply(t, s, batch("a", 600)...), fleet.Duplicate, "day 2, day 1's ids again")
	want(apply(t, s, batch("b", 600)...), fleet.Accepted, "day 2, new ids")
	want(apply(t, s, batch("b", 600)...), fleet.Duplicate, "day 2, day 2's ids again")
	s.SetClock(func() time.Time { return day.Add(48 * time.Hour) })
	want(apply(t, s, batch("b", 600)...), fleet.Duplicate, "day 3, day 2's ids again")
	want(apply(t, s, batch("c", 600)...), fleet.Accepted, "day 3, new ids")

	// Day 2 sized its buckets from day 1's 600 ids: 16 buckets of ~38.
	day2 := (day.UnixMilli() / dayMs) + 1
	ctx := context.Background()
	var keys, ids int64
	for k := range 64 {
		key := fmt.Sprintf("%ssn:%d:%d", wsPrefix("acme"), day2, k)
		n, err := s.rdb.HLen(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			continue
		}
		keys++
		ids += n
		if enc, err := s.rdb.ObjectEncoding(ctx, key).Result(); err != nil || enc != "listpack" {
			t.Fatalf("%s is %q (%v), want a listpack", key, enc, err)
		}
		if ttl, err := s.rdb.TTL(ctx, key).Result(); err != nil || ttl <= 0 {
			t.Fatalf("%s has TTL %v (%v), want one", key, ttl, err)
		}
	}
	if keys != 16 || ids != 600 {
		t.Fatalf("day 2: %d ids in %d buckets, want 600 in 16", ids, keys)
	}
}

func TestSessionEndedCountedOnce(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)))
	e := ended("d1", "s1", "success", 120, t0)
	e.ID = "x1"
	e2 := e
	e2.ID = "x2" // the same session ended, redelivered under a new id
	wantResults(t, apply(t, s, started("d1", "s1", t0.Add(-2*time.Minute)), e, e, e2), fleet.Accepted, fleet.Accepted, fleet.Duplicate, fleet.Duplicate)
	st := stats(t, s, "acme")
	if st.SessionSeconds != 120 || st.Ended["success"] != 1 || st.LiveSessions != 0 {
		t.Fatalf("stats = %+v, want 120 s, 1 ended, 0 live", st)
	}
}

func TestStaleOnlineChangesNothing(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)))
	wantResults(t, apply(t, s, online("d1", true, t0, ""), online("d1", false, t0.Add(-time.Minute), "")), fleet.Accepted, fleet.Stale)
	d := device(t, s, "acme", "d1")
	if !d.Online || !d.LastSeen.Equal(t0) {
		t.Fatalf("device = %+v, want online, last_seen %v", d, t0)
	}
}

func TestLateSessionStartDoesNotMakeLive(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)))
	apply(t, s, ended("d1", "s1", "failed", -1, t0))
	wantResults(t, apply(t, s, started("d1", "s1", t0.Add(-time.Minute))), fleet.Accepted)
	if st := stats(t, s, "acme"); st.LiveSessions != 0 || st.Ended["failed"] != 1 || st.SessionSeconds != 60 {
		t.Fatalf("stats = %+v, want no live session, 1 failed of 60 s (recomputed from the late start)", st)
	}
	page, err := s.ListSessions(context.Background(), "acme", fleet.SessionFilter{}, "", 10)
	if err != nil || len(page.Items) != 1 {
		t.Fatalf("sessions = %+v, %v", page, err)
	}
	if got := page.Items[0]; got.Status != "failed" || !got.At.Equal(t0.Add(-time.Minute)) {
		t.Fatalf("session = %+v, want failed, at = the late start", got)
	}
}

func TestUnknownTypeIgnored(t *testing.T) {
	s, _ := MustOpen(t)
	wantResults(t, apply(t, s, fleet.Event{Type: fleet.EventUnknown}), fleet.Ignored)
}

func TestEventsBeforeRegistrationApplyOnRegister(t *testing.T) {
	s, _ := MustOpen(t)
	wantResults(t, apply(t, s,
		online("d1", true, t0.Add(-30*time.Second), "o1"),
		online("d1", false, t0.Add(-40*time.Second), ""),
		started("d1", "s1", t0.Add(-5*time.Minute)),
		ended("d1", "s1", "success", -1, t0.Add(-time.Minute)),
		online("d1", true, t0, "o1"),
	), fleet.Accepted, fleet.Stale, fleet.Accepted, fleet.Accepted, fleet.Duplicate)
	wantResults(t, apply(t, s, reg("d1", "acme", t0.Add(-time.Hour))), fleet.Accepted)
	d := device(t, s, "acme", "d1")
	if !d.Online || !d.LastSeen.Equal(t0.Add(-30*time.Second)) {
		t.Fatalf("device = %+v, want online (kept event applied), last_seen of the newest event", d)
	}
	if st := stats(t, s, "acme"); st.SessionSeconds != 240 || st.Online != 1 {
		t.Fatalf("stats = %+v, want the kept session's 240 s", st)
	}
	// Kept events are dropped once applied: registering again changes nothing.
	apply(t, s, reg("d1", "acme", t0))
	if st := stats(t, s, "acme"); st.SessionSeconds != 240 {
		t.Fatalf("replayed twice: %+v", st)
	}
	if keys := keysMatching(t, s, "fl:{d:*}:pend:*"); len(keys) != 0 {
		t.Fatalf("kept events left behind: %v", keys)
	}
}

func TestLiveSessionBound(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-48*time.Hour)), started("d1", "old", t0.Add(-25*time.Hour)), started("d1", "new", t0.Add(-time.Minute)))
	if st := stats(t, s, "acme"); st.LiveSessions != 1 {
		t.Fatalf("live = %d, want 1: a session older than the bound (24 h) is not live", st.LiveSessions)
	}
	page, err := s.ListSessions(context.Background(), "acme", fleet.SessionFilter{}, "", 10)
	if err != nil || len(page.Items) != 2 {
		t.Fatalf("sessions = %+v, %v", page, err)
	}
	if page.Items[0].Status != fleet.StatusLive || page.Items[0].DurationSec != 60 || page.Items[1].Status != fleet.StatusAbandoned {
		t.Fatalf("sessions = %+v, want live (60 s) then abandoned", page.Items)
	}
	// A session that was live ages out as time passes.
	s.SetClock(func() time.Time { return t0.Add(24 * time.Hour) })
	if st := stats(t, s, "acme"); st.LiveSessions != 0 {
		t.Fatalf("live = %d after the bound, want 0", st.LiveSessions)
	}
}

func TestMoveBetweenWorkspaces(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", true, t0.Add(-time.Minute), ""),
		started("d1", "s1", t0.Add(-30*time.Minute)), ended("d1", "s1", "success", 60, t0.Add(-29*time.Minute)))
	apply(t, s, reg("d1", "b", t0))
	a, b := stats(t, s, "a"), stats(t, s, "b")
	if a.Devices != 0 || a.Online != 0 || b.Devices != 1 || b.Online != 1 {
		t.Fatalf("after move: a=%+v b=%+v, want the device (online) in b only", a, b)
	}
	if a.SessionSeconds != 60 || b.SessionSeconds != 0 {
		t.Fatalf("session history must stay where it happened: a=%+v b=%+v", a, b)
	}
	// Later events follow the device to b.
	apply(t, s, online("d1", false, t0, ""))
	if b := stats(t, s, "b"); b.Online != 0 {
		t.Fatalf("b = %+v, want offline", b)
	}
}

func TestDeleteThenEventsAreKept(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", true, t0.Add(-time.Minute), ""))
	wantResults(t, apply(t, s, fleet.Event{Type: fleet.EventDeviceDeleted, DeviceID: "d1", TS: ms(t0)}), fleet.Accepted)
	if a := stats(t, s, "a"); a.Devices != 0 || a.Online != 0 {
		t.Fatalf("after delete: %+v", a)
	}
	wantResults(t, apply(t, s, online("d1", true, t0.Add(time.Second), "")), fleet.Accepted)
	if a := stats(t, s, "a"); a.Devices != 0 || a.Online != 0 {
		t.Fatalf("an event after delete resurrected the device: %+v", a)
	}
	apply(t, s, reg("d1", "a", t0.Add(2*time.Second)))
	if a := stats(t, s, "a"); a.Devices != 1 || a.Online != 1 {
		t.Fatalf("re-registered device should take the kept online event: %+v", a)
	}
}

// A placement interrupted after its index step (a crash) heals when it is
// redelivered: the device leaves the workspace, and an event meanwhile
// keeps its effect.
func TestInterruptedPlacementHealsOnRedelivery(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)))
	crash := errors.New("crash")
	s.hookStep = func(step string) error {
		if step == "placed" {
			return crash
		}
		return nil
	}
	del := fleet.Event{Type: fleet.EventDeviceDeleted, DeviceID: "d1", TS: ms(t0.Add(-time.Minute))}
	if err := s.Apply(context.Background(), []fleet.Event{del}, make([]fleet.Result, 1)); !errors.Is(err, crash) {
		t.Fatalf("apply: %v, want the crash", err)
	}
	s.hookStep = nil
	apply(t, s, online("d1", true, t0, ""))
	wantResults(t, apply(t, s, del), fleet.Duplicate)
	if a := stats(t, s, "a"); a.Devices != 0 || a.Online != 0 {
		t.Fatalf("after the redelivered delete: %+v", a)
	}
	apply(t, s, reg("d1", "a", t0.Add(time.Second)))
	if a := stats(t, s, "a"); a.Devices != 1 || a.Online != 1 {
		t.Fatalf("after re-registering: %+v, want the online event kept", a)
	}
}

// Another replica moving a device makes this replica's cache stale: the
// event must still land in the new workspace.
func TestStaleCacheFollowsMove(t *testing.T) {
	s, b := MustOpen(t)
	other := b.open(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", false, t0.Add(-time.Hour), "")) // s caches d1 → a
	apply(t, other, reg("d1", "b", t0.Add(-time.Minute)))
	apply(t, s, online("d1", true, t0, ""))
	if b := stats(t, s, "b"); b.Online != 1 || b.Devices != 1 {
		t.Fatalf("b = %+v, want d1 online there", b)
	}
}

// A replica whose cache still names the old workspace applies an event to
// the old copy while another replica moves the device: the event's
// presence reaches the new workspace instead of being evicted with the copy.
func TestMoveKeepsPresenceFromARacingReplica(t *testing.T) {
	s, b := MustOpen(t)
	other := b.open(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", false, t0.Add(-time.Hour), ""))
	apply(t, other, online("d1", false, t0.Add(-50*time.Minute), "")) // other caches d1 → a
	raced := false
	s.hookStep = func(step string) error {
		if step == "placed" && !raced {
			raced = true
			wantResults(t, apply(t, other, online("d1", true, t0.Add(-time.Second), "")), fleet.Accepted)
		}
		return nil
	}
	apply(t, s, reg("d1", "b", t0.Add(-time.Minute)))
	if !raced {
		t.Fatal("the registration did not move the device")
	}
	if a, b := stats(t, s, "a"), stats(t, s, "b"); a.Devices != 0 || a.Online != 0 || b.Devices != 1 || b.Online != 1 {
		t.Fatalf("a=%+v b=%+v, want d1 online in b only", a, b)
	}
	d, err := s.Device(context.Background(), "b", "d1")
	if err != nil || !d.LastSeen.Equal(t0.Add(-time.Second)) {
		t.Fatalf("device %+v %v, want last seen %v", d, err, t0.Add(-time.Second))
	}
}

func TestRotateSecretTakesDeviceOffline(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", true, t0.Add(-time.Minute), ""))
	rot := t0.Truncate(time.Second)
	if err := s.RotateDeviceSecret(ctx, "a", "d1", []byte{1, 2, 3}, rot); err != nil {
		t.Fatal(err)
	}
	if d := device(t, s, "a", "d1"); d.Online {
		t.Fatal("device online after rotation")
	}
	wantResults(t, apply(t, s, online("d1", true, rot, "")), fleet.Stale)
	wantResults(t, apply(t, s, online("d1", true, rot.Add(time.Millisecond), "")), fleet.Accepted)
	if err := s.RotateDeviceSecret(ctx, "b", "d1", []byte{1}, rot); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("rotate in another workspace: %v", err)
	}
}

func TestUsageAcrossDaysAndMonths(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	jun30 := time.Date(2026, 6, 30, 23, 0, 0, 0, time.UTC)
	jul1 := time.Date(2026, 7, 1, 0, 30, 0, 0, time.UTC)
	apply(t, s, reg("d1", "a", jun30.Add(-48*time.Hour)), reg("d2", "a", jun30.Add(-48*time.Hour)), reg("d3", "a", jun30.Add(-48*time.Hour)),
		ended("d1", "s1", "success", 600, jun30),                                       // June
		ended("d2", "s2", "success", 90, jul1),                                         // July
		ended("d1", "s3", "failed", 30, time.Date(2026, 6, 15, 12, 0, 0, 0, time.UTC)), // June, mid-month
	)
	june := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	july := time.Date(2026, 7, 1, 0, 0, 0, 0, time.UTC)
	aug := time.Date(2026, 8, 1, 0, 0, 0, 0, time.UTC)
	for name, tc := range map[string]struct {
		from, to     time.Time
		secs, active int64
	}{
		"june":             {june, july, 630, 1},
		"july":             {july, aug, 90, 1},
		"both":             {june, aug, 720, 2},
		"partial days":     {jun30.Add(-time.Minute), jul1.Add(time.Minute), 690, 2},
		"within one day":   {jun30.Add(time.Second), jul1, 0, 0},
		"end is exclusive": {june, jun30, 30, 1},
		"start inclusive":  {jun30, jun30.Add(time.Second), 600, 1},
	} {
		t.Run(name, func(t *testing.T) {
			u, err := s.Usage(ctx, "a", tc.from, tc.to)
			if err != nil {
				t.Fatal(err)
			}
			if u.SessionSeconds != tc.secs || u.ActiveDevices != tc.active || u.Devices != 3 {
				t.Fatalf("usage = %+v, want %d s, %d active, 3 devices", u, tc.secs, tc.active)
			}
		})
	}
	// A live session makes its device active in a period that contains now.
	s.SetClock(func() time.Time { return jul1.Add(time.Hour) })
	apply(t, s, started("d3", "live1", jul1.Add(30*time.Minute)))
	if u, _ := s.Usage(ctx, "a", july, aug); u.ActiveDevices != 2 {
		t.Fatalf("active with a live session = %d, want 2", u.ActiveDevices)
	}
	if u, _ := s.Usage(ctx, "a", june, july); u.ActiveDevices != 1 {
		t.Fatalf("a live session must not count in a past period: %d", u.ActiveDevices)
	}
}

func TestListDevicesPaging(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	var evs []fleet.Event
	for i := range 23 {
		evs = append(evs, reg(fmt.Sprintf("d%02d", i), "a", t0))
		if i%3 == 0 {
			evs = append(evs, online(fmt.Sprintf("d%02d", i), true, t0, ""))
		}
	}
	apply(t, s, evs...)
	on, off := true, false
	for name, tc := range map[string]struct {
		f    fleet.DeviceFilter
		want int
	}{"all": {fleet.DeviceFilter{}, 23}, "online": {fleet.DeviceFilter{Online: &on}, 8}, "offline": {fleet.DeviceFilter{Online: &off}, 15},
		"os": {fleet.DeviceFilter{OS: "linux"}, 23}, "other os": {fleet.DeviceFilter{OS: "windows"}, 0}} {
		t.Run(name, func(t *testing.T) {
			seen := map[string]bool{}
			cursor := ""
			for pages := 0; ; pages++ {
				p, err := s.ListDevices(ctx, "a", tc.f, cursor, 5)
				if err != nil {
					t.Fatal(err)
				}
				if p.Next != "" && len(p.Items) != 5 {
					t.Fatalf("short page %d with a next cursor", len(p.Items))
				}
				for _, d := range p.Items {
					if seen[d.ID] {
						t.Fatalf("%s listed twice", d.ID)
					}
					seen[d.ID] = true
					if tc.f.Online != nil && d.Online != *tc.f.Online {
						t.Fatalf("%s online=%v does not match the filter", d.ID, d.Online)
					}
				}
				if cursor = p.Next; cursor == "" {
					break
				}
			}
			if len(seen) != tc.want {
				t.Fatalf("listed %d, want %d", len(seen), tc.want)
			}
		})
	}
	if _, err := s.ListDevices(ctx, "a", fleet.DeviceFilter{}, "!!notbase64", 5); fleet.ErrorCode(err) != fleet.EINVALID {
		t.Fatalf("malformed cursor: %v", err)
	}
}

func TestRedisDownIsUnavailable(t *testing.T) {
	s, srv := MustOpenSingle(t)
	srv.Stop()
	res := make([]fleet.Result, 1)
	start := time.Now()
	err := s.Apply(context.Background(), []fleet.Event{online("d1", true, t0, "")}, res)
	if fleet.ErrorCode(err) != fleet.EUNAVAILABLE {
		t.Fatalf("err = %v, want unavailable", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestScriptsReloadAfterRestart(t *testing.T) {
	s, srv := MustOpenSingle(t)
	apply(t, s, reg("d1", "a", t0))
	srv.Restart(t) // no persistence: scripts and data are gone
	wantResults(t, apply(t, s, reg("d2", "a", t0)), fleet.Accepted)
}

// A filter that matches little is served in bounded script calls; pages
// still come full and every match exactly once.
func TestListingAcrossScanBudget(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	var evs []fleet.Event
	for i := range 2*scanBudget + 500 {
		e := reg(fmt.Sprintf("d%05d", i), "a", t0)
		if i%1000 == 7 {
			e.OS = "Windows"
		}
		evs = append(evs, e)
	}
	apply(t, s, evs...)
	var got []string
	for cursor := ""; ; {
		p, err := s.ListDevices(ctx, "a", fleet.DeviceFilter{OS: "WINDOWS"}, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		if p.Next != "" && len(p.Items) != 2 {
			t.Fatalf("short page %v with a next cursor", p.Items)
		}
		for _, d := range p.Items {
			got = append(got, d.ID)
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if fmt.Sprint(got) != "[d00007 d01007 d02007 d03007 d04007]" {
		t.Fatalf("windows devices = %v", got)
	}

	// Sessions tied on one start time page by id without loss or repeats.
	evs = evs[:0]
	for i := range 700 {
		evs = append(evs, started("d00001", fmt.Sprintf("s%04d", i), t0.Add(-time.Minute)))
	}
	apply(t, s, evs...)
	seen := map[string]bool{}
	for cursor := ""; ; {
		p, err := s.ListSessions(ctx, "a", fleet.SessionFilter{Status: "live"}, cursor, 99)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range p.Items {
			if seen[x.ID] {
				t.Fatalf("%s listed twice", x.ID)
			}
			seen[x.ID] = true
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if len(seen) != 700 {
		t.Fatalf("listed %d sessions, want 700", len(seen))
	}
}

func TestUnbindMissingDeviceIsNotFound(t *testing.T) {
	s, _ := MustOpen(t)
	if _, err := s.UnbindDevice(context.Background(), "a", "nope"); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("err = %v, want not_found", err)
	}
	apply(t, s, fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: "d1", WorkspaceID: "a", Name: "n", OS: "L", UserID: "u1", TS: ms(t0)})
	d, err := s.UnbindDevice(context.Background(), "a", "d1")
	if err != nil || d.UserID != "" || d.Name != "n" {
		t.Fatalf("unbind = %+v, %v", d, err)
	}
}

// snapshotAll is every key with its serialized value (DUMP), to show
// that a refused call changed nothing.
func snapshotAll(tb testing.TB, s *Store) map[string]string {
	tb.Helper()
	out := map[string]string{}
	for _, k := range keysMatching(tb, s, "*") {
		v, err := s.rdb.Dump(context.Background(), k).Result()
		if err != nil {
			tb.Fatal(err)
		}
		out[k] = v
	}
	return out
}

// Every writing script checks all its arguments before its first write: a
// malformed event after good ones fails the call with nothing written.
func TestScriptsCheckBeforeWriting(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)))
	now, day := s.clock()
	good := []any{wsPrefix("a"), int(fleet.EventOnlineChanged), "", ms(t0), "d1", "", "1", ""}
	for name, c := range map[string]*call{
		"apply, bad ts": {script: applyScript, keys: []string{wsDevKey("a")},
			args: append(append([]any{now, day, int64(86400000), int64(86400000)}, good...), wsPrefix("a"), int(fleet.EventOnlineChanged), "", "not-a-ts", "d1", "", "0", "")},
		"apply, durationSec out of range": {script: applyScript, keys: []string{wsDevKey("a")},
			args: append(append([]any{now, day, int64(86400000), int64(86400000)}, good...), wsPrefix("a"), int(fleet.EventSessionEnded), "", ms(t0), "d1", "s1", "success", "100000000000000000")},
		"keep, bad ts": {script: keepScript, keys: []string{idxKey(bucketOf("k1"))},
			args: []any{now, 10, bucketPrefix(bucketOf("k1")), int(fleet.EventOnlineChanged), "", ms(t0), "k1", "", "1", "", bucketPrefix(bucketOf("k1")), int(fleet.EventOnlineChanged), "", "x", "k1", "", "1", ""}},
		"place, bad placement": {script: placeScript, keys: []string{idxKey(bucketOf("p1"))},
			args: []any{bucketPrefix(bucketOf("p1")), "p1", 1, "1000+a", bucketPrefix(bucketOf("p1")), "p1", 2, "1000+a", "1000*b"}},
		"sync, bad registration ts": {script: syncScript, keys: []string{wsDevKey("a")},
			args: []any{now, int64(86400000), int64(86400000), "d9", "1000+a", "1000", `{"n":"n","o":"o"}`, "n", "o", "", "d9", "1000+a", "x", `{}`, "", "", ""}},
	} {
		t.Run(name, func(t *testing.T) {
			before := snapshotAll(t, s)
			err := s.exec(ctx, []*call{c})
			if err == nil {
				t.Fatal("the call succeeded")
			}
			if after := snapshotAll(t, s); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("a refused call changed the data:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}

// Kept sessions are bounded per device: past MaxKeptSessions the one with
// the oldest start goes, counted in KeptDropped; the registration then
// brings the kept ones home, and other devices are not touched.
func TestKeptEventsBound(t *testing.T) {
	b := newBackend(t)
	b.cfg.MaxKeptSessions = 5
	s := b.open(t)
	var evs []fleet.Event
	for i := range 8 {
		evs = append(evs, ended("d1", fmt.Sprintf("s%d", i), "success", 60, t0.Add(time.Duration(i-20)*time.Minute)))
	}
	evs = append(evs, ended("d2", "x1", "success", 30, t0.Add(-time.Minute)))
	apply(t, s, evs...)
	if n := s.KeptDropped(); n != 3 {
		t.Fatalf("dropped %d, want 3", n)
	}
	// One more, newer: the oldest kept goes; an older one than all kept goes itself.
	apply(t, s, ended("d1", "s8", "success", 60, t0.Add(-2*time.Minute)), ended("d1", "old", "success", 60, t0.Add(-time.Hour)))
	if n := s.KeptDropped(); n != 5 {
		t.Fatalf("dropped %d, want 5", n)
	}
	apply(t, s, reg("d1", "a", t0.Add(-2*time.Hour)), reg("d2", "a", t0.Add(-2*time.Hour)))
	p, err := s.ListSessions(context.Background(), "a", fleet.SessionFilter{}, "", 50)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range p.Items {
		got = append(got, x.ID)
	}
	if want := "[x1 s8 s7 s6 s5 s4]"; fmt.Sprint(got) != want {
		t.Fatalf("sessions %v, want the newest 5 of d1 and d2's one, %s", got, want)
	}
	if left := keysMatching(t, s, "fl:{d:*}:p*"); len(left) != 0 {
		t.Fatalf("kept events left after registration: %v", left)
	}
}
