package model

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/fleetd/fleetd/fleet"
)

// Times of the tables, in Unix ms: t0 is 10:00, min minutes after it.
const t0 = int64(1_780_000_000_000)

func at(min int) int64 { return t0 + int64(min)*60_000 }

var cfg = Config{LiveBound: time.Hour}

// now is when the tables are read: 11:00.
var now = at(60)

func reg(dev, ws string, ts int64, nameOSUser ...string) fleet.Event {
	e := fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: dev, WorkspaceID: ws, TS: ts, Name: "n", OS: "Linux", DurationSec: -1}
	if len(nameOSUser) > 0 {
		e.Name = nameOSUser[0]
	}
	if len(nameOSUser) > 1 {
		e.OS = nameOSUser[1]
	}
	if len(nameOSUser) > 2 {
		e.UserID = nameOSUser[2]
	}
	return e
}

func del(dev string, ts int64) fleet.Event {
	return fleet.Event{Type: fleet.EventDeviceDeleted, DeviceID: dev, TS: ts, DurationSec: -1}
}

func online(dev string, ts int64, on bool) fleet.Event {
	return fleet.Event{Type: fleet.EventOnlineChanged, DeviceID: dev, TS: ts, Online: on, DurationSec: -1}
}

func rotated(dev string, ts int64) fleet.Event {
	return fleet.Event{Type: fleet.EventSecretRotated, DeviceID: dev, TS: ts, DurationSec: -1}
}

func start(dev, sid string, ts int64) fleet.Event {
	return fleet.Event{Type: fleet.EventSessionStarted, DeviceID: dev, SessionID: sid, TS: ts, DurationSec: -1}
}

// end is a session.ended; dur -1 is "no durationSec".
func ended(dev, sid string, ts int64, status string, dur int64) fleet.Event {
	return fleet.Event{Type: fleet.EventSessionEnded, DeviceID: dev, SessionID: sid, TS: ts, Status: status, DurationSec: dur}
}

// reversed returns events in the other order: every table runs both ways.
func reversed(evs []fleet.Event) []fleet.Event {
	out := make([]fleet.Event, len(evs))
	for i, e := range evs {
		out[len(evs)-1-i] = e
	}
	return out
}

// runBoth runs events in order and reversed, fails if the states differ,
// and returns the state.
func runBoth(t *testing.T, evs []fleet.Event) State {
	t.Helper()
	a, b := Run(evs, now, cfg), Run(reversed(evs), now, cfg)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("Run depends on the order of events:\n in order: %+v\n reversed: %+v", a, b)
	}
	return a
}

func TestPlacement(t *testing.T) {
	for name, tc := range map[string]struct {
		events []fleet.Event
		want   string // "WS NAME OS USER", or "" for no device
	}{
		"the newest registration places":         {[]fleet.Event{reg("d", "w1", at(1)), reg("d", "w2", at(2))}, "w2 n Linux "},
		"an older registration changes nothing":  {[]fleet.Event{reg("d", "w2", at(2)), reg("d", "w1", at(1))}, "w2 n Linux "},
		"re-registration in the same workspace":  {[]fleet.Event{reg("d", "w1", at(1), "old"), reg("d", "w1", at(2), "new", "macOS", "u")}, "w1 new macOS u"},
		"tie: the greater workspace":             {[]fleet.Event{reg("d", "w2", at(1)), reg("d", "w1", at(1))}, "w2 n Linux "},
		"tie in a workspace: the greater name":   {[]fleet.Event{reg("d", "w1", at(1), "b", "A"), reg("d", "w1", at(1), "a", "Z")}, "w1 b A "},
		"tie in name: the greater os":            {[]fleet.Event{reg("d", "w1", at(1), "a", "Linux"), reg("d", "w1", at(1), "a", "Windows")}, "w1 a Windows "},
		"tie in os: the greater user":            {[]fleet.Event{reg("d", "w1", at(1), "a", "L", "u1"), reg("d", "w1", at(1), "a", "L", "")}, "w1 a L u1"},
		"a newer delete removes":                 {[]fleet.Event{reg("d", "w1", at(1)), del("d", at(2))}, ""},
		"an older delete changes nothing":        {[]fleet.Event{del("d", at(1)), reg("d", "w1", at(2))}, "w1 n Linux "},
		"tie: the delete wins":                   {[]fleet.Event{reg("d", "w1", at(1)), del("d", at(1))}, ""},
		"tie: the delete wins over any":          {[]fleet.Event{reg("d", "w1", at(1)), reg("d", "w9", at(1)), del("d", at(1))}, ""},
		"registered again after a delete":        {[]fleet.Event{reg("d", "w1", at(1)), del("d", at(2)), reg("d", "w2", at(3))}, "w2 n Linux "},
		"a delete of a device never registered":  {[]fleet.Event{del("d", at(1))}, ""},
		"events without a registration":          {[]fleet.Event{online("d", at(1), true), start("d", "s", at(1))}, ""},
		"a delete between two moves":             {[]fleet.Event{reg("d", "w1", at(1)), del("d", at(2)), reg("d", "w2", at(3)), reg("d", "w3", at(4))}, "w3 n Linux "},
		"a delete newer than every registration": {[]fleet.Event{reg("d", "w1", at(1)), reg("d", "w2", at(3)), del("d", at(4))}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			st := runBoth(t, tc.events)
			d, ok := st.Devices["d"]
			got := ""
			if ok {
				got = fmt.Sprintf("%s %s %s %s", d.Workspace, d.Name, d.OS, d.UserID)
			}
			if got != tc.want {
				t.Fatalf("device = %q, want %q", got, tc.want)
			}
			// A device is counted once, in its workspace; every workspace
			// a registration named has its series.
			total := int64(0)
			for ws, s := range st.Fleet {
				total += s.Devices
				if ok && ws == d.Workspace && s.Devices != 1 {
					t.Fatalf("fleet_devices{%s} = %d, want 1", ws, s.Devices)
				}
			}
			if want := int64(len(st.Devices)); total != want {
				t.Fatalf("fleet_devices sum to %d, want %d", total, want)
			}
			for _, e := range tc.events {
				if _, known := st.Fleet[e.WorkspaceID]; e.Type == fleet.EventDeviceRegistered && !known {
					t.Fatalf("workspace %s has no series", e.WorkspaceID)
				}
			}
		})
	}
}

func TestHome(t *testing.T) {
	moves := []fleet.Event{reg("d", "w1", at(10)), reg("d", "w2", at(30))}
	with := func(evs []fleet.Event, more ...fleet.Event) []fleet.Event {
		return append(append([]fleet.Event(nil), evs...), more...)
	}
	for name, tc := range map[string]struct {
		events []fleet.Event
		want   string // workspace of session s, "" when it has none (kept)
	}{
		"where the device was at the start":         {with(moves, start("d", "s", at(20)), ended("d", "s", at(40), "success", -1)), "w1"},
		"a start at the instant of a move":          {with(moves, start("d", "s", at(30))), "w2"},
		"the end alone: at is end minus duration":   {with(moves, ended("d", "s", at(35), "success", 10*60)), "w1"},
		"the end alone without duration: at is end": {with(moves, ended("d", "s", at(35), "success", -1)), "w2"},
		"a late start moves the session home":       {with(moves, ended("d", "s", at(35), "success", -1), start("d", "s", at(25))), "w1"},
		"before the first registration: the next":   {with(moves, start("d", "s", at(5))), "w1"},
		"after a delete: the next registration":     {[]fleet.Event{reg("d", "w1", at(10)), del("d", at(20)), start("d", "s", at(25)), reg("d", "w2", at(30))}, "w2"},
		"after a delete with no registration after": {[]fleet.Event{reg("d", "w1", at(10)), del("d", at(20)), start("d", "s", at(25))}, ""},
		"started before a delete: stays":            {[]fleet.Event{reg("d", "w1", at(10)), start("d", "s", at(15)), del("d", at(20)), ended("d", "s", at(25), "success", -1)}, "w1"},
		"a start at the instant of a delete":        {[]fleet.Event{reg("d", "w1", at(10)), del("d", at(20)), start("d", "s", at(20)), reg("d", "w2", at(30))}, "w2"},
		"the next instant is a delete: skipped":     {[]fleet.Event{start("d", "s", at(5)), reg("d", "w1", at(10)), del("d", at(10)), reg("d", "w2", at(20))}, "w2"},
		"the next instant's greatest registration":  {[]fleet.Event{start("d", "s", at(5)), reg("d", "w1", at(10)), reg("d", "w3", at(10))}, "w3"},
		"never registered":                          {[]fleet.Event{start("d", "s", at(5)), ended("d", "s", at(6), "success", -1)}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			st := runBoth(t, tc.events)
			s, ok := st.Sessions["s"]
			if got := s.Workspace; got != tc.want || ok != (tc.want != "") {
				t.Fatalf("session home = %q (present %v), want %q", got, ok, tc.want)
			}
		})
	}
}

func TestPresence(t *testing.T) {
	for name, tc := range map[string]struct {
		events []fleet.Event
		want   bool
	}{
		"no presence event: offline":        {[]fleet.Event{reg("d", "w", at(1))}, false},
		"the newest change decides":         {[]fleet.Event{reg("d", "w", at(1)), online("d", at(2), true), online("d", at(3), false)}, false},
		"an older change is stale":          {[]fleet.Event{reg("d", "w", at(1)), online("d", at(3), true), online("d", at(2), false)}, true},
		"tie: offline wins":                 {[]fleet.Event{reg("d", "w", at(1)), online("d", at(2), true), online("d", at(2), false)}, false},
		"registration takes no part":        {[]fleet.Event{online("d", at(2), true), reg("d", "w", at(3))}, true},
		"kept before the registration":      {[]fleet.Event{online("d", at(5), true), reg("d", "w", at(1))}, true},
		"follows the device in a move":      {[]fleet.Event{reg("d", "w1", at(1)), online("d", at(2), true), reg("d", "w2", at(3))}, true},
		"a rotation is an offline change":   {[]fleet.Event{reg("d", "w", at(1)), online("d", at(2), true), rotated("d", at(3))}, false},
		"online after a rotation":           {[]fleet.Event{reg("d", "w", at(1)), rotated("d", at(2)), online("d", at(3), true)}, true},
		"online at the rotation's instant":  {[]fleet.Event{reg("d", "w", at(1)), rotated("d", at(2)), online("d", at(2), true)}, false},
		"older than a rotation: stale":      {[]fleet.Event{reg("d", "w", at(1)), rotated("d", at(3)), online("d", at(2), true)}, false},
		"survives a delete and registering": {[]fleet.Event{reg("d", "w1", at(1)), online("d", at(2), true), del("d", at(3)), reg("d", "w2", at(4))}, true},
	} {
		t.Run(name, func(t *testing.T) {
			st := runBoth(t, tc.events)
			d, ok := st.Devices["d"]
			if !ok {
				t.Fatal("device not placed")
			}
			if d.Online != tc.want {
				t.Fatalf("online = %v, want %v", d.Online, tc.want)
			}
			want := int64(0)
			if tc.want {
				want = 1
			}
			if got := st.Fleet[d.Workspace].Online; got != want {
				t.Fatalf("fleet_devices_online = %d, want %d", got, want)
			}
		})
	}
}

func TestSessions(t *testing.T) {
	r := reg("d", "w", at(-50))
	type want struct {
		status string
		dur    int64
		at     int64
	}
	for name, tc := range map[string]struct {
		events []fleet.Event
		want   want
	}{
		"start then end":                          {[]fleet.Event{r, start("d", "s", at(0)), ended("d", "s", at(5), "success", -1)}, want{"success", 300, at(0)}},
		"a late start recomputes the duration":    {[]fleet.Event{r, ended("d", "s", at(5), "success", -1), start("d", "s", at(0))}, want{"success", 300, at(0)}},
		"the end alone lasts 0":                   {[]fleet.Event{r, ended("d", "s", at(5), "success", -1)}, want{"success", 0, at(5)}},
		"durationSec wins over the start":         {[]fleet.Event{r, start("d", "s", at(0)), ended("d", "s", at(5), "success", 60)}, want{"success", 60, at(0)}},
		"the end alone with durationSec":          {[]fleet.Event{r, ended("d", "s", at(5), "success", 120)}, want{"success", 120, at(3)}},
		"a start after the end lasts 0":           {[]fleet.Event{r, start("d", "s", at(6)), ended("d", "s", at(5), "success", -1)}, want{"success", 0, at(6)}},
		"the earliest start":                      {[]fleet.Event{r, start("d", "s", at(2)), start("d", "s", at(0)), ended("d", "s", at(5), "success", -1)}, want{"success", 300, at(0)}},
		"the earliest end: by ts":                 {[]fleet.Event{r, start("d", "s", at(0)), ended("d", "s", at(5), "failed", -1), ended("d", "s", at(4), "success", -1)}, want{"success", 240, at(0)}},
		"the earliest end: then by durationSec":   {[]fleet.Event{r, start("d", "s", at(0)), ended("d", "s", at(5), "success", 10), ended("d", "s", at(5), "success", -1)}, want{"success", 10, at(0)}},
		"the earliest end: then by status":        {[]fleet.Event{r, start("d", "s", at(0)), ended("d", "s", at(5), "failed", 10), ended("d", "s", at(5), "success", 10)}, want{"success", 10, at(0)}},
		"sub-second times: whole seconds elapsed": {[]fleet.Event{r, start("d", "s", at(0)+999), ended("d", "s", at(1)+998, "success", -1)}, want{"success", 59, at(0) + 999}},
		"live within the bound":                   {[]fleet.Event{r, start("d", "s", at(10))}, want{fleet.StatusLive, 50 * 60, at(10)}},
		"live at the bound exactly":               {[]fleet.Event{r, start("d", "s", at(0))}, want{fleet.StatusLive, 60 * 60, at(0)}},
		"abandoned past the bound":                {[]fleet.Event{r, start("d", "s", at(0)-1)}, want{fleet.StatusAbandoned, 0, at(0) - 1}},
		"an end closes an abandoned session":      {[]fleet.Event{r, start("d", "s", at(-40)), ended("d", "s", at(-39), "success", -1)}, want{"success", 60, at(-40)}},
	} {
		t.Run(name, func(t *testing.T) {
			st := runBoth(t, tc.events)
			s, ok := st.Sessions["s"]
			if !ok {
				t.Fatal("no session")
			}
			if got := (want{s.Status, s.DurationSec, s.At}); got != tc.want {
				t.Fatalf("session = %+v, want %+v", got, tc.want)
			}
			if s.Ended != (s.Status != fleet.StatusLive && s.Status != fleet.StatusAbandoned) {
				t.Fatalf("ended = %v with status %q", s.Ended, s.Status)
			}
			f := st.Fleet["w"]
			live, ended, secs := int64(0), int64(0), int64(0)
			switch s.Status {
			case fleet.StatusLive:
				live = 1
			case fleet.StatusAbandoned:
			default:
				ended, secs = 1, s.DurationSec
			}
			if f.Live != live || f.Ended[fleet.StatusLabel(s.Status)] != ended || f.SessionSeconds != secs {
				t.Fatalf("series = %+v, want live %d, ended %d, seconds %d", f, live, ended, secs)
			}
		})
	}
}

func TestSessionCountsOnce(t *testing.T) {
	end1 := ended("d", "s", at(5), "weird status", 600)
	again := end1
	again.ID = "another-id" // the same end under a new delivery id
	st := runBoth(t, []fleet.Event{reg("d", "w1", at(0)), end1, end1, reg("d", "w2", at(10)), again})
	f := st.Fleet["w1"]
	if f.SessionSeconds != 600 || f.Ended[fleet.StatusOther] != 1 || len(f.Ended) != 1 {
		t.Fatalf("w1 series = %+v, want one session of 600 s counted as %q", f, fleet.StatusOther)
	}
	if f2 := st.Fleet["w2"]; f2.SessionSeconds != 0 || len(f2.Ended) != 0 || f2.Devices != 1 {
		t.Fatalf("w2 series = %+v, want the device and no session", f2)
	}
	if s := st.Sessions["s"]; s.Status != "weird status" {
		t.Fatalf("the session keeps its status as sent: %q", s.Status)
	}
}

func TestLastSeen(t *testing.T) {
	for name, tc := range map[string]struct {
		events []fleet.Event
		want   int64
	}{
		"the registration alone":           {[]fleet.Event{reg("d", "w", at(1))}, at(1)},
		"the newest event of any kind":     {[]fleet.Event{reg("d", "w", at(1)), online("d", at(3), true), start("d", "s", at(2))}, at(3)},
		"a session's end":                  {[]fleet.Event{reg("d", "w", at(1)), ended("d", "s", at(9), "success", 5)}, at(9)},
		"a stale online change is older":   {[]fleet.Event{reg("d", "w", at(1)), online("d", at(5), true), online("d", at(4), false)}, at(5)},
		"kept events before registering":   {[]fleet.Event{online("d", at(7), true), reg("d", "w", at(1))}, at(7)},
		"a session homed elsewhere":        {[]fleet.Event{reg("d", "w1", at(1)), start("d", "s", at(2)), reg("d", "w2", at(3)), ended("d", "s", at(8), "success", -1)}, at(8)},
		"a delete does not count":          {[]fleet.Event{reg("d", "w", at(3)), del("d", at(2))}, at(3)},
		"an older registration":            {[]fleet.Event{reg("d", "w2", at(5)), reg("d", "w1", at(3))}, at(5)},
		"events before a delete and again": {[]fleet.Event{reg("d", "w1", at(1)), online("d", at(2), true), del("d", at(3)), reg("d", "w2", at(4))}, at(4)},
	} {
		t.Run(name, func(t *testing.T) {
			st := runBoth(t, tc.events)
			if got := st.Devices["d"].LastSeen; got != tc.want {
				t.Fatalf("last_seen = %d, want %d (%+d ms)", got, tc.want, got-tc.want)
			}
		})
	}
}

func TestUsage(t *testing.T) {
	st := runBoth(t, []fleet.Event{
		reg("a", "w", at(-50)), reg("b", "w", at(-50)), reg("c", "w", at(-50)), reg("c", "x", at(30)),
		start("a", "s1", at(0)), ended("a", "s1", at(10), "success", -1), // 600 s, ends at 10
		ended("b", "s2", at(20), "failed", 59), // ends at 20
		start("c", "s3", at(25)),               // live in w (home), though c moved to x
		start("b", "s4", at(-55)),              // abandoned
	})
	for name, tc := range map[string]struct {
		ws                   string
		from, to             int64
		secs, active, devIDs int64
	}{
		"everything":                    {"w", at(-60), at(120), 659, 3, 2},
		"from is inclusive":             {"w", at(10), at(11), 600, 1, 2},
		"to is exclusive":               {"w", at(0), at(10), 0, 0, 2},
		"by the end, not the start":     {"w", at(15), at(21), 59, 1, 2},
		"live counts when now is in":    {"w", at(59), at(61), 0, 1, 2},
		"and not when now is past":      {"w", at(-30), at(0), 0, 0, 2},
		"another workspace":             {"x", at(-60), at(120), 0, 0, 1},
		"a workspace nothing names":     {"nope", at(-60), at(120), 0, 0, 0},
		"now at the period's end":       {"w", at(30), now, 0, 0, 2},
		"now at the period's start":     {"w", now, at(70), 0, 1, 2},
		"sessions of a moved device":    {"x", at(59), at(61), 0, 0, 1},
		"abandoned sessions never bill": {"w", at(-60), at(-1), 0, 0, 2},
	} {
		t.Run(name, func(t *testing.T) {
			u := st.Usage(tc.ws, tc.from, tc.to)
			if u.SessionSeconds != tc.secs || u.ActiveDevices != tc.active || u.Devices != tc.devIDs {
				t.Fatalf("usage = %d s, %d active, %d devices; want %d, %d, %d", u.SessionSeconds, u.ActiveDevices, u.Devices, tc.secs, tc.active, tc.devIDs)
			}
			if u.From.UnixMilli() != tc.from || u.To.UnixMilli() != tc.to {
				t.Fatalf("period = %v..%v", u.From, u.To)
			}
		})
	}
	if f := st.Fleet["w"]; f.Live != 1 || f.SessionSeconds != 659 || f.Devices != 2 || f.Ended["success"] != 1 || f.Ended["failed"] != 1 {
		t.Fatalf("w series = %+v", f)
	}
	if s := st.Sessions["s4"]; s.Status != fleet.StatusAbandoned {
		t.Fatalf("s4 = %+v, want abandoned", s)
	}
}

// TestRunIsAFunctionOfTheSet: any order and any repeats of the same events
// give the same state (the property the daemon is tested against).
func TestRunIsAFunctionOfTheSet(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		ts := rapid.Custom(func(t *rapid.T) int64 { return at(rapid.IntRange(-70, 59).Draw(t, "min")) })
		dev := rapid.SampledFrom([]string{"d0", "d1"})
		sid := rapid.SampledFrom([]string{"s0", "s1", "s2"})
		sessionDev := map[string]string{"s0": "d0", "s1": "d0", "s2": "d1"}
		ev := rapid.Custom(func(t *rapid.T) fleet.Event {
			switch rapid.IntRange(0, 5).Draw(t, "kind") {
			case 0:
				return reg(dev.Draw(t, "dev"), rapid.SampledFrom([]string{"w0", "w1"}).Draw(t, "ws"), ts.Draw(t, "ts"), rapid.SampledFrom([]string{"a", "b"}).Draw(t, "name"))
			case 1:
				return del(dev.Draw(t, "dev"), ts.Draw(t, "ts"))
			case 2:
				return online(dev.Draw(t, "dev"), ts.Draw(t, "ts"), rapid.Bool().Draw(t, "on"))
			case 3:
				return rotated(dev.Draw(t, "dev"), ts.Draw(t, "ts"))
			case 4:
				s := sid.Draw(t, "sid")
				return start(sessionDev[s], s, ts.Draw(t, "ts"))
			default:
				s := sid.Draw(t, "sid")
				return ended(sessionDev[s], s, ts.Draw(t, "ts"), rapid.SampledFrom([]string{"success", "failed"}).Draw(t, "status"), rapid.SampledFrom([]int64{-1, 0, 600}).Draw(t, "dur"))
			}
		})
		evs := rapid.SliceOfN(ev, 0, 20).Draw(rt, "events")
		other := rapid.Permutation(evs).Draw(rt, "shuffled")
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, max(len(evs)-1, 0)), 0, 5).Draw(rt, "repeats") {
			if len(evs) > 0 {
				other = append(other, evs[i])
			}
		}
		a, b := Run(evs, now, cfg), Run(other, now, cfg)
		if !reflect.DeepEqual(a, b) {
			rt.Fatalf("states differ:\n %+v\n %+v", a, b)
		}
	})
}
