package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/json"
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

func (s *Store) clock() (now int64, day int64) {
	now = s.now().UnixMilli()
	return now, now / dayMs
}

// deliveryDigest is what dedupe.lua keeps of a delivery id: the first 12
// bytes (96 bits) of its SHA-256, so that ids of any length cost the same
// and two ids of one workspace and day collide with a chance of about
// n²/2⁹⁷ (1e-11 at a billion ids). "" stays "" (no id, no de-duplication).
func deliveryDigest(id string) string {
	if id == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(id))
	return string(sum[:12])
}

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
	now, day := s.clock()
	post := newFollowUp()
	var refused map[string]string // device → workspace that answered rNotHere
	for attempt := 0; len(work) > 0; attempt++ {
		if attempt == 4 {
			return fmt.Errorf("redisstore: apply: %d events still unrouted after %d attempts", len(work), attempt)
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
		var calls []*call
		byWS := map[string]*call{}
		byBucket := map[uint32]*call{}
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
				c := byBucket[s.bucketGroup(b)]
				if c == nil {
					c = &call{script: keepScript, keys: []string{idxKey(b)}, args: []any{now, s.cfg.MaxKeptSessions}}
					byBucket[s.bucketGroup(b)] = c
					calls = append(calls, c)
				}
				c.args = append(c.args, bucketPrefix(b), typ, deliveryDigest(e.ID), e.TS, e.DeviceID, e.SessionID, x, dur)
				c.idx = append(c.idx, i)
				continue
			}
			// One call per workspace on a cluster (one slot per script);
			// one call for all on a single Redis.
			group := ws
			if !s.cluster {
				group = ""
			}
			c := byWS[group]
			if c == nil {
				c = &call{script: applyScript, keys: []string{wsDevKey(ws)},
					args: []any{now, day, s.cfg.LiveSessionBound.Milliseconds(), s.cfg.Retention.Milliseconds()}}
				byWS[group] = c
				calls = append(calls, c)
			}
			c.args = append(c.args, wsPrefix(ws), typ, deliveryDigest(e.ID), e.TS, e.DeviceID, e.SessionID, x, dur)
			c.idx = append(c.idx, i)
			c.ws = append(c.ws, ws)
		}
		calls = append(calls, s.sweeps(byWS, now)...)
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

// bucketGroup is the call that a script for index bucket b joins: its own
// on a cluster (a script touches one slot), one for all on a single Redis.
func (s *Store) bucketGroup(b uint32) uint32 {
	if s.cluster {
		return b
	}
	return 0
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

// sweeps returns the housekeeping calls due for the workspaces a commit
// touches: each at most once a minute per replica (sweep.lua).
func (s *Store) sweeps(byWS map[string]*call, now int64) []*call {
	var out []*call
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	if len(s.swept) > 100000 {
		clear(s.swept)
	}
	for _, c := range byWS {
		for _, ws := range c.ws {
			if last, ok := s.swept[ws]; ok && now-last < 60000 && now >= last {
				continue
			}
			s.swept[ws] = now
			out = append(out, &call{script: sweepScript, keys: []string{wsDevKey(ws)},
				args: []any{now, s.cfg.LiveSessionBound.Milliseconds(), s.cfg.Retention.Milliseconds()}})
		}
	}
	return out
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
	byOwner := map[string]*call{}
	var calls []*call
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
				c := byOwner[ws]
				if c == nil {
					c = &call{script: adoptScript, keys: []string{wsDevKey(ws)}}
					byOwner[ws] = c
					calls = append(calls, c)
				}
				c.args = append(c.args, d, "", "", ts)
			}
		}
	}
	if err := s.reuniteAll(ctx, rs); err != nil {
		return err
	}
	return s.exec(ctx, calls)
}

// place applies registrations and deletes (keys.go, "Placement"): (1) add
// them to the devices' histories in the index, (2) bring every workspace
// of each history in step, (3) carry presence and last seen to the
// device's workspace now, (4) bring sessions and kept events home.
func (s *Store) place(ctx context.Context, events []fleet.Event, work []int, results []fleet.Result) error {
	type dev struct {
		entries []string
		idx     []int
		regs    map[string]*fleet.Event // workspace → its greatest registration here
	}
	devs := map[string]*dev{}
	var order []string
	wsSeen := map[string]bool{}
	admit := []any{s.now().UnixMilli(), s.cfg.MaxWorkspaces}
	for _, i := range work {
		e := &events[i]
		d := devs[e.DeviceID]
		if d == nil {
			d = &dev{regs: map[string]*fleet.Event{}}
			devs[e.DeviceID] = d
			order = append(order, e.DeviceID)
		}
		p := placement{ts: e.TS, del: e.Type == fleet.EventDeviceDeleted, ws: e.WorkspaceID}
		d.entries = append(d.entries, p.String())
		d.idx = append(d.idx, i)
		if !p.del {
			if cur := d.regs[e.WorkspaceID]; cur == nil || regAfter(e, cur) {
				d.regs[e.WorkspaceID] = e
			}
			if !wsSeen[e.WorkspaceID] {
				wsSeen[e.WorkspaceID] = true
				admit = append(admit, e.WorkspaceID)
			}
		}
	}
	// The workspaces first: a registration past --max-workspaces refuses
	// the request before anything of it is written.
	if len(admit) > 2 {
		c := &call{script: admitScript, keys: []string{keyWorkspaces}, args: admit}
		if err := s.exec(ctx, []*call{c}); err != nil {
			return err
		}
		if ws, _ := c.cmd.Text(); ws != "" {
			s.wsRefused.Add(1)
			return fleet.Errorf(fleet.EFORBIDDEN, "workspace limit reached: %q would be a new workspace, and fleetd keeps at most %d (--max-workspaces)", ws, s.cfg.MaxWorkspaces)
		}
	}
	byBucket := map[uint32]*call{}
	var calls []*call
	for _, id := range order {
		d := devs[id]
		b := bucketOf(id)
		c := byBucket[s.bucketGroup(b)]
		if c == nil {
			c = &call{script: placeScript, keys: []string{idxKey(b)}}
			byBucket[s.bucketGroup(b)] = c
			calls = append(calls, c)
		}
		c.args = append(c.args, bucketPrefix(b), id, len(d.entries))
		for _, en := range d.entries {
			c.args = append(c.args, en)
		}
		c.devs = append(c.devs, id)
	}
	if err := s.exec(ctx, calls); err != nil {
		return err
	}
	if err := s.step("placed"); err != nil {
		return err
	}
	var rs []*recon
	for _, c := range calls {
		if c.script != placeScript {
			continue
		}
		vals, err := c.cmd.Slice()
		if err != nil || len(vals) != len(c.devs) {
			return fmt.Errorf("redisstore: place: bad script reply: %v", err)
		}
		for k, v := range vals {
			id := c.devs[k]
			d := devs[id]
			parts, _ := v.([]any)
			if len(parts) != 3 {
				return fmt.Errorf("redisstore: place: bad script reply for %s", id)
			}
			raw, _ := parts[0].(string)
			flags, _ := parts[1].(string)
			for n, i := range d.idx {
				results[i] = fleet.Duplicate
				if n < len(flags) && flags[n] == '1' {
					results[i] = fleet.Accepted
				}
			}
			rt := s.cache.set(strings.Clone(id), raw)
			if rt == nil {
				return fmt.Errorf("redisstore: place: malformed history of %s", id)
			}
			r := &recon{device: id, route: rt, regs: d.regs, pending: pairs(parts[2]), havePending: true}
			rs = append(rs, r)
		}
	}
	return s.reconcile(ctx, rs)
}

// regAfter reports whether registration a wins over b of the same
// workspace: the newer ts, then the greater name, os and user.
func regAfter(a, b *fleet.Event) bool {
	if a.TS != b.TS {
		return a.TS > b.TS
	}
	if a.Name != b.Name {
		return a.Name > b.Name
	}
	if a.OS != b.OS {
		return a.OS > b.OS
	}
	return a.UserID > b.UserID
}

// pairs reads a hash reply: a flat field, value list (RESP2 and scripts)
// or a map (RESP3).
func pairs(v any) map[string]string {
	if mm, ok := v.(map[any]any); ok {
		m := make(map[string]string, len(mm))
		for k, val := range mm {
			ks, _ := k.(string)
			vs, _ := val.(string)
			m[ks] = vs
		}
		return m
	}
	l, _ := v.([]any)
	m := make(map[string]string, len(l)/2)
	for i := 0; i+1 < len(l); i += 2 {
		k, _ := l[i].(string)
		val, _ := l[i+1].(string)
		m[k] = val
	}
	return m
}

// recon is one device to bring in step with its placement history.
type recon struct {
	device      string
	route       *route
	regs        map[string]*fleet.Event // registrations that arrived with it
	pending     map[string]string       // kept events (pend:D)
	havePending bool
}

// reconcile brings the workspaces of each device's history in step
// (sync.lua), carries presence and last seen to the device's workspace now
// (adopt.lua), and brings the sessions that must move, and kept events,
// to their home. Every step is idempotent: running it again, after a
// crash or from another replica, finishes what is left.
func (s *Store) reconcile(ctx context.Context, rs []*recon) error {
	rus, err := s.syncAll(ctx, rs)
	if err != nil {
		return err
	}
	if err := s.reuniteAll(ctx, rus); err != nil {
		return err
	}
	// Kept events are done with once the device has a workspace.
	byBucket := map[uint32]*call{}
	var unkeeps []*call
	for _, r := range rs {
		if len(r.pending) == 0 || r.route.h.owner() == "" {
			continue
		}
		b := bucketOf(r.device)
		c := byBucket[b]
		if c == nil {
			c = &call{script: unkeepScript, keys: []string{idxKey(b)}}
			byBucket[b] = c
			unkeeps = append(unkeeps, c)
		}
		c.args = append(c.args, r.device, r.pending[hOnline], r.pending[hSeen])
	}
	return s.exec(ctx, unkeeps)
}

// syncAll does the first steps of reconcile: sync.lua in every workspace
// of each history, adopt.lua in the device's workspace now. It returns the
// sessions to bring home.
func (s *Store) syncAll(ctx context.Context, rs []*recon) ([]*reunion, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	now, _ := s.clock()
	bound, retention := s.cfg.LiveSessionBound.Milliseconds(), s.cfg.Retention.Milliseconds()
	byWS := map[string]*call{}
	var owners, others []*call
	var pendCmds []*call
	for _, r := range rs {
		if !r.havePending {
			c := &call{raw: []any{"hgetall", pendKey(r.device)}}
			pendCmds = append(pendCmds, c)
			c.rec = r
		}
		owner := r.route.h.owner()
		for _, ws := range r.route.h.workspaces() {
			c := byWS[ws]
			if c == nil {
				c = &call{script: syncScript, keys: []string{wsDevKey(ws)}, args: []any{now, bound, retention}}
				byWS[ws] = c
				if ws == owner {
					owners = append(owners, c)
				} else {
					others = append(others, c)
				}
			}
			c.args = append(c.args, r.device, r.route.raw)
			if reg := r.regs[ws]; reg != nil {
				cold, err := json.Marshal(coldFields{Name: reg.Name, OS: reg.OS, User: reg.UserID})
				if err != nil {
					return nil, fmt.Errorf("redisstore: place: %w", err)
				}
				c.args = append(c.args, reg.TS, string(cold), reg.Name, reg.OS, reg.UserID)
			} else {
				c.args = append(c.args, "", "", "", "", "")
			}
			c.recs = append(c.recs, r)
		}
	}
	// The device's workspace now first, so that it is listed somewhere
	// before the others drop it.
	calls := append(append(owners, others...), pendCmds...)
	if err := s.exec(ctx, calls); err != nil {
		return nil, err
	}
	for _, c := range pendCmds {
		m, err := c.cmd.Result()
		if err != nil && err != redis.Nil {
			return nil, fmt.Errorf("redisstore: reconcile: %w", err)
		}
		c.rec.pending = pairs(m)
	}
	type presence struct {
		on     string
		ot, ls int64
		hasOT  bool
		hasLS  bool
	}
	best := map[*recon]*presence{}
	merge := func(r *recon, on, ot, ls string) {
		p := best[r]
		if p == nil {
			p = &presence{}
			best[r] = p
		}
		if ot != "" {
			t, _ := strconv.ParseInt(ot, 10, 64)
			if !p.hasOT || t > p.ot || t == p.ot && on == "0" {
				p.on, p.ot, p.hasOT = on, t, true
			}
		}
		if ls != "" {
			t, _ := strconv.ParseInt(ls, 10, 64)
			if !p.hasLS || t > p.ls {
				p.ls, p.hasLS = t, true
			}
		}
	}
	moving := map[*recon][]string{}
	multi := map[*recon]int{}
	for _, c := range append(owners, others...) {
		vals, err := c.cmd.Slice()
		if err != nil || len(vals) != len(c.recs) {
			return nil, fmt.Errorf("redisstore: sync: bad script reply: %v", err)
		}
		for k, v := range vals {
			r := c.recs[k]
			res, _ := v.([]any)
			if len(res) < 4 {
				return nil, fmt.Errorf("redisstore: sync: bad reply for %s", r.device)
			}
			on := fmt.Sprint(res[0])
			ot, _ := res[1].(string)
			ls, _ := res[2].(string)
			merge(r, on, ot, ls)
			multi[r]++
			for p := 4; p < len(res); p++ {
				if sid, _ := res[p].(string); !containsString(moving[r], sid) {
					moving[r] = append(moving[r], sid)
				}
			}
		}
	}
	byOwner := map[string]*call{}
	var adopts []*call
	var rus []*reunion
	for _, r := range rs {
		if o, ok := r.pending[hOnline]; ok {
			on, ot, _ := strings.Cut(o, ",")
			merge(r, on, ot, "")
		}
		if l, ok := r.pending[hSeen]; ok {
			merge(r, "", "", l)
		}
		sids := moving[r]
		for f := range r.pending {
			if sid, ok := strings.CutPrefix(f, hSession); ok && !containsString(sids, sid) {
				sids = append(sids, sid)
			}
		}
		if len(sids) > 0 {
			rus = append(rus, &reunion{device: r.device, route: r.route, sids: sids})
		}
		owner := r.route.h.owner()
		p := best[r]
		if owner == "" || p == nil || multi[r] < 2 && len(r.pending) == 0 {
			continue // nothing to carry: the owner's own record is all there is
		}
		c := byOwner[owner]
		if c == nil {
			c = &call{script: adoptScript, keys: []string{wsDevKey(owner)}}
			byOwner[owner] = c
			adopts = append(adopts, c)
		}
		on, ot, ls := "", "", ""
		if p.hasOT {
			on, ot = p.on, strconv.FormatInt(p.ot, 10)
		}
		if p.hasLS {
			ls = strconv.FormatInt(p.ls, 10)
		}
		c.args = append(c.args, r.device, on, ot, ls)
	}
	if err := s.step("synced"); err != nil {
		return nil, err
	}
	if err := s.exec(ctx, adopts); err != nil {
		return nil, err
	}
	return rus, s.step("adopted")
}

// countDropped adds to KeptDropped what a script reports it dropped.
func (s *Store) countDropped(v any) {
	if n, ok := v.(int64); ok && n > 0 {
		s.keptDropped.Add(uint64(n))
	}
}

// WorkspacesRefused is how many requests were refused because a
// registration would have made a workspace known past MaxWorkspaces.
func (s *Store) WorkspacesRefused() uint64 { return s.wsRefused.Load() }

// KeptDropped is how many kept session events were dropped because their
// device had --max-kept-events kept already (the oldest go first).
func (s *Store) KeptDropped() uint64 { return s.keptDropped.Load() }

// step runs the test hook after a step of a placement or a move.
func (s *Store) step(name string) error {
	if s.hookStep == nil {
		return nil
	}
	return s.hookStep(name)
}

// reunion is a device whose sessions may have copies in several places.
type reunion struct {
	device string
	route  *route
	sids   []string
}

// maxReuniteRounds bounds the rounds of reuniteAll; a session still moving
// after them (placements of its device arriving all the while) fails the
// request, which its sender retries.
const maxReuniteRounds = 8

// reuniteAll brings every copy of the sessions of rs together at the
// session's home. A round reads the copies in every workspace of the
// device's history and among its kept events, turns those away from home
// into tombstones (which keep their content, so a crash loses nothing),
// and merges all that is known into the home (merge.lua), or keeps it when
// the session has no home yet (stash.lua). Rounds repeat, each with the
// history read afresh, until a round finds every session whole at its
// home: since every writer of a copy reads the copies after its write,
// two writers racing on one session cannot both miss the other.
func (s *Store) reuniteAll(ctx context.Context, rs []*reunion) error {
	type item struct {
		r   *reunion
		sid string
	}
	var work []item
	for _, r := range rs {
		for _, sid := range r.sids {
			work = append(work, item{r, sid})
		}
	}
	now, _ := s.clock()
	bound, retention := s.cfg.LiveSessionBound.Milliseconds(), s.cfg.Retention.Milliseconds()
	for round := 0; len(work) > 0; round++ {
		if round == maxReuniteRounds {
			return fmt.Errorf("redisstore: reunite: %d sessions still moving after %d rounds", len(work), round)
		}
		if round > 0 {
			if err := s.refreshRoutes(ctx, rs); err != nil {
				return err
			}
		}
		// Read every copy.
		type copies struct {
			live    map[string]sessionRecord // workspace → counted copy
			raw     map[string]string
			moving  map[string]string // workspace → tombstone not yet settled
			joined  sessionRecord
			any     bool
			pending string // the kept copy, as read
		}
		found := make([]copies, len(work))
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		pipe := s.rdb.Pipeline()
		type read struct {
			k   int
			ws  string // "" for kept
			cmd *redis.StringCmd
		}
		var reads []read
		for k, it := range work {
			for _, ws := range it.r.route.h.workspaces() {
				reads = append(reads, read{k, ws, pipe.HGet(rctx, wsKey(ws, kSS), it.sid)})
			}
			reads = append(reads, read{k, "", pipe.HGet(rctx, pendKey(it.r.device), hSession+it.sid)})
		}
		_, err := pipe.Exec(rctx)
		cancel()
		if err != nil && err != redis.Nil {
			return s.fail("reunite", err)
		}
		for _, rd := range reads {
			raw := rd.cmd.Val()
			rec, ok := parseSession(raw)
			if raw == "" || !ok {
				continue
			}
			c := &found[rd.k]
			if c.any {
				c.joined = c.joined.join(rec)
			} else {
				c.joined, c.any = rec.join(rec), true
			}
			switch {
			case rd.ws == "":
				c.pending = raw
			case rec.Tomb && !rec.Settled:
				if c.moving == nil {
					c.moving = map[string]string{}
				}
				c.moving[rd.ws] = raw
			case !rec.Tomb:
				if c.live == nil {
					c.live, c.raw = map[string]sessionRecord{}, map[string]string{}
				}
				c.live[rd.ws], c.raw[rd.ws] = rec, raw
			}
		}
		// Decide, per session: whole at home already, or a move to make.
		var next []item
		wsHead := func() []any { return []any{now, bound, retention} }
		tombs := newGroup(tombScript, wsDevKey, wsHead)
		merges := newGroup(mergeScript, wsDevKey, wsHead)
		settles := newGroup(settleScript, wsDevKey, nil)
		sameKey := func(k string) string { return k }
		stashes := newGroup(stashScript, sameKey, func() []any { return []any{now, s.cfg.MaxKeptSessions} })
		unpends := newGroup(unpendScript, sameKey, nil)
		for k, it := range work {
			c := found[k]
			if !c.any {
				continue // nothing anywhere
			}
			home := it.r.route.h.home(c.joined.at())
			whole := c.pending == ""
			if home == "" {
				whole = len(c.live) == 0 && c.pending != "" && sameSession(c.pending, c.joined)
			} else {
				for ws := range c.live {
					whole = whole && ws == home
				}
				whole = whole && c.live[home].Device != "" && sameSession(c.raw[home], c.joined)
			}
			if whole {
				// Seen whole at home: the tombstones elsewhere are done.
				for ws, raw := range c.moving {
					settles.add(ws, it.sid, it.r.device, raw)
				}
				continue
			}
			next = append(next, it)
			for ws := range c.live {
				if ws != home {
					tombs.add(ws, it.sid, home)
				}
			}
			joined := c.joined
			joined.Written, joined.hasWritten = now, true
			if home == "" {
				stashes.add(idxKey(bucketOf(it.r.device)), it.sid, joined.String())
				continue
			}
			m := merges.add(home, it.sid, joined.String())
			m.devs = append(m.devs, it.r.device)
			m.sess = append(m.sess, c.pending) // dropped once the home has it
		}
		if err := s.exec(ctx, settles.calls); err != nil {
			return err
		}
		if len(next) == 0 {
			return nil
		}
		// Tombstones first, then the merges, then the kept copies that
		// arrived are dropped.
		if err := s.exec(ctx, tombs.calls); err != nil {
			return err
		}
		if err := s.step("tombstoned"); err != nil {
			return err
		}
		if err := s.exec(ctx, append(merges.calls, stashes.calls...)); err != nil {
			return err
		}
		if err := s.step("merged"); err != nil {
			return err
		}
		for _, c := range stashes.calls {
			if vals, err := c.cmd.Slice(); err == nil && len(vals) > 0 {
				s.countDropped(vals[len(vals)-1])
			}
		}
		var lagging []*recon
		for _, c := range merges.calls {
			vals, err := c.cmd.Slice()
			if err != nil || len(vals) != len(c.devs) {
				return fmt.Errorf("redisstore: merge: bad script reply: %v", err)
			}
			for k, v := range vals {
				res, _ := v.([]any)
				if len(res) != 2 {
					return fmt.Errorf("redisstore: merge: bad script reply %v", v)
				}
				code, _ := res[0].(int64)
				switch {
				case code == rAccepted || code == rDuplicate:
					if pending := c.sess[k]; pending != "" {
						d := c.devs[k]
						sid := c.args[3+2*k].(string)
						unpends.add(idxKey(bucketOf(d)), d, hSession+sid, pending)
					}
				case code == rNotHere && res[1] == "":
					// The home has no record of the device yet: bring it in step.
					lagging = append(lagging, &recon{device: c.devs[k], route: reunionOf(rs, c.devs[k]).route})
				}
			}
		}
		if err := s.exec(ctx, unpends.calls); err != nil {
			return err
		}
		more, err := s.syncAll(ctx, lagging)
		if err != nil {
			return err
		}
		for _, r := range more {
			for _, sid := range r.sids {
				next = append(next, item{reunionOf(rs, r.device), sid})
			}
		}
		work = next
	}
	return nil
}

// maxCallItems bounds the sessions of one script call on the rare paths
// (moves, kept events), so that replaying a device's 10,000 kept events
// is many short scripts, between which Redis serves everyone else.
const maxCallItems = 256

// group collects the calls of one script, one per routing key (and per
// maxCallItems items).
type group struct {
	script *redis.Script
	key    func(string) string // the call's KEYS[1] for a group key
	head   func() []any        // the first arguments of every call
	cur    map[string]*call
	calls  []*call
}

func newGroup(sc *redis.Script, key func(string) string, head func() []any) *group {
	return &group{script: sc, key: key, head: head, cur: map[string]*call{}}
}

// add appends one item's args to the call of group key k.
func (g *group) add(k string, args ...any) *call {
	c := g.cur[k]
	if c == nil || c.n == maxCallItems {
		c = &call{script: g.script, keys: []string{g.key(k)}}
		if g.head != nil {
			c.args = g.head()
		}
		g.cur[k] = c
		g.calls = append(g.calls, c)
	}
	c.args = append(c.args, args...)
	c.n++
	return c
}

// sameSession reports whether a stored copy holds all that is known.
func sameSession(raw string, joined sessionRecord) bool {
	rec, ok := parseSession(raw)
	if !ok {
		return false
	}
	rec.Tomb, rec.TombHome, rec.Settled = false, "", false
	rec.Written, rec.hasWritten = 0, false
	joined.Written, joined.hasWritten = 0, false
	return rec == joined
}

// refreshRoutes reads the histories of rs's devices afresh.
func (s *Store) refreshRoutes(ctx context.Context, rs []*reunion) error {
	devices := make([]string, len(rs))
	for k, r := range rs {
		devices[k] = r.device
	}
	raws, err := s.lookup(ctx, devices)
	if err != nil {
		return err
	}
	for k, r := range rs {
		if rt := s.cache.set(strings.Clone(r.device), raws[k]); rt != nil {
			r.route = rt
		}
	}
	return nil
}

func reunionOf(rs []*reunion, device string) *reunion {
	for _, r := range rs {
		if r.device == device {
			return r
		}
	}
	return nil
}
