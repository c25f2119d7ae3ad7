package loadtest

import (
	"container/heap"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// fleet names the simulated fleet. Every id carries the run id, so runs
// against the same fleetd never share a workspace, device, session or
// delivery id.
type fleet struct {
	runID      string
	devices    int
	workspaces int
	prefix     string // "lt-<runid>-"
}

func newFleet(runID string, devices, workspaces int) *fleet {
	return &fleet{runID: runID, devices: devices, workspaces: workspaces, prefix: "lt-" + runID + "-"}
}

// workspaceOf returns the workspace index device d belongs to.
func (f *fleet) workspaceOf(d int32) int { return int(d) % f.workspaces }

func (f *fleet) workspaceID(w int) string { return f.prefix + strconv.Itoa(w) }
func (f *fleet) deviceID(d int32) string  { return f.prefix + "d" + strconv.Itoa(int(d)) }

func (f *fleet) appendID(b []byte, kind byte, n int64) []byte {
	b = append(b, f.prefix...)
	if kind != 0 {
		b = append(b, kind)
	}
	return strconv.AppendInt(b, n, 10)
}

// deviceOS is the operating system a simulated device reports.
func deviceOS(d int32) string {
	switch d % 5 {
	case 0:
		return "linux"
	case 1:
		return "windows"
	case 2:
		return "macos"
	case 3:
		return "android"
	default:
		return "ios"
	}
}

// eventKind is the webhook event type.
type eventKind uint8

const (
	evRegistered eventKind = iota
	evOnline
	evSessionStarted
	evSessionEnded
)

// String returns the webhook type name.
func (k eventKind) String() string {
	switch k {
	case evRegistered:
		return "device.registered"
	case evOnline:
		return "device.online.changed"
	case evSessionStarted:
		return "session.started"
	default:
		return "session.ended"
	}
}

// Session end statuses; the index is what event.status holds.
const (
	statusSuccess uint8 = iota
	statusFailed
	statusTimeout
	numStatuses
)

func statusName(s uint8) string {
	switch s {
	case statusSuccess:
		return "success"
	case statusFailed:
		return "failed"
	default:
		return "timeout"
	}
}

// event is one generated webhook event. Its index in the event table is its
// identity: the delivery id is "lt-<runid>-e<index>".
type event struct {
	ts      int64 // Unix milliseconds
	device  int32
	session int32 // session number, for session events
	dur     int32 // durationSec, for session.ended
	kind    eventKind
	status  uint8
	online  bool
}

// deliveryKind says why an event is on the wire.
type deliveryKind uint8

const (
	// deliveryFresh is the first delivery of an event.
	deliveryFresh deliveryKind = iota
	// deliveryRedelivery sends an event again with the same id, only after
	// its first delivery was acknowledged: the server must count it duplicate.
	deliveryRedelivery
	// deliveryLate is an online change held back and sent only after a newer
	// online change of the same device was acknowledged: it must be stale.
	deliveryLate
)

// delivery is one event placed on the wire.
type delivery struct {
	ev      int32
	depEv   int32 // event whose first delivery must be acknowledged before this is sent; -1 for none
	kind    deliveryKind
	dropped bool // --drop-every: counted as sent but left out of the body
}

// devState is the generator's view of one device.
type devState struct {
	lastTs int64
	live   int32 // session number of the live session, -1 when none
	held   int32 // online event held back for a late delivery, -1 when none
	online bool
}

type pendingDelivery struct {
	due int64
	d   delivery
}

// deliveryHeap orders pending redeliveries by due position.
type deliveryHeap []pendingDelivery

func (h deliveryHeap) Len() int           { return len(h) }
func (h deliveryHeap) Less(i, j int) bool { return h[i].due < h[j].due }
func (h deliveryHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *deliveryHeap) Push(x any)        { *h = append(*h, x.(pendingDelivery)) }
func (h *deliveryHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// generator produces the delivery stream of a simulated fleet. Phase 1 is
// one registration per device; phase 2 visits the devices in a fixed
// shuffled cycle (so consecutive events of one device are a whole fleet
// apart and rarely in flight together) and makes each do one realistic
// thing: flap online/offline, start a session while online, or end its live
// session with a lognormal duration. Redeliveries and late (stale) online
// changes are scheduled a few in-flight windows later. It is not safe for
// concurrent use: one producer goroutine owns it.
type generator struct {
	fl       *fleet
	rng      *rand.Rand
	now      func() time.Time
	events   []event
	devs     []devState
	order    []int32
	pos      int
	sessions int32
	dupProb  float64
	lateProb float64
	gapMin   int64 // redeliveries come at least this many deliveries later
	gapSpan  int64
	seq      int64 // deliveries handed out by next
	pending  deliveryHeap
}

// newGenerator returns a generator for fl. window is the number of events
// that can be in flight at once (connections × batch); redeliveries and late
// deliveries are placed two to four windows after what they wait for, so
// waiting for that acknowledgement almost never stalls a sender.
func newGenerator(fl *fleet, seed uint64, dupProb, lateProb float64, window int, now func() time.Time) *generator {
	g := &generator{
		fl:       fl,
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		now:      now,
		devs:     make([]devState, fl.devices),
		order:    make([]int32, fl.devices),
		dupProb:  dupProb,
		lateProb: lateProb,
		gapMin:   2 * int64(max(window, 1)),
		gapSpan:  2*int64(max(window, 1)) + 1,
	}
	for i := range g.devs {
		g.devs[i] = devState{live: -1, held: -1}
		g.order[i] = int32(i)
	}
	g.rng.Shuffle(len(g.order), func(i, j int) { g.order[i], g.order[j] = g.order[j], g.order[i] })
	return g
}

func (g *generator) add(e event) int32 {
	g.events = append(g.events, e)
	return int32(len(g.events) - 1)
}

// stamp returns "now" in Unix ms, strictly after the device's previous event.
func (g *generator) stamp(st *devState) int64 {
	ts := max(g.now().UnixMilli(), st.lastTs+1)
	st.lastTs = ts
	return ts
}

// register returns the registration of device d.
func (g *generator) register(d int32) delivery {
	st := &g.devs[d]
	ev := g.add(event{kind: evRegistered, device: d, ts: g.stamp(st)})
	return delivery{ev: ev, depEv: -1, kind: deliveryFresh}
}

// next returns the next phase-2 delivery: a due redelivery or late delivery
// if there is one, else a fresh event.
func (g *generator) next() delivery {
	g.seq++
	if len(g.pending) > 0 && g.pending[0].due <= g.seq {
		return heap.Pop(&g.pending).(pendingDelivery).d
	}
	return g.fresh()
}

func (g *generator) fresh() delivery {
	for {
		d := g.order[g.pos]
		g.pos = (g.pos + 1) % len(g.order)
		st := &g.devs[d]
		e := event{device: d, ts: g.stamp(st)}
		switch {
		case st.live >= 0 && g.rng.Float64() < 0.6:
			e.kind = evSessionEnded
			e.session = st.live
			e.dur = g.sessionSeconds()
			e.status = g.sessionStatus()
			st.live = -1
		case st.live < 0 && st.online && g.rng.Float64() < 0.5:
			e.kind = evSessionStarted
			e.session = g.sessions
			g.sessions++
			st.live = e.session
		default:
			e.kind = evOnline
			st.online = !st.online
			e.online = st.online
			if st.held < 0 && g.lateProb > 0 && g.rng.Float64() < g.lateProb {
				// Held back: it goes out after the device's next online change.
				st.held = g.add(e)
				continue
			}
		}
		return delivery{ev: g.add(e), depEv: -1, kind: deliveryFresh}
	}
}

// placed tells the generator that d was put on the wire, so that its
// redelivery, or the late delivery it releases, can be scheduled after it.
func (g *generator) placed(d delivery) {
	if d.kind != deliveryFresh {
		return
	}
	e := &g.events[d.ev]
	if e.kind == evOnline {
		if st := &g.devs[e.device]; st.held >= 0 && st.held < d.ev {
			heap.Push(&g.pending, pendingDelivery{
				due: g.seq + g.gapMin + g.rng.Int64N(g.gapSpan),
				d:   delivery{ev: st.held, depEv: d.ev, kind: deliveryLate},
			})
			st.held = -1
		}
	}
	if g.dupProb > 0 && g.rng.Float64() < g.dupProb {
		heap.Push(&g.pending, pendingDelivery{
			due: g.seq + g.gapMin + g.rng.Int64N(g.gapSpan),
			d:   delivery{ev: d.ev, depEv: d.ev, kind: deliveryRedelivery},
		})
	}
}

// sessionSeconds draws a remote-session length: lognormal with a median of
// three minutes (a quarter of sessions under a minute and a half, a few
// percent over half an hour), between 1 s and 8 h.
func (g *generator) sessionSeconds() int32 {
	s := math.Exp(math.Log(180) + g.rng.NormFloat64())
	return int32(min(max(math.Round(s), 1), 8*3600))
}

func (g *generator) sessionStatus() uint8 {
	switch r := g.rng.Float64(); {
	case r < 0.85:
		return statusSuccess
	case r < 0.95:
		return statusFailed
	default:
		return statusTimeout
	}
}

// outcome is how the server must count one delivered event.
type outcome uint8

const (
	outAccepted outcome = iota
	outDuplicate
	outStale
)

// serverCounts is the body of a webhook 200 answer, and sums of it.
type serverCounts struct {
	Accepted  uint64 `json:"accepted"`
	Duplicate uint64 `json:"duplicate"`
	Stale     uint64 `json:"stale"`
	Ignored   uint64 `json:"ignored"`
}

func (c *serverCounts) add(o serverCounts) {
	c.Accepted += o.Accepted
	c.Duplicate += o.Duplicate
	c.Stale += o.Stale
	c.Ignored += o.Ignored
}

func (c serverCounts) total() uint64 { return c.Accepted + c.Duplicate + c.Stale + c.Ignored }

type modelDevice struct {
	registered bool
	hasOnline  bool
	online     bool
	onlineTs   int64
}

type modelSession struct {
	device  int32
	started bool
	ended   bool
	dur     int32
	status  uint8
}

// model is a reference implementation of the SPEC §3 rules for the events
// this generator sends: de-duplication by delivery id, online changes
// ordered by ts per device (an older one is stale), a registered device
// offline until an online change says otherwise, session.ended counted once
// per sessionId, and a session.started after its end not making a live
// session. The final state it reaches does not depend on the order events
// are applied in; the outcomes it reports do.
type model struct {
	fl       *fleet
	events   []event
	seen     map[int32]struct{}
	devs     []modelDevice
	sessions map[int32]*modelSession
}

func newModel(fl *fleet, events []event) *model {
	return &model{
		fl:       fl,
		events:   events,
		seen:     make(map[int32]struct{}),
		devs:     make([]modelDevice, fl.devices),
		sessions: make(map[int32]*modelSession),
	}
}

// apply processes one delivery of event ev and says how it counts.
func (m *model) apply(ev int32) outcome {
	if _, ok := m.seen[ev]; ok {
		return outDuplicate
	}
	m.seen[ev] = struct{}{}
	e := &m.events[ev]
	dev := &m.devs[e.device]
	switch e.kind {
	case evRegistered:
		dev.registered = true
	case evOnline:
		if dev.hasOnline && e.ts < dev.onlineTs {
			return outStale
		}
		dev.hasOnline, dev.online, dev.onlineTs = true, e.online, e.ts
	case evSessionStarted:
		s := m.session(e)
		s.started = true
	case evSessionEnded:
		s := m.session(e)
		if s.ended {
			return outDuplicate
		}
		s.ended, s.dur, s.status = true, e.dur, e.status
	}
	return outAccepted
}

func (m *model) session(e *event) *modelSession {
	s := m.sessions[e.session]
	if s == nil {
		s = &modelSession{device: e.device}
		m.sessions[e.session] = s
	}
	return s
}

// wsState is the state of one workspace as fleetd must report it.
type wsState struct {
	Devices        int64
	Online         int64
	LiveSessions   int64
	SessionSeconds int64
	Ended          [numStatuses]int64
	ActiveDevices  int64
	OnlineIDs      []int32 // ascending
	DeviceIDs      []int32 // ascending
}

// state returns the state of every workspace, indexed by workspace.
func (m *model) state() []wsState {
	out := make([]wsState, m.fl.workspaces)
	for d := range m.devs {
		dev := &m.devs[d]
		if !dev.registered {
			continue
		}
		ws := &out[m.fl.workspaceOf(int32(d))]
		ws.Devices++
		ws.DeviceIDs = append(ws.DeviceIDs, int32(d))
		if dev.hasOnline && dev.online {
			ws.Online++
			ws.OnlineIDs = append(ws.OnlineIDs, int32(d))
		}
	}
	active := make(map[int32]struct{})
	for _, s := range m.sessions {
		if !m.devs[s.device].registered {
			continue
		}
		ws := &out[m.fl.workspaceOf(s.device)]
		switch {
		case s.ended:
			ws.SessionSeconds += int64(s.dur)
			ws.Ended[s.status]++
		case s.started:
			ws.LiveSessions++
		default:
			continue
		}
		if _, ok := active[s.device]; !ok {
			active[s.device] = struct{}{}
			ws.ActiveDevices++
		}
	}
	return out
}
