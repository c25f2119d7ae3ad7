package loadtest

import (
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"regexp"
	"testing"
	"time"
)

func fixedClock() func() time.Time {
	t := time.Date(2030, 5, 10, 12, 0, 0, 0, time.UTC)
	return func() time.Time { return t }
}

func TestModelRules(t *testing.T) {
	fl := newFleet("abc", 2, 1)
	events := []event{
		0:  {kind: evRegistered, device: 0, ts: 1},
		1:  {kind: evOnline, device: 0, ts: 10, online: true},
		2:  {kind: evOnline, device: 0, ts: 20, online: false},
		3:  {kind: evSessionStarted, device: 0, session: 7, ts: 21},
		4:  {kind: evSessionEnded, device: 0, session: 7, ts: 22, dur: 90, status: statusFailed},
		5:  {kind: evSessionEnded, device: 0, session: 7, ts: 23, dur: 90, status: statusFailed}, // same session, new id
		6:  {kind: evOnline, device: 1, ts: 5, online: true},                                     // before registration
		7:  {kind: evRegistered, device: 1, ts: 6},
		8:  {kind: evSessionStarted, device: 1, session: 8, ts: 7},
		9:  {kind: evSessionEnded, device: 1, session: 9, ts: 8, dur: 45},
		10: {kind: evSessionStarted, device: 1, session: 9, ts: 9}, // after its end
	}
	m := newModel(fl, events)
	steps := []struct {
		ev   int32
		want outcome
	}{
		{0, outAccepted}, {2, outAccepted}, {1, outStale}, {1, outDuplicate}, {3, outAccepted},
		{4, outAccepted}, {4, outDuplicate}, {5, outDuplicate}, {6, outAccepted}, {7, outAccepted},
		{8, outAccepted}, {9, outAccepted}, {10, outAccepted},
	}
	for i, s := range steps {
		if got := m.apply(s.ev); got != s.want {
			t.Errorf("step %d (event %d): %v, want %v", i, s.ev, got, s.want)
		}
	}
	st := m.state()[0]
	want := wsState{
		Devices: 2, Online: 1, LiveSessions: 1, SessionSeconds: 135, ActiveDevices: 2,
		OnlineIDs: []int32{1}, DeviceIDs: []int32{0, 1},
	}
	want.Ended[statusFailed] = 1
	want.Ended[statusSuccess] = 1
	if !reflect.DeepEqual(st, want) {
		t.Errorf("state = %+v\nwant    %+v", st, want)
	}
}

func TestUnregisteredDevicesDoNotCount(t *testing.T) {
	fl := newFleet("abc", 2, 1)
	m := newModel(fl, []event{{kind: evOnline, device: 1, ts: 5, online: true}, {kind: evRegistered, device: 0, ts: 1}})
	m.apply(0)
	m.apply(1)
	if st := m.state()[0]; st.Devices != 1 || st.Online != 0 {
		t.Errorf("state = %+v, want one offline device", st)
	}
}

// genStream returns n phase-2 deliveries after the registrations.
func genStream(g *generator, n int) []delivery {
	var out []delivery
	for d := range g.fl.devices {
		out = append(out, g.register(int32(d)))
	}
	for range n {
		d := g.next()
		out = append(out, d)
		g.placed(d)
	}
	return out
}

func TestRedeliveriesAndReorderingDoNotChangeState(t *testing.T) {
	fl := newFleet("abc", 50, 5)
	g := newGenerator(fl, 42, 0.3, 0.3, 4, fixedClock())
	stream := genStream(g, 20000)

	inOrder := newModel(fl, g.events)
	kinds := map[deliveryKind]int{}
	delivered := map[int32]bool{}
	for _, d := range stream {
		got := inOrder.apply(d.ev)
		kinds[d.kind]++
		delivered[d.ev] = true
		switch {
		case d.kind == deliveryRedelivery && got != outDuplicate:
			t.Fatalf("redelivery of event %d counted %v", d.ev, got)
		case d.kind == deliveryLate && got != outStale:
			t.Fatalf("late online change %d counted %v, want stale", d.ev, got)
		case d.kind == deliveryFresh && got != outAccepted:
			t.Fatalf("fresh event %d counted %v", d.ev, got)
		}
	}
	if kinds[deliveryRedelivery] < 1000 || kinds[deliveryLate] < 500 {
		t.Fatalf("too few redeliveries/late deliveries to mean anything: %v", kinds)
	}

	// Each delivered event once, in creation (= ts) order.
	once := newModel(fl, g.events)
	var distinct []int32
	for ev := range g.events {
		if delivered[int32(ev)] {
			distinct = append(distinct, int32(ev))
			once.apply(int32(ev))
		}
	}
	// And in a random arrival order, registrations included.
	rng := rand.New(rand.NewPCG(7, 7))
	rng.Shuffle(len(distinct), func(i, j int) { distinct[i], distinct[j] = distinct[j], distinct[i] })
	shuffled := newModel(fl, g.events)
	for _, ev := range distinct {
		shuffled.apply(ev)
	}
	want := once.state()
	if got := inOrder.state(); !reflect.DeepEqual(got, want) {
		t.Errorf("with redeliveries and late changes the state differs:\n%+v\nwant\n%+v", got, want)
	}
	if got := shuffled.state(); !reflect.DeepEqual(got, want) {
		t.Errorf("in shuffled order the state differs:\n%+v\nwant\n%+v", got, want)
	}
	var total wsState
	for _, st := range want {
		total.Devices += st.Devices
		total.Online += st.Online
		total.SessionSeconds += st.SessionSeconds
		total.LiveSessions += st.LiveSessions
	}
	if total.Devices != 50 || total.Online == 0 || total.SessionSeconds == 0 || total.LiveSessions == 0 {
		t.Errorf("the generated fleet should be busy: %+v", total)
	}
}

func TestGeneratorTimestampsAndGaps(t *testing.T) {
	fl := newFleet("abc", 20, 2)
	g := newGenerator(fl, 3, 0.2, 0.2, 8, fixedClock())
	stream := genStream(g, 5000)
	last := map[int32]int64{}
	for i, e := range g.events {
		if e.ts <= last[e.device] {
			t.Fatalf("event %d: ts %d not after %d for device %d", i, e.ts, last[e.device], e.device)
		}
		last[e.device] = e.ts
	}
	pos := map[int32]int{}
	for i, d := range stream {
		if d.kind == deliveryFresh {
			pos[d.ev] = i
			continue
		}
		dep, ok := pos[d.depEv]
		if !ok {
			t.Fatalf("delivery %d waits for event %d that was never delivered", i, d.depEv)
		}
		if i-dep < 16 {
			t.Fatalf("delivery %d comes only %d after what it waits for; want at least two windows", i, i-dep)
		}
	}
	if s := g.sessionSeconds(); s < 1 || s > 8*3600 {
		t.Errorf("session length %d out of bounds", s)
	}
}

var idPattern = regexp.MustCompile(`^[A-Za-z0-9._:@-]{1,128}$`)

func TestPlanEncodingAndExpectation(t *testing.T) {
	fl := newFleet("r1", 12, 3)
	g := newGenerator(fl, 9, 0.2, 0.2, 2, fixedClock())
	p := newPlan(fl, g, 3, 0)
	setup, load := p.setupSource(), p.loadSource(200)
	var reqs []*request
	for r := setup(); r != nil; r = setup() {
		reqs = append(reqs, r)
	}
	for r := load(); r != nil; r = load() {
		reqs = append(reqs, r)
	}
	if load() != nil {
		t.Fatal("load source continues past its limit")
	}
	var loadDeliveries int
	for i, r := range reqs {
		var body []map[string]any
		if err := json.Unmarshal(r.body, &body); err != nil {
			t.Fatalf("request %d: body is not a JSON array: %v\n%s", i, err, r.body)
		}
		if len(body) != r.wire || len(r.dels) != r.wire {
			t.Fatalf("request %d: %d events in body, wire %d, deliveries %d", i, len(body), r.wire, len(r.dels))
		}
		for _, e := range body {
			for _, k := range []string{"id", "qdDeviceId", "workspaceId", "sessionId"} {
				if v, ok := e[k]; ok && !idPattern.MatchString(v.(string)) {
					t.Fatalf("%s %q is not a valid id", k, v)
				}
			}
			if _, ok := e["ts"].(float64); !ok {
				t.Fatalf("ts must be Unix milliseconds: %v", e)
			}
		}
		if i >= 4 {
			loadDeliveries += len(r.dels)
		}
	}
	if loadDeliveries != 200 {
		t.Fatalf("load source made %d deliveries, want 200", loadDeliveries)
	}

	// Acknowledge every request but one, in reverse order.
	failed := reqs[len(reqs)/2]
	m := newModel(fl, g.events)
	seq := int64(0)
	for i := len(reqs) - 1; i >= 0; i-- {
		r := reqs[i]
		if r == failed {
			r.state.Store(reqFailed)
			continue
		}
		seq++
		r.ackSeq = seq
		r.state.Store(reqAcked)
		for _, d := range r.dels {
			m.apply(d.ev)
		}
	}
	x := expect(p)
	if x.unacked != int64(len(failed.dels)) || x.acked != int64(12+200-len(failed.dels)) {
		t.Errorf("acked/unacked = %d/%d", x.acked, x.unacked)
	}
	if !reflect.DeepEqual(x.state, m.state()) {
		t.Errorf("expectation differs from replaying the acknowledged requests")
	}
}

func TestPlanDropEveryPretends(t *testing.T) {
	fl := newFleet("r1", 10, 2)
	g := newGenerator(fl, 1, 0, 0, 1, fixedClock())
	p := newPlan(fl, g, 1, 4)
	setup := p.setupSource()
	var dropped int
	for r := setup(); r != nil; r = setup() {
		if r.wire == 0 {
			dropped++
			if len(r.body) != 0 {
				t.Errorf("a dropped single event still has a body: %s", r.body)
			}
		}
		r.state.Store(reqAcked)
	}
	if dropped != 2 {
		t.Fatalf("dropped %d of 10 registrations with --drop-every 4, want 2", dropped)
	}
	// Dropped events are expected all the same.
	if x := expect(p); x.state[0].Devices+x.state[1].Devices != 10 {
		t.Errorf("expected devices = %d, want all 10", x.state[0].Devices+x.state[1].Devices)
	}
}

// BenchmarkEncodeEvents measures what pre-encoding costs per event, to show
// the generator stays far below what a server spends per event.
func BenchmarkEncodeEvents(b *testing.B) {
	fl := newFleet("bench", 2000, 20)
	g := newGenerator(fl, 1, 0.05, 0.05, 32, time.Now)
	p := newPlan(fl, g, 10, 0)
	p.reserve(b.N * 10) // as execute does for the prefill
	build := p.loadSource(0)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		build()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*10), "ns/event")
}
