package redisstore

import (
	"context"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Bringing the copies of a session together at its home (keys.go).

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
	now := s.clock()
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
		tombs := newGroup(tombScript, maxCallItems, now, bound, retention)
		merges := newGroup(mergeScript, maxCallItems, now, bound, retention)
		settles := newGroup(settleScript, maxCallItems)
		stashes := newGroup(stashScript, maxCallItems, now, s.cfg.MaxKeptSessions)
		unpends := newGroup(unpendScript, maxCallItems)
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
					settles.add(ws, wsDevKey(ws), it.sid, it.r.device, raw)
				}
				continue
			}
			next = append(next, it)
			for ws := range c.live {
				if ws != home {
					tombs.add(ws, wsDevKey(ws), it.sid, home)
				}
			}
			joined := c.joined
			joined.Written, joined.hasWritten = now, true
			if home == "" {
				b := idxKey(bucketOf(it.r.device))
				stashes.add(b, b, it.sid, joined.String())
				continue
			}
			m := merges.add(home, wsDevKey(home), it.sid, joined.String())
			m.devs = append(m.devs, it.r.device)
			m.sess = append(m.sess, it.sid)
			m.kept = append(m.kept, c.pending) // dropped once the home has it
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
					if pending := c.kept[k]; pending != "" {
						d, sid := c.devs[k], c.sess[k]
						b := idxKey(bucketOf(d))
						unpends.add(b, b, d, hSession+sid, pending)
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
