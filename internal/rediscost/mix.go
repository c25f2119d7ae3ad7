package main

import (
	"fmt"
	"math/rand/v2"

	"github.com/fleetd/fleetd/fleet"
)

// tsStep is how far the fleet's clock moves between two fresh events, so
// online changes arrive with increasing ts and sessions last minutes.
const tsStep = 100 // ms

// recentSize is how many fresh events a redelivery is drawn from.
const recentSize = 1000

// fleetShape names the devices of a run: workspaces × devices, with
// QuickDesk-like 9-digit device ids.
type fleetShape struct {
	workspaces, devices int
}

func (s fleetShape) total() int { return s.workspaces * s.devices }

func (s fleetShape) workspace(w int) string { return fmt.Sprintf("ws-%02d", w) }

// device returns the id of device k of the whole fleet (k / devices is
// its workspace).
func (s fleetShape) device(k int) string { return fmt.Sprintf("%d", 295000000+k) }

// openSession is a session that started and has not ended yet.
type openSession struct {
	id     string
	device int
	start  int64
}

// mix makes the measured traffic from a fixed seed: 60 % online changes
// (each flips its device, with an increasing ts), 20 % session starts, 20 %
// session ends with durationSec, every event with its own delivery id, and
// 5 % exact redeliveries of one of the last recentSize fresh events.
type mix struct {
	shape  fleetShape
	r      *rand.Rand
	ts     int64 // ts of the last fresh event, Unix ms
	ids    int   // delivery ids handed out
	sess   int   // session ids handed out
	fresh  int   // fresh (not redelivered) events made by next
	online []bool
	open   []openSession
	recent []fleet.Event
	run    uint32 // tells this run's ids from another's
}

func newMix(shape fleetShape, seed uint64) *mix {
	return &mix{shape: shape, r: rand.New(rand.NewPCG(seed, 0x636f7374)), online: make([]bool, shape.total()), run: uint32(seed)}
}

// deliveryID returns a new UUID-like delivery id, as senders use.
func (m *mix) deliveryID() string {
	m.ids++
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", m.run, m.ids)
}

func (m *mix) sessionID() string {
	m.sess++
	return fmt.Sprintf("sess-%08x-%06x", m.run, m.sess)
}

// next returns the next event of the mix and the result that applying it
// must give: Duplicate for a redelivery, Accepted for every other event
// (the ts only increase, so nothing is stale).
func (m *mix) next() (fleet.Event, fleet.Result) {
	if len(m.recent) > 0 && m.r.IntN(100) < 5 {
		return m.recent[m.r.IntN(len(m.recent))], fleet.Duplicate
	}
	m.ts += tsStep
	var e fleet.Event
	switch p := m.r.IntN(100); {
	case p < 60:
		k := m.r.IntN(m.shape.total())
		m.online[k] = !m.online[k]
		e = fleet.Event{Type: fleet.EventOnlineChanged, ID: m.deliveryID(), TS: m.ts, DeviceID: m.shape.device(k), Online: m.online[k], DurationSec: -1}
	case p < 80 || len(m.open) == 0:
		e = m.start(m.r.IntN(m.shape.total()), m.ts)
	default:
		e = m.end(m.r.IntN(len(m.open)), m.ts)
	}
	if len(m.recent) < recentSize {
		m.recent = append(m.recent, e)
	} else {
		m.recent[m.fresh%recentSize] = e
	}
	m.fresh++
	return e, fleet.Accepted
}

// start opens a session on device k at ts.
func (m *mix) start(k int, ts int64) fleet.Event {
	s := openSession{id: m.sessionID(), device: k, start: ts}
	m.open = append(m.open, s)
	return fleet.Event{Type: fleet.EventSessionStarted, ID: m.deliveryID(), TS: ts, DeviceID: m.shape.device(k), SessionID: s.id, DurationSec: -1}
}

// end ends the open session i at ts.
func (m *mix) end(i int, ts int64) fleet.Event {
	s := m.open[i]
	m.open[i] = m.open[len(m.open)-1]
	m.open = m.open[:len(m.open)-1]
	status := "success"
	if m.r.IntN(10) == 0 {
		status = "failed"
	}
	return fleet.Event{Type: fleet.EventSessionEnded, ID: m.deliveryID(), TS: ts, DeviceID: m.shape.device(s.device),
		SessionID: s.id, Status: status, DurationSec: (ts - s.start) / 1000}
}

var oses = [...]string{"Windows", "macOS", "Linux"}

// registrations returns the registration of every device of the fleet at ts.
func (m *mix) registrations(ts int64) []fleet.Event {
	out := make([]fleet.Event, 0, m.shape.total())
	for k := range m.shape.total() {
		out = append(out, fleet.Event{Type: fleet.EventDeviceRegistered, ID: m.deliveryID(), TS: ts, DeviceID: m.shape.device(k),
			WorkspaceID: m.shape.workspace(k / m.shape.devices), Name: fmt.Sprintf("qz-host-%d", k), OS: oses[k%len(oses)], DurationSec: -1})
	}
	return out
}

// history returns perDevice × devices sessions that started and ended
// within [from, to), each a session.started and a session.ended with
// durationSec, spread over random devices.
func (m *mix) history(perDevice float64, from, to int64) []fleet.Event {
	n := int(perDevice * float64(m.shape.total()))
	out := make([]fleet.Event, 0, 2*n)
	for range n {
		start := from + m.r.Int64N((to-from)/2)
		end := start + 1000*(30+m.r.Int64N((to-start)/1000-30))
		out = append(out, m.start(m.r.IntN(m.shape.total()), start))
		out = append(out, m.end(len(m.open)-1, end))
	}
	return out
}

// presence returns an online change of every device at ts: online for
// about the fraction given, offline for the others.
func (m *mix) presence(fraction float64, ts int64) []fleet.Event {
	out := make([]fleet.Event, 0, m.shape.total())
	for k := range m.shape.total() {
		m.online[k] = m.r.Float64() < fraction
		out = append(out, fleet.Event{Type: fleet.EventOnlineChanged, ID: m.deliveryID(), TS: ts, DeviceID: m.shape.device(k), Online: m.online[k], DurationSec: -1})
	}
	return out
}

// live returns perDevice × devices session starts within [from, to) that
// stay open: the live sessions that the mix's session ends end.
func (m *mix) live(perDevice float64, from, to int64) []fleet.Event {
	n := int(perDevice * float64(m.shape.total()))
	out := make([]fleet.Event, 0, n)
	for range n {
		out = append(out, m.start(m.r.IntN(m.shape.total()), from+m.r.Int64N(to-from)))
	}
	return out
}
