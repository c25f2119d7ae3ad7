package redisstore

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

const dayMs = 86400000

// Apply implements fleet.Ingester. Events are applied in runs: a run of
// registrations, then a run of everything else, and so on, so that order
// between a registration and the events around it is kept. A run costs one
// round trip when every device's workspace is cached.
func (s *Store) Apply(ctx context.Context, events []fleet.Event, results []fleet.Result) error {
	for i := 0; i < len(events); {
		reg := events[i].Type == fleet.EventDeviceRegistered
		j := i + 1
		if reg {
			// A device registered twice in one run must be done in order.
			seen := map[string]bool{events[i].DeviceID: true}
			for j < len(events) && events[j].Type == fleet.EventDeviceRegistered && !seen[events[j].DeviceID] {
				seen[events[j].DeviceID] = true
				j++
			}
			if err := s.register(ctx, events[i:j], results[i:j]); err != nil {
				return err
			}
		} else {
			for j < len(events) && events[j].Type != fleet.EventDeviceRegistered {
				j++
			}
			if err := s.applyEvents(ctx, events[i:j], results[i:j]); err != nil {
				return err
			}
		}
		i = j
	}
	return nil
}

func (s *Store) clock() (now int64, day int64) {
	now = s.now().UnixMilli()
	return now, now / dayMs
}

// deliveryDigest is what dedupeLua keeps of a delivery id: the first 12
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

// eventArgs appends the 7 script fields of an event; id is its delivery id
// as the script wants it (raw for pendScript, digested for applyScript).
func eventArgs(args []any, e *fleet.Event, id string) []any {
	x, typ := e.Status, e.Type
	switch typ {
	case fleet.EventOnlineChanged:
		x = "0"
		if e.Online {
			x = "1"
		}
	case fleet.EventSecretRotated: // an offline change at the rotation
		typ, x = fleet.EventOnlineChanged, "0"
	}
	return append(args, int(typ), id, e.TS, e.DeviceID, e.SessionID, x, e.DurationSec)
}

// applyEvents applies non-registration events. Devices are routed to their
// workspace (cache, else the index); events of devices without one are kept
// in the device's index bucket. Events that find their device elsewhere are
// routed again, at most a few times.
func (s *Store) applyEvents(ctx context.Context, events []fleet.Event, results []fleet.Result) error {
	work := make([]int, 0, len(events))
	for i := range events {
		if events[i].Type == fleet.EventUnknown {
			results[i] = fleet.Ignored
			continue
		}
		work = append(work, i)
	}
	// staleWS[d] is a workspace the index names but that lacks the device.
	var staleWS map[string]string
	var deleted [][2]string // device, workspace it was deleted from
	for attempt := 0; len(work) > 0; attempt++ {
		if attempt == 4 {
			return fmt.Errorf("redisstore: apply: %d events still unrouted after %d attempts", len(work), attempt)
		}
		route, err := s.resolve(ctx, events, work, attempt == 0)
		if err != nil {
			return err
		}
		now, day := s.clock()
		var calls []*call
		byWS := map[string]*call{}
		prefixes := map[string]string{} // workspace → key prefix, built once per attempt
		byBucket := map[uint32]*call{}
		for _, i := range work {
			e := &events[i]
			ws := route[e.DeviceID]
			if stale, ok := staleWS[e.DeviceID]; ws != "" && !(ok && stale == ws) {
				// One call per workspace on a cluster (one slot per
				// script); one call for all on a single Redis.
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
				prefix, ok := prefixes[ws]
				if !ok {
					prefix = wsPrefix(ws)
					prefixes[ws] = prefix
				}
				c.args = eventArgs(append(c.args, prefix), e, deliveryDigest(e.ID))
				c.idx = append(c.idx, i)
				continue
			}
			b := bucketOf(e.DeviceID)
			c := byBucket[b]
			if c == nil {
				c = &call{script: pendScript, keys: []string{idxKey(b)}, args: []any{now, day}}
				byBucket[b] = c
				calls = append(calls, c)
			}
			c.args = append(eventArgs(c.args, e, e.ID), staleWS[e.DeviceID])
			c.idx = append(c.idx, i)
		}
		if err := s.exec(ctx, calls); err != nil {
			return err
		}
		next := work[:0:0]
		for _, c := range calls {
			vals, err := c.cmd.Slice()
			if err != nil || len(vals) != len(c.idx) {
				return fmt.Errorf("redisstore: apply: bad script reply: %v", err)
			}
			for k, v := range vals {
				i := c.idx[k]
				d := events[i].DeviceID
				switch v := v.(type) {
				case string: // pendScript: the device is registered in v
					s.cache.set(strings.Clone(d), strings.Clone(v))
					next = append(next, i)
				case int64:
					if v == rNotHere {
						s.cache.del(d)
						if c.script == applyScript {
							// Remember which workspace said no; if the index
							// still names it, the event is kept instead.
							if staleWS == nil {
								staleWS = map[string]string{}
							}
							staleWS[d] = route[d]
						}
						next = append(next, i)
						continue
					}
					results[i] = fleet.Result(v)
					if c.script == applyScript && v == rAccepted && events[i].Type == fleet.EventDeviceDeleted {
						deleted = append(deleted, [2]string{d, route[d]})
					}
				default:
					return fmt.Errorf("redisstore: apply: unexpected reply %T", v)
				}
			}
		}
		work = next
	}
	if len(deleted) > 0 {
		return s.unindex(ctx, deleted)
	}
	return nil
}

// resolve maps the devices of events[work] to their workspace ("" for
// none), from the cache when useCache, else from the index.
func (s *Store) resolve(ctx context.Context, events []fleet.Event, work []int, useCache bool) (map[string]string, error) {
	route := make(map[string]string, len(work))
	var missing []string
	for _, i := range work {
		d := events[i].DeviceID
		if _, ok := route[d]; ok {
			continue
		}
		if useCache {
			if ws, ok := s.cache.get(d); ok {
				route[d] = ws
				continue
			}
		}
		route[d] = ""
		missing = append(missing, d)
	}
	if len(missing) == 0 {
		return route, nil
	}
	ws, err := s.lookup(ctx, missing)
	if err != nil {
		return nil, err
	}
	for k, d := range missing {
		route[d] = ws[k]
		if ws[k] != "" {
			s.cache.set(strings.Clone(d), ws[k])
		}
	}
	return route, nil
}

// lookup reads the index for devices in one round trip.
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

// unindex drops the index entries of deleted devices (step 2 of a delete),
// only where they still name the workspace the device was deleted from.
func (s *Store) unindex(ctx context.Context, deleted [][2]string) error {
	byBucket := map[uint32]*call{}
	var calls []*call
	for _, dw := range deleted {
		s.cache.del(dw[0])
		b := bucketOf(dw[0])
		c := byBucket[b]
		if c == nil {
			c = &call{script: unindexScript, keys: []string{idxKey(b)}}
			byBucket[b] = c
			calls = append(calls, c)
		}
		c.args = append(c.args, dw[0], dw[1])
	}
	return s.exec(ctx, calls)
}

// register applies a run of registrations, at most one per device.
func (s *Store) register(ctx context.Context, events []fleet.Event, results []fleet.Result) error {
	devices := make([]string, len(events))
	for k := range events {
		devices[k] = events[k].DeviceID
	}
	old, err := s.lookup(ctx, devices)
	if err != nil {
		return err
	}
	// Presence carried by devices that move between workspaces.
	carry := make([]*deviceRecord, len(events))
	var moves []int
	for k := range events {
		if old[k] != "" && old[k] != events[k].WorkspaceID {
			moves = append(moves, k)
		}
	}
	if len(moves) > 0 {
		ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
		defer cancel()
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(moves))
		for m, k := range moves {
			cmds[m] = pipe.HGet(ctx, wsDevKey(old[k]), devices[k])
		}
		if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
			return wrap("register: read moved devices", err)
		}
		for m, k := range moves {
			if rec, err := parseDeviceRecord(cmds[m].Val()); err == nil {
				carry[k] = &rec
			}
		}
	}
	now, day := s.clock()
	byWS := map[string]*call{}
	var calls []*call
	for k := range events {
		e := &events[k]
		c := byWS[e.WorkspaceID]
		if c == nil {
			c = &call{script: registerScript, keys: []string{wsDevKey(e.WorkspaceID)}, args: []any{now, day}}
			byWS[e.WorkspaceID] = c
			calls = append(calls, c)
		}
		on, ot, ls := "", "0", "0" // a new device carries nothing
		if cr := carry[k]; cr != nil {
			on, ot, ls = strconv.Itoa(cr.On), strconv.FormatInt(cr.OT, 10), strconv.FormatInt(cr.LastSeen, 10)
		}
		cold, err := json.Marshal(coldFields{Name: e.Name, OS: e.OS, User: e.UserID})
		if err != nil {
			return fmt.Errorf("redisstore: register: %w", err)
		}
		c.args = append(c.args, deliveryDigest(e.ID), e.TS, e.DeviceID, string(cold), on, ot, ls)
		c.idx = append(c.idx, k)
	}
	if err := s.exec(ctx, calls); err != nil {
		return err
	}
	for _, c := range calls {
		vals, err := c.cmd.Int64Slice()
		if err != nil || len(vals) != len(c.idx) {
			return fmt.Errorf("redisstore: register: bad script reply: %v", err)
		}
		for n, v := range vals {
			results[c.idx[n]] = fleet.Result(v)
		}
	}

	// Step 2: point the index at the new workspace and collect kept events.
	byBucket := map[uint32]*call{}
	calls = calls[:0]
	for k := range events {
		b := bucketOf(devices[k])
		c := byBucket[b]
		if c == nil {
			c = &call{script: claimScript, keys: []string{idxKey(b)}}
			byBucket[b] = c
			calls = append(calls, c)
		}
		c.args = append(c.args, devices[k], events[k].WorkspaceID)
		c.idx = append(c.idx, k)
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	wsSeen := map[string]bool{}
	for k := range events {
		if !wsSeen[events[k].WorkspaceID] {
			wsSeen[events[k].WorkspaceID] = true
			pipe.SAdd(wctx, keyWorkspaces, events[k].WorkspaceID)
		}
	}
	if _, err := pipe.Exec(wctx); err != nil {
		return wrap("register: workspaces", err)
	}
	if err := s.exec(ctx, calls); err != nil {
		return err
	}
	var kept []fleet.Event
	var keptFields [][3]string
	for _, c := range calls {
		vals, err := c.cmd.Slice()
		if err != nil || len(vals) != len(c.idx) {
			return fmt.Errorf("redisstore: register: bad claim reply: %v", err)
		}
		for n, v := range vals {
			k := c.idx[n]
			s.cache.set(strings.Clone(devices[k]), strings.Clone(events[k].WorkspaceID))
			pairs, _ := v.([]any)
			for p := 0; p+1 < len(pairs); p += 2 {
				field, _ := pairs[p].(string)
				val, _ := pairs[p+1].(string)
				e, err := decodeKept(val)
				if err != nil {
					return fmt.Errorf("redisstore: register: kept event of %s: %w", devices[k], err)
				}
				kept = append(kept, e)
				keptFields = append(keptFields, [3]string{devices[k], field, val})
			}
		}
	}

	if s.hookAfterClaim != nil {
		s.hookAfterClaim()
	}
	// Step 3: evict moved devices from their old workspace.
	if err := s.evict(ctx, events, old, moves, carry); err != nil {
		return err
	}

	// Step 4: replay kept events, then drop them.
	if len(kept) == 0 {
		return nil
	}
	if err := s.applyEvents(ctx, kept, make([]fleet.Result, len(kept))); err != nil {
		return err
	}
	byBucket = map[uint32]*call{}
	calls = calls[:0]
	for _, f := range keptFields {
		b := bucketOf(f[0])
		c := byBucket[b]
		if c == nil {
			c = &call{script: unpendScript, keys: []string{idxKey(b)}}
			byBucket[b] = c
			calls = append(calls, c)
		}
		c.args = append(c.args, f[0], f[1], f[2])
	}
	return s.exec(ctx, calls)
}

// evict removes the moved devices (events[k] for k in moves) from their old
// workspaces. An event that another replica routed to the old copy after
// its presence was read (its cache still named the old workspace) changed
// that copy: what the evicted record says beyond carry[k] is merged into
// the new workspace by the ordering rules, so it is not lost with the copy.
func (s *Store) evict(ctx context.Context, events []fleet.Event, old []string, moves []int, carry []*deviceRecord) error {
	if len(moves) == 0 {
		return nil
	}
	byOld := map[string]*call{}
	var calls []*call
	for _, k := range moves {
		c := byOld[old[k]]
		if c == nil {
			c = &call{script: evictScript, keys: []string{wsDevKey(old[k])}}
			byOld[old[k]] = c
			calls = append(calls, c)
		}
		c.args = append(c.args, events[k].DeviceID)
		c.idx = append(c.idx, k)
	}
	if err := s.exec(ctx, calls); err != nil {
		return err
	}
	byNew := map[string]*call{}
	var adopt []*call
	for _, c := range calls {
		vals, err := c.cmd.Slice()
		if err != nil || len(vals) != len(c.idx) {
			return fmt.Errorf("redisstore: register: bad evict reply: %v", err)
		}
		for n, v := range vals {
			raw, _ := v.(string)
			rec, err := parseDeviceRecord(raw)
			k := c.idx[n]
			if err != nil || carry[k] != nil && rec.OT <= carry[k].OT && rec.LastSeen <= carry[k].LastSeen {
				continue // gone already, or nothing new since it was carried
			}
			ws := events[k].WorkspaceID
			a := byNew[ws]
			if a == nil {
				a = &call{script: adoptScript, keys: []string{wsDevKey(ws)}}
				byNew[ws] = a
				adopt = append(adopt, a)
			}
			a.args = append(a.args, events[k].DeviceID, rec.On, rec.OT, rec.LastSeen)
		}
	}
	if len(adopt) == 0 {
		return nil
	}
	return s.exec(ctx, adopt)
}

// decodeKept decodes an event kept by pendScript: a JSON array of the 7
// fields of eventArgs. Numbers may come back as numbers or strings.
func decodeKept(val string) (fleet.Event, error) {
	var f []any
	if err := json.Unmarshal([]byte(val), &f); err != nil || len(f) != 7 {
		return fleet.Event{}, fmt.Errorf("malformed %q", val)
	}
	num := func(v any) int64 {
		switch v := v.(type) {
		case float64:
			return int64(v)
		case string:
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
		return 0
	}
	str := func(v any) string { s, _ := v.(string); return s }
	e := fleet.Event{Type: fleet.EventType(num(f[0])), ID: str(f[1]), TS: num(f[2]), DeviceID: str(f[3]), SessionID: str(f[4]), DurationSec: num(f[6])}
	switch e.Type {
	case fleet.EventOnlineChanged:
		e.Online = str(f[5]) == "1"
	case fleet.EventSessionEnded:
		e.Status = str(f[5])
	}
	return e, nil
}

// deviceRecord is a device as stored in fl:{w:W}:dev (see codecLua):
// "ON,OT,LS,RT;" followed by the JSON of the cold fields.
type deviceRecord struct {
	On        int
	OT        int64
	LastSeen  int64
	RotatedAt int64
	coldFields
}

// coldFields are the device fields that only registration and unbind
// change; Go encodes them, the scripts carry them through untouched.
type coldFields struct {
	Name string `json:"n"`
	OS   string `json:"o"`
	User string `json:"u,omitempty"`
}

func parseDeviceRecord(raw string) (deviceRecord, error) {
	var r deviceRecord
	head, cold, ok := strings.Cut(raw, ";")
	f := strings.Split(head, ",")
	if !ok || len(f) != 4 {
		return r, fmt.Errorf("malformed device record %q", raw)
	}
	r.On, _ = strconv.Atoi(f[0])
	r.OT, _ = strconv.ParseInt(f[1], 10, 64)
	r.LastSeen, _ = strconv.ParseInt(f[2], 10, 64)
	r.RotatedAt, _ = strconv.ParseInt(f[3], 10, 64)
	if err := json.Unmarshal([]byte(cold), &r.coldFields); err != nil {
		return r, fmt.Errorf("malformed device record %q: %w", raw, err)
	}
	return r, nil
}

func (r *deviceRecord) device(ws, id string) fleet.Device {
	return fleet.Device{ID: id, WorkspaceID: ws, Name: r.Name, OS: r.OS, UserID: r.User, Online: r.On == 1,
		LastSeen: time.UnixMilli(r.LastSeen).UTC()}
}
