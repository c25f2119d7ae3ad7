// Package model is the reference model of fleetd's webhook semantics (SPEC
// §3, "Convergence"): a pure function from a set of events to the state
// that any delivery of them (any order, batching, replica split or
// redelivery) must reach. It is the spec in code, written for reading, not
// for speed; the property tests compare the daemon against it.
//
// The rules, in the words of the README ("How fleetd decides"):
//
//   - Placement. A device's registrations and deletes are ordered by ts;
//     equal ts are broken by: a delete wins over a registration, then the
//     greater workspace id, then the greater name, os and user (byte
//     order). The greatest one decides:
//     a registration puts the device in its workspace with its name, os and
//     user; a delete removes it.
//   - Home. The workspace of a device at time t is that of the greatest
//     placement with ts <= t when it is a registration; otherwise (a delete,
//     or nothing yet) that of the first registration after t, the device's
//     next workspace. With none, the event is kept (no state yet).
//   - Presence. Online changes are ordered by ts, an offline change winning
//     over an online one with the same ts; a secret rotation is an offline
//     change at its ts. The greatest decides; a device with none is offline.
//     Presence belongs to the device, wherever it moves.
//   - Sessions (by sessionId). Its start is the earliest session.started ts;
//     its end the earliest session.ended (a redelivery without ts, stamped
//     on arrival, never moves it), equal ts broken by the greater
//     durationSec (absent lowest), then the greater status. It
//     belongs to the home of its device at its start, or at its end minus
//     durationSec while the start is unknown ("at"). Duration: durationSec
//     when given, else end - start (0 while the start is unknown or after
//     the end). Without an end it is live while its start is within the live
//     bound of now, abandoned after.
//   - last_seen is the greatest ts of the device's events, deletes aside.
//   - Usage and fleet series count the sessions of a workspace by their end
//     (ended) or their liveness (live), and the devices placed in it.
package model

import (
	"cmp"
	"sort"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// Config holds what the state depends on besides the events.
type Config struct {
	// LiveBound is how long a session without an end stays live.
	LiveBound time.Duration
}

// Device is a registered device.
type Device struct {
	ID, Workspace, Name, OS, UserID string
	Online                          bool
	LastSeen                        int64 // Unix ms
}

// Session is a session with a home workspace.
type Session struct {
	ID, Device, Workspace string
	// Status is the end's status, or fleet.StatusLive / fleet.StatusAbandoned.
	Status      string
	DurationSec int64 // for a live session: elapsed at now
	At          int64 // Unix ms
	Ended       bool
	EndTS       int64 // Unix ms, when Ended
}

// Series is the fleet_* state of one workspace.
type Series struct {
	Devices, Online, Live, SessionSeconds int64
	// Ended counts ended sessions by status label (fleet.StatusLabel).
	Ended map[string]int64
}

// State is what a set of events leads to.
type State struct {
	Now      int64
	Devices  map[string]Device  // registered devices, by id
	Sessions map[string]Session // sessions with a home, by id
	Fleet    map[string]Series  // every workspace a registration named
}

// Usage is the usage of a workspace over [from, to) (Unix ms), as
// GET /api/v1/usage computes it.
func (s *State) Usage(ws string, from, to int64) fleet.Usage {
	u := fleet.Usage{From: time.UnixMilli(from).UTC(), To: time.UnixMilli(to).UTC()}
	active := map[string]bool{}
	for _, x := range s.Sessions {
		if x.Workspace != ws {
			continue
		}
		if x.Ended && from <= x.EndTS && x.EndTS < to {
			u.SessionSeconds += x.DurationSec
			active[x.Device] = true
		}
		if x.Status == fleet.StatusLive && from <= s.Now && s.Now < to {
			active[x.Device] = true
		}
	}
	u.ActiveDevices = int64(len(active))
	u.Devices = s.Fleet[ws].Devices
	return u
}

// placement is a registration or a delete.
type placement struct {
	ts                 int64
	del                bool
	ws, name, os, user string
}

// placementCmp orders placements as the rules say (see the package doc).
func placementCmp(a, b placement) int {
	if c := cmp.Compare(a.ts, b.ts); c != 0 {
		return c
	}
	if a.del != b.del {
		if a.del {
			return 1
		}
		return -1
	}
	return cmp.Or(cmp.Compare(a.ws, b.ws), cmp.Compare(a.name, b.name), cmp.Compare(a.os, b.os), cmp.Compare(a.user, b.user))
}

// presence is an online change (or a rotation, an offline change).
type presence struct {
	ts     int64
	online bool
}

func presenceCmp(a, b presence) int {
	if c := cmp.Compare(a.ts, b.ts); c != 0 {
		return c
	}
	if a.online == b.online {
		return 0
	}
	if a.online {
		return -1 // offline wins a tie
	}
	return 1
}

type end struct {
	ts, dur int64 // dur -1 when absent
	status  string
}

// endCmp is > 0 when end a wins over b.
func endCmp(a, b end) int {
	return cmp.Or(cmp.Compare(b.ts, a.ts), cmp.Compare(a.dur, b.dur), cmp.Compare(a.status, b.status))
}

type sessionFacts struct {
	device   string
	start    int64
	hasStart bool
	end      end
	hasEnd   bool
}

type deviceFacts struct {
	placements []placement // sorted by placementCmp
	presence   presence
	hasPres    bool
	lastSeen   int64
}

// home returns the workspace of the device at t ("" for none).
func (d *deviceFacts) home(t int64) string {
	ps := d.placements
	// The greatest placement with ts <= t.
	i := sort.Search(len(ps), func(i int) bool { return ps[i].ts > t })
	if i > 0 && !ps[i-1].del {
		return ps[i-1].ws
	}
	// The next workspace: the first instant after t at which the device is
	// placed by a registration (the greatest placement of that instant).
	for j := i; j < len(ps); j++ {
		if j+1 < len(ps) && ps[j+1].ts == ps[j].ts {
			continue // not the greatest of its instant
		}
		if !ps[j].del {
			return ps[j].ws
		}
	}
	return ""
}

// Run returns the state that events lead to at now (Unix ms). The order of
// events does not matter, nor do repeats: Run sees them as a set.
func Run(events []fleet.Event, now int64, cfg Config) State {
	devices := map[string]*deviceFacts{}
	sessions := map[string]*sessionFacts{}
	known := map[string]bool{}
	dev := func(id string) *deviceFacts {
		d := devices[id]
		if d == nil {
			d = &deviceFacts{}
			devices[id] = d
		}
		return d
	}
	for _, e := range events {
		if e.Type == fleet.EventUnknown {
			continue
		}
		d := dev(e.DeviceID)
		if e.Type != fleet.EventDeviceDeleted {
			d.lastSeen = max(d.lastSeen, e.TS)
		}
		switch e.Type {
		case fleet.EventDeviceRegistered:
			known[e.WorkspaceID] = true
			d.placements = append(d.placements, placement{ts: e.TS, ws: e.WorkspaceID, name: e.Name, os: e.OS, user: e.UserID})
		case fleet.EventDeviceDeleted:
			d.placements = append(d.placements, placement{ts: e.TS, del: true})
		case fleet.EventOnlineChanged, fleet.EventSecretRotated:
			p := presence{ts: e.TS, online: e.Type == fleet.EventOnlineChanged && e.Online}
			if !d.hasPres || presenceCmp(p, d.presence) > 0 {
				d.presence, d.hasPres = p, true
			}
		case fleet.EventSessionStarted, fleet.EventSessionEnded:
			s := sessions[e.SessionID]
			if s == nil {
				s = &sessionFacts{device: e.DeviceID}
				sessions[e.SessionID] = s
			}
			if e.Type == fleet.EventSessionStarted {
				if !s.hasStart || e.TS < s.start {
					s.start, s.hasStart = e.TS, true
				}
			} else {
				x := end{ts: e.TS, dur: e.DurationSec, status: e.Status}
				if !s.hasEnd || endCmp(x, s.end) > 0 {
					s.end, s.hasEnd = x, true
				}
			}
		}
	}

	st := State{Now: now, Devices: map[string]Device{}, Sessions: map[string]Session{}, Fleet: map[string]Series{}}
	series := func(ws string) *Series {
		x := st.Fleet[ws]
		if x.Ended == nil {
			x.Ended = map[string]int64{}
		}
		st.Fleet[ws] = x
		return &x
	}
	for ws := range known {
		series(ws)
	}
	for id, d := range devices {
		sort.Slice(d.placements, func(i, j int) bool { return placementCmp(d.placements[i], d.placements[j]) < 0 })
		if len(d.placements) == 0 {
			continue
		}
		top := d.placements[len(d.placements)-1]
		if top.del {
			continue
		}
		on := d.hasPres && d.presence.online
		st.Devices[id] = Device{ID: id, Workspace: top.ws, Name: top.name, OS: top.os, UserID: top.user, Online: on, LastSeen: d.lastSeen}
		x := series(top.ws)
		x.Devices++
		if on {
			x.Online++
		}
		st.Fleet[top.ws] = *x
	}
	bound := cfg.LiveBound.Milliseconds()
	for id, s := range sessions {
		at := s.start
		if !s.hasStart {
			at = s.end.ts - max(s.end.dur, 0)*1000
		}
		ws := dev(s.device).home(at)
		if ws == "" {
			continue // kept until the device has a workspace for it
		}
		x := Session{ID: id, Device: s.device, Workspace: ws, At: at}
		switch {
		case s.hasEnd:
			x.Ended, x.EndTS, x.Status = true, s.end.ts, s.end.status
			switch {
			case s.end.dur >= 0:
				x.DurationSec = s.end.dur
			case s.hasStart && s.end.ts > s.start:
				x.DurationSec = (s.end.ts - s.start) / 1000
			}
		case s.start >= now-bound:
			x.Status, x.DurationSec = fleet.StatusLive, max(0, (now-s.start)/1000)
		default:
			x.Status = fleet.StatusAbandoned
		}
		st.Sessions[id] = x
		sr := series(ws)
		if x.Ended {
			sr.SessionSeconds += x.DurationSec
			sr.Ended[fleet.StatusLabel(x.Status)]++
		} else if x.Status == fleet.StatusLive {
			sr.Live++
		}
		st.Fleet[ws] = *sr
	}
	return st
}
