package redisstore

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// WorkspaceScanCount is the COUNT of each SCAN, HSCAN and SSCAN step of
// DeleteWorkspace and ListWorkspaces: each Redis call handles about this many
// entries, so a workspace of a million devices is removed in many short
// calls that never stall Redis for other clients.
const WorkspaceScanCount = 500

// WorkspaceDeletion says what DeleteWorkspace removed.
type WorkspaceDeletion struct {
	Workspace  string `json:"workspace"`
	Keys       int    `json:"redis_keys"`    // keys of the workspace's hash tag
	APIKeys    int    `json:"api_keys"`      // API keys (their records and id entries)
	IndexItems int    `json:"index_entries"` // device → workspace index entries
}

// DeleteWorkspace removes workspace ws: its API keys, the index entries of
// its devices that still name it, every key of its hash tag (devices,
// sessions, usage, members, de-duplication ids: fl:{w:ws}:*, found by SCAN
// on every master) and its entry in the set of known workspaces, in bounded
// steps of WorkspaceScanCount. Each step is idempotent, and the workspace
// stays listed until the last one, so a run that fails half-way is finished
// by running it again. A workspace that still receives events while it is
// being deleted may keep what those events wrote; delete workspaces that no
// sender uses any more (a finished load test's). Deleting an unknown
// workspace removes nothing and is not an error.
func (s *Store) DeleteWorkspace(ctx context.Context, ws string) (WorkspaceDeletion, error) {
	d := WorkspaceDeletion{Workspace: ws}
	if !fleet.ValidID(ws) {
		return d, fleet.Errorf(fleet.EINVALID, "workspace must be 1-128 characters of [A-Za-z0-9._:@-]")
	}
	// API keys first, so that access ends before anything else goes.
	for {
		n, more, err := s.deleteAPIKeys(ctx, ws)
		d.APIKeys += n
		if err != nil {
			return d, err
		}
		if !more {
			break
		}
	}
	// The index entries of its devices, read from the device hash in steps.
	var cursor uint64
	for {
		cctx, cancel := context.WithTimeout(withOp(ctx, "delete_workspace"), s.cfg.Timeout)
		kv, next, err := s.rdb.HScan(cctx, wsDevKey(ws), cursor, "*", WorkspaceScanCount).Result()
		cancel()
		if err != nil {
			return d, s.fail("delete workspace: scan devices", err)
		}
		fields := make([]string, 0, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			fields = append(fields, kv[i])
		}
		n, err := s.unindexWorkspaceDevices(ctx, ws, fields)
		d.IndexItems += n
		if err != nil {
			return d, err
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	n, err := s.deleteTagged(ctx, wsPrefix(ws)+"*")
	d.Keys += n
	if err != nil {
		return d, err
	}
	cctx, cancel := context.WithTimeout(withOp(ctx, "delete_workspace"), s.cfg.Timeout)
	defer cancel()
	if err := s.rdb.ZRem(cctx, keyWorkspaces, ws).Err(); err != nil {
		return d, s.fail("delete workspace: forget", err)
	}
	return d, nil
}

// unindexWorkspaceDevices forgets workspace ws in the placement histories
// of devices (forget.lua): a device placed only there loses its index
// entry and kept events; one that was also placed elsewhere keeps the
// rest of its history. It also drops their cached routes, and returns how
// many devices were candidates.
func (s *Store) unindexWorkspaceDevices(ctx context.Context, ws string, devices []string) (int, error) {
	if len(devices) == 0 {
		return 0, nil
	}
	forgets := newGroup(forgetScript, 0, ws)
	for _, d := range devices {
		s.cache.del(d)
		b := idxKey(bucketOf(d))
		forgets.add(b, b, d)
	}
	if err := s.exec(withOp(ctx, "delete_workspace"), forgets.calls); err != nil {
		return 0, fmt.Errorf("redisstore: delete workspace: unindex: %w", err)
	}
	return len(devices), nil
}

// deleteAPIKeys removes up to WorkspaceScanCount API keys of ws (record,
// id entry, then the listing entry) and says whether more remain.
func (s *Store) deleteAPIKeys(ctx context.Context, ws string) (n int, more bool, err error) {
	ctx, cancel := context.WithTimeout(withOp(ctx, "delete_workspace"), 2*s.cfg.Timeout)
	defer cancel()
	ids, err := s.rdb.ZRange(ctx, wsKey(ws, kKeys), 0, WorkspaceScanCount-1).Result()
	if err != nil {
		return 0, false, s.fail("delete workspace: keys", err)
	}
	if len(ids) == 0 {
		return 0, false, nil
	}
	pipe := s.rdb.Pipeline()
	hashes := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		hashes[i] = pipe.Get(ctx, apiKeyIDKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && err != redis.Nil {
		return 0, false, s.fail("delete workspace: keys", err)
	}
	pipe = s.rdb.Pipeline()
	for i, id := range ids {
		if h := hashes[i].Val(); h != "" {
			if _, err := hex.DecodeString(h); err == nil {
				pipe.Del(ctx, apiKeyKey(h))
			}
		}
		pipe.Del(ctx, apiKeyIDKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return 0, false, s.fail("delete workspace: keys", err)
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	if err := s.rdb.ZRem(ctx, wsKey(ws, kKeys), members...).Err(); err != nil {
		return 0, false, s.fail("delete workspace: keys", err)
	}
	return len(ids), len(ids) == WorkspaceScanCount, nil
}

// deleteTagged UNLINKs every key matching pattern, SCANning every master
// (on a cluster the keys of one hash tag live on one of them) in steps of
// WorkspaceScanCount.
func (s *Store) deleteTagged(ctx context.Context, pattern string) (int, error) {
	total := 0
	scan := func(ctx context.Context, c redis.Cmdable) error {
		var cursor uint64
		for {
			start := time.Now()
			cctx, cancel := context.WithTimeout(withOp(ctx, "delete_workspace"), s.cfg.Timeout)
			keys, next, err := c.Scan(cctx, cursor, pattern, WorkspaceScanCount).Result()
			if err == nil && len(keys) > 0 {
				// One hash tag, one slot: a multi-key UNLINK is allowed on a cluster.
				var n int64
				n, err = c.Unlink(cctx, keys...).Result()
				total += int(n)
			}
			cancel()
			if s.cluster { // the masters' own clients carry no observe hook
				s.observe("delete_workspace", start, err)
			}
			if err != nil {
				return err
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		// Masters are scanned one after the other: total is not shared.
		var mu sync.Mutex
		var masters []*redis.Client
		err = cc.ForEachMaster(ctx, func(_ context.Context, c *redis.Client) error {
			mu.Lock()
			defer mu.Unlock()
			masters = append(masters, c)
			return nil
		})
		for _, m := range masters {
			if err != nil {
				break
			}
			err = scan(ctx, m)
		}
	} else {
		err = scan(ctx, s.rdb)
	}
	if err != nil {
		return total, s.fail("delete workspace: scan", err)
	}
	return total, nil
}

// ListWorkspaces returns the known workspaces whose id starts with prefix
// ("" for all), sorted, read with ZSCAN in steps of WorkspaceScanCount.
func (s *Store) ListWorkspaces(ctx context.Context, prefix string) ([]string, error) {
	if prefix != "" && !fleet.ValidID(prefix) {
		return nil, fleet.Errorf(fleet.EINVALID, "prefix must be 1-128 characters of [A-Za-z0-9._:@-]")
	}
	var out []string
	var cursor uint64
	for {
		cctx, cancel := context.WithTimeout(withOp(ctx, "list_workspaces"), s.cfg.Timeout)
		ws, next, err := s.rdb.ZScan(cctx, keyWorkspaces, cursor, prefix+"*", WorkspaceScanCount).Result()
		cancel()
		if err != nil {
			return nil, s.fail("list workspaces", err)
		}
		for k := 0; k < len(ws); k += 2 { // member, score
			if strings.HasPrefix(ws[k], prefix) {
				out = append(out, ws[k])
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
