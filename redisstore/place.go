package redisstore

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// Placements (registrations and deletes) and bringing a device's
// workspaces in step with its placement history (keys.go, "Placement").

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
	places := newGroup(placeScript, 0)
	for _, id := range order {
		d := devs[id]
		b := bucketOf(id)
		c := places.add(s.bucketGroup(b), idxKey(b), bucketPrefix(b), id, len(d.entries))
		for _, en := range d.entries {
			c.args = append(c.args, en)
		}
		c.devs = append(c.devs, id)
	}
	calls := places.calls
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
	deferred    bool // sessions left to move home in the background
	// unplaced: adopt.lua found the device no longer placed in the owner
	// this history names (another placement raced this one), so its kept
	// presence stays kept for that placement to carry.
	unplaced bool
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
	if err := s.deferReplays(ctx, rs); err != nil {
		return err
	}
	// Kept events are done with once the device has a workspace.
	unkeeps := newGroup(unkeepScript, 0)
	for _, r := range rs {
		if len(r.pending) == 0 || r.route.h.owner() == "" || r.unplaced {
			continue
		}
		b := idxKey(bucketOf(r.device))
		unkeeps.add(b, b, r.device, r.pending[hOnline], r.pending[hSeen])
	}
	return s.exec(ctx, unkeeps.calls)
}

// syncAll does the first steps of reconcile: sync.lua in every workspace
// of each history, adopt.lua in the device's workspace now. It returns the
// sessions to bring home.
func (s *Store) syncAll(ctx context.Context, rs []*recon) ([]*reunion, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	now := s.clock()
	bound, retention := s.cfg.LiveSessionBound.Milliseconds(), s.cfg.Retention.Milliseconds()
	// The device's workspace now first, so that it is listed somewhere
	// before the others drop it.
	owners := newGroup(syncScript, 0, now, bound, retention)
	others := newGroup(syncScript, 0, now, bound, retention)
	var pendCmds []*call
	for _, r := range rs {
		if !r.havePending {
			c := &call{raw: []any{"hgetall", pendKey(r.device)}}
			pendCmds = append(pendCmds, c)
			c.rec = r
		}
		owner := r.route.h.owner()
		for _, ws := range r.route.h.workspaces() {
			g := others
			if ws == owner {
				g = owners
			}
			c := g.add(ws, wsDevKey(ws), r.device, r.route.raw)
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
	syncs := append(owners.calls, others.calls...)
	calls := append(syncs, pendCmds...)
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
	movingSet := map[*recon]map[string]bool{}
	multi := map[*recon]int{}
	for _, c := range syncs {
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
				if sid, _ := res[p].(string); !movingSet[r][sid] {
					if movingSet[r] == nil {
						movingSet[r] = map[string]bool{}
					}
					movingSet[r][sid] = true
					moving[r] = append(moving[r], sid)
				}
			}
		}
	}
	adopts := newGroup(adoptScript, 0)
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
		kept := len(sids)
		for f, raw := range r.pending {
			sid, ok := strings.CutPrefix(f, hSession)
			if !ok || movingSet[r][sid] {
				continue
			}
			// A kept session with no home yet (its start falls where the
			// device had no workspace) stays kept: nothing to move.
			if rec, ok := parseSession(raw); ok && r.route.h.home(rec.at()) == "" {
				continue
			}
			sids = append(sids, sid)
		}
		slices.Sort(sids[kept:]) // the same order, whatever the map's
		// At most ReplayStep sessions move within the commit: the rest go
		// home in the background (replay.go), so that a device with many
		// kept events neither holds the commit past the ingest timeout nor
		// the events of others behind it.
		if len(sids) > s.cfg.ReplayStep {
			sids = sids[:s.cfg.ReplayStep]
			r.deferred = true
		}
		if len(sids) > 0 {
			rus = append(rus, &reunion{device: r.device, route: r.route, sids: sids})
		}
		owner := r.route.h.owner()
		p := best[r]
		if owner == "" || p == nil || multi[r] < 2 && len(r.pending) == 0 {
			continue // nothing to carry: the owner's own record is all there is
		}
		on, ot, ls := "", "", ""
		if p.hasOT {
			on, ot = p.on, strconv.FormatInt(p.ot, 10)
		}
		if p.hasLS {
			ls = strconv.FormatInt(p.ls, 10)
		}
		c := adopts.add(owner, wsDevKey(owner), r.device, on, ot, ls)
		c.recs = append(c.recs, r)
	}
	if err := s.step("synced"); err != nil {
		return nil, err
	}
	if err := s.exec(ctx, adopts.calls); err != nil {
		return nil, err
	}
	for _, c := range adopts.calls {
		placed, err := c.cmd.Int64Slice()
		if err != nil || len(placed) != len(c.recs) {
			return nil, fmt.Errorf("redisstore: adopt: bad script reply: %v", err)
		}
		for k, r := range c.recs {
			r.unplaced = placed[k] == 0
		}
	}
	return rus, s.step("adopted")
}

// WorkspacesRefused is how many requests were refused because a
// registration would have made a workspace known past MaxWorkspaces.
func (s *Store) WorkspacesRefused() uint64 { return s.wsRefused.Load() }

// step runs the test hook after a step of a placement or a move.
func (s *Store) step(name string) error {
	if s.hookStep == nil {
		return nil
	}
	return s.hookStep(name)
}
