package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

const dayMs = 86400000

// Bounds of event values, checked before anything is written (the decoder
// checks them first; these keep a bug there from reaching Redis).
const (
	minTS = -62135596800000 // 0001-01-01
	maxTS = 253402300799999 // 9999-12-31
)

// Apply implements fleet.Ingester. Every event is checked first, so a bad
// one refuses the request with nothing written. Placements (registrations
// and deletes) are applied first, then everything else: the state does not
// depend on the order (SPEC §3, Convergence), only the counts might.
func (s *Store) Apply(ctx context.Context, events []fleet.Event, results []fleet.Result) error {
	if err := s.validate(events); err != nil {
		return err
	}
	var placements, others []int
	for i := range events {
		switch events[i].Type {
		case fleet.EventUnknown:
			results[i] = fleet.Ignored
		case fleet.EventDeviceRegistered, fleet.EventDeviceDeleted:
			placements = append(placements, i)
		default:
			others = append(others, i)
		}
	}
	if len(placements) > 0 {
		if err := s.place(withOp(ctx, "place"), events, placements, results); err != nil {
			return err
		}
	}
	if len(others) > 0 {
		return s.applyEvents(withOp(ctx, "apply"), events, others, results)
	}
	return nil
}

// validate refuses events whose values the store cannot apply.
func (s *Store) validate(events []fleet.Event) error {
	for i := range events {
		e := &events[i]
		bad := func(why string) error { return fleet.Errorf(fleet.EINVALID, "event %d: %s", i, why) }
		if s.refuse != nil {
			if err := s.refuse(e); err != nil {
				return bad(err.Error())
			}
		}
		if e.Type == fleet.EventUnknown {
			continue
		}
		if !fleet.ValidID(e.DeviceID) || e.ID != "" && !fleet.ValidID(e.ID) {
			return bad("invalid id")
		}
		if e.TS < minTS || e.TS > maxTS {
			return bad("ts out of range")
		}
		switch e.Type {
		case fleet.EventDeviceRegistered:
			if !fleet.ValidID(e.WorkspaceID) || e.UserID != "" && !fleet.ValidID(e.UserID) {
				return bad("invalid id")
			}
		case fleet.EventSessionStarted, fleet.EventSessionEnded:
			if !fleet.ValidID(e.SessionID) {
				return bad("invalid sessionId")
			}
			if e.Type == fleet.EventSessionEnded && (e.DurationSec < -1 || e.DurationSec > maxDurationSec) {
				return bad("durationSec out of range")
			}
		}
	}
	return nil
}

// clock is the store's time now, in Unix ms.
func (s *Store) clock() int64 { return s.now().UnixMilli() }

// eventFields returns the type, x and durationSec fields of an event as the
// scripts take them. A secret rotation is an offline change at its ts.
func eventFields(e *fleet.Event) (typ int, x, dur string) {
	typ, x = int(e.Type), e.Status
	switch e.Type {
	case fleet.EventOnlineChanged:
		x = "0"
		if e.Online {
			x = "1"
		}
	case fleet.EventSecretRotated:
		typ, x = int(fleet.EventOnlineChanged), "0"
	}
	if e.Type == fleet.EventSessionEnded && e.DurationSec >= 0 {
		dur = strconv.FormatInt(e.DurationSec, 10)
	}
	return typ, x, dur
}

// homeOf returns the workspace an event belongs to under history h ("" for
// none: it is kept): the device's workspace now for presence, the home at
// the session's start for session events (its end minus durationSec for an
// end; apply.lua moves it when its start says otherwise).
func homeOf(e *fleet.Event, h history) string {
	switch e.Type {
	case fleet.EventSessionStarted:
		return h.home(e.TS)
	case fleet.EventSessionEnded:
		return h.home(e.TS - max(e.DurationSec, 0)*1000)
	}
	return h.owner()
}

// applyEvents applies presence and session events. Devices are routed by
// their placement history (cache, else the index) to the event's home;
// events without one are kept in the device's index bucket. An event that
// a workspace refuses (its history there is newer than the router's) is
// routed again from the index; a workspace that lags behind the index is
// brought in step first.
func (s *Store) applyEvents(ctx context.Context, events []fleet.Event, work []int, results []fleet.Result) error {
	now := s.clock()
	post := newFollowUp()
	var refused map[string]string // device → workspace that answered rNotHere
	var names wsNames
	for attempt := 0; len(work) > 0; attempt++ {
		if attempt == 4 {
			e := &events[work[0]]
			return fmt.Errorf("redisstore: apply: %d events still unrouted after %d attempts (the first: %v of device %q)", len(work), attempt, e.Type, e.DeviceID)
		}
		routes, err := s.resolve(ctx, events, work, attempt == 0)
		if err != nil {
			return err
		}
		// A workspace that refused an event that the index sends there
		// again lags behind the index: sync it.
		var lagging []*recon
		for d, ws := range refused {
			if rt := routes[d]; rt != nil && containsString(rt.h.workspaces(), ws) {
				lagging = append(lagging, &recon{device: d, route: rt})
			}
		}
		if len(lagging) > 0 {
			if err := s.reconcile(ctx, lagging); err != nil {
				return err
			}
		}
		refused = nil
		applies := newGroup(applyScript, 0, now, s.cfg.Retention.Milliseconds())
		keeps := newGroup(keepScript, 0, now, s.cfg.MaxKeptSessions)
		for _, i := range work {
			e := &events[i]
			rt := routes[e.DeviceID]
			ws := ""
			if rt != nil {
				ws = homeOf(e, rt.h)
			}
			typ, x, dur := eventFields(e)
			if ws == "" {
				b := bucketOf(e.DeviceID)
				c := keeps.add(s.bucketGroup(b), idxKey(b), bucketPrefix(b), typ, deliveryDigest(e.ID), e.TS, e.DeviceID, e.SessionID, x, dur)
				c.idx = append(c.idx, i)
				continue
			}
			wk := names.of(ws)
			c := applies.add(s.wsGroup(ws), wk.dev, wk.prefix, typ, deliveryDigest(e.ID), e.TS, e.DeviceID, e.SessionID, x, dur,
				strconv.FormatInt(e.TS, 36))
			c.idx = append(c.idx, i)
			c.ws = append(c.ws, ws)
		}
		calls := append(append(applies.calls, keeps.calls...), s.sweeps(applies.calls, now)...)
		if err := s.exec(ctx, calls); err != nil {
			return err
		}
		next := work[:0:0]
		for _, c := range calls {
			if c.idx == nil {
				continue // a sweep
			}
			vals, err := c.cmd.Slice()
			if err == nil && c.script == keepScript && len(vals) == len(c.idx)+1 {
				s.countDropped(vals[len(vals)-1])
				vals = vals[:len(vals)-1]
			}
			if err != nil || len(vals) != len(c.idx) {
				return fmt.Errorf("redisstore: apply: bad script reply: %v", err)
			}
			for k, v := range vals {
				i := c.idx[k]
				e := &events[i]
				switch v := v.(type) {
				case string: // keep.lua: the device has a home for it after all
					s.cache.set(strings.Clone(e.DeviceID), strings.Clone(v))
					next = append(next, i)
				case int64:
					code, flags := v&codeMask, v&^codeMask
					switch {
					case code == rNotHere:
						s.cache.del(e.DeviceID)
						if c.script == applyScript {
							if refused == nil {
								refused = map[string]string{}
							}
							refused[e.DeviceID] = c.ws[k]
						}
						next = append(next, i)
						continue
					case code == rMoved:
						results[i] = fleet.Accepted
						post.reunite(e.DeviceID, e.SessionID)
					case code <= rStale:
						results[i] = fleet.Result(code)
					default:
						return fmt.Errorf("redisstore: apply: unexpected code %d", v)
					}
					if flags&fMulti != 0 && e.SessionID != "" {
						post.reunite(e.DeviceID, e.SessionID)
					}
					if flags&fElsewhere != 0 {
						post.seen(e.DeviceID, e.TS)
					}
				default:
					return fmt.Errorf("redisstore: apply: unexpected reply %T", v)
				}
			}
		}
		work = next
	}
	return s.followUp(ctx, post)
}

// route is what the router knows of a device: its placement history.
type route struct {
	raw string
	h   history
}

// resolve returns the routes of the devices of events[work] (nil for a
// device never placed), from the cache when useCache, else from the index.
func (s *Store) resolve(ctx context.Context, events []fleet.Event, work []int, useCache bool) (map[string]*route, error) {
	routes := make(map[string]*route, len(work))
	var missing []string
	for _, i := range work {
		d := events[i].DeviceID
		if _, ok := routes[d]; ok {
			continue
		}
		if useCache {
			if rt, ok := s.cache.get(d); ok {
				routes[d] = rt
				continue
			}
		}
		routes[d] = nil
		missing = append(missing, d)
	}
	if len(missing) == 0 {
		return routes, nil
	}
	raws, err := s.lookup(ctx, missing)
	if err != nil {
		return nil, err
	}
	for k, d := range missing {
		if raws[k] != "" {
			routes[d] = s.cache.set(strings.Clone(d), raws[k])
		}
	}
	return routes, nil
}

// lookup reads the placement histories of devices in one round trip.
func (s *Store) lookup(ctx context.Context, devices []string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(devices))
	for k, d := range devices {
		cmds[k] = pipe.HGet(ctx, idxKey(bucketOf(d)), d)
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return nil, s.fail("lookup", err)
	}
	out := make([]string, len(devices))
	for k, c := range cmds {
		out[k] = c.Val()
	}
	return out, nil
}

// followUp collects the work that events of moved devices leave: sessions
// to bring together at their home, and last-seen times to carry to the
// device's workspace now.
type followUp struct {
	sessions map[string][]string // device → session ids
	lastSeen map[string]int64
}

func newFollowUp() *followUp { return &followUp{} }

func (f *followUp) reunite(d, sid string) {
	if f.sessions == nil {
		f.sessions = map[string][]string{}
	}
	if !containsString(f.sessions[d], sid) {
		f.sessions[d] = append(f.sessions[d], sid)
	}
}

func (f *followUp) seen(d string, ts int64) {
	if f.lastSeen == nil {
		f.lastSeen = map[string]int64{}
	}
	f.lastSeen[d] = max(f.lastSeen[d], ts)
}

func (s *Store) followUp(ctx context.Context, f *followUp) error {
	if len(f.sessions) == 0 && len(f.lastSeen) == 0 {
		return nil
	}
	devices := make([]string, 0, len(f.sessions)+len(f.lastSeen))
	for d := range f.sessions {
		devices = append(devices, d)
	}
	for d := range f.lastSeen {
		if _, ok := f.sessions[d]; !ok {
			devices = append(devices, d)
		}
	}
	raws, err := s.lookup(ctx, devices)
	if err != nil {
		return err
	}
	var rs []*reunion
	adopts := newGroup(adoptScript, 0)
	for k, d := range devices {
		rt := s.cache.set(strings.Clone(d), raws[k])
		if rt == nil {
			continue
		}
		if sids := f.sessions[d]; len(sids) > 0 {
			rs = append(rs, &reunion{device: d, route: rt, sids: sids})
		}
		if ts, ok := f.lastSeen[d]; ok {
			if ws := rt.h.owner(); ws != "" {
				adopts.add(ws, wsDevKey(ws), d, "", "", ts)
			}
		}
	}
	if err := s.reuniteAll(ctx, rs); err != nil {
		return err
	}
	return s.exec(ctx, adopts.calls)
}

// wsNames makes the key names of the workspaces of one commit once each
// (a batch names a few workspaces in many events), the prefix boxed as the
// script argument it is.
type wsNames struct {
	lastWS string
	last   wsName
	m      map[string]wsName // made at a commit's second workspace
}

type wsName struct {
	dev    string
	prefix any
}

func (w *wsNames) of(ws string) wsName {
	if w.last.dev != "" && ws == w.lastWS {
		return w.last
	}
	n, ok := w.m[ws]
	if !ok {
		p := wsPrefix(ws)
		n = wsName{dev: p + kDev, prefix: p}
		if w.last.dev != "" {
			if w.m == nil {
				w.m = map[string]wsName{w.lastWS: w.last}
			}
			w.m[ws] = n
		}
	}
	w.lastWS, w.last = ws, n
	return n
}
