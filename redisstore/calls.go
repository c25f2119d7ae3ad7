package redisstore

import (
	"context"
	"errors"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Script calls, grouped by the slot they run in.

// maxCallItems bounds the sessions of one script call on the rare paths
// (moves, kept events), so that replaying a device's 10,000 kept events
// is many short scripts, between which Redis serves everyone else.
const maxCallItems = 256

// group collects the calls of one script: one call per group key (a slot,
// a workspace, or "" for all on a single Redis), and a new one past limit
// items (0: no limit). Every place that batches script calls goes through
// it.
type group struct {
	script *redis.Script
	head   []any // the first arguments of every call
	limit  int
	cur    map[string]*call
	calls  []*call
}

func newGroup(sc *redis.Script, limit int, head ...any) *group {
	return &group{script: sc, head: head, limit: limit, cur: map[string]*call{}}
}

// add appends one item's args to the call of group key k, making a new
// call (routed by key, its KEYS[1]) when there is none or it is full.
func (g *group) add(k, key string, args ...any) *call {
	c := g.cur[k]
	if c == nil || g.limit > 0 && c.n == g.limit {
		c = &call{script: g.script, keys: []string{key}, args: append([]any(nil), g.head...)}
		g.cur[k] = c
		g.calls = append(g.calls, c)
	}
	c.args = append(c.args, args...)
	c.n++
	return c
}

// wsGroup is the group key of workspace ws for a script that can carry
// many workspaces on a single Redis (not on a cluster: one slot a call).
func (s *Store) wsGroup(ws string) string {
	if s.cluster {
		return ws
	}
	return ""
}

// bucketGroup is the same for an index bucket.
func (s *Store) bucketGroup(b uint32) string {
	if s.cluster {
		return idxKey(b)
	}
	return ""
}

// call is one script invocation (or, with no script, the command raw) in
// a pipeline.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	raw    []any
	cmd    *redis.Cmd
	done   bool
	// what the caller needs to route the reply
	idx  []int    // event indexes
	ws   []string // per event, its workspace
	devs []string // per device
	recs []*recon // per device or session
	sess []string // per session: its id
	kept []string // per session: its kept copy, as read ("" for none)
	rec  *recon
	n    int // items, for group
}

func (s *Store) eval(ctx context.Context, sc *redis.Script, keys []string, args ...any) (*redis.Cmd, error) {
	c := &call{script: sc, keys: keys, args: args}
	if err := s.exec(ctx, []*call{c}); err != nil {
		return nil, err
	}
	return c.cmd, nil
}

// exec runs a pipeline of script calls, reloading scripts once when Redis
// answers NOSCRIPT (a restarted or failed-over server has none) and rerunning
// only those calls: a call that got NOSCRIPT did nothing.
func (s *Store) exec(ctx context.Context, calls []*call) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		pipe := s.rdb.Pipeline()
		n := 0
		for _, c := range calls {
			if c.done {
				continue
			}
			switch {
			case c.script == nil:
				c.cmd = pipe.Do(ctx, c.raw...)
			case s.functions.Load():
				c.cmd = pipe.FCall(ctx, functionName[c.script], c.keys, c.args...)
			default:
				c.cmd = pipe.EvalSha(ctx, c.script.Hash(), c.keys, c.args...)
			}
			n++
		}
		if n == 0 {
			return nil
		}
		_, err := pipe.Exec(ctx)
		if errors.Is(err, redis.Nil) {
			err = nil // a script answered nil: its caller reads that from its reply
		}
		noscript := false
		for _, c := range calls {
			if c.done || c.cmd == nil {
				continue
			}
			if e := c.cmd.Err(); e != nil && (redis.HasErrorPrefix(e, "NOSCRIPT") || strings.Contains(e.Error(), "Function not found")) {
				noscript = true
				continue
			}
			c.done = true
		}
		if !noscript || attempt > 0 {
			if err != nil {
				// Name the file and line of a script's error.
				for _, c := range calls {
					if c.script != nil && c.cmd != nil && c.cmd.Err() != nil && c.cmd.Err() != redis.Nil {
						err = locateScriptError(c.script, s.functions.Load(), c.cmd.Err())
						break
					}
				}
			}
			return s.fail("exec", err)
		}
		if err := s.loadScripts(ctx); err != nil {
			return s.fail("load scripts", err)
		}
	}
}
