package redisstore

import (
	"context"
	"strconv"
	"strings"
	"time"
)

// Sessions that a placement must move home (kept events of a device that
// registers at last, sessions whose home changed) go within the commit up
// to Config.ReplayStep; the devices with more left are listed in
// fl:replays, which every replica drains in the background (RunReplays),
// ReplayStep sessions at a time; a device's score there counts how often
// it was listed, so a device listed again while a replica drains it stays
// listed. The list is in Redis, so a
// crash loses none, and draining a device twice does no harm: every step
// is idempotent.

// deferReplays lists the devices of rs that have sessions left to move.
func (s *Store) deferReplays(ctx context.Context, rs []*recon) error {
	var devices []any
	for _, r := range rs {
		if r.deferred {
			devices = append(devices, r.device)
		}
	}
	if len(devices) == 0 {
		return nil
	}
	s.replaysDeferred.Add(uint64(len(devices)))
	ctx, cancel := context.WithTimeout(withOp(ctx, "replay"), s.cfg.Timeout)
	defer cancel()
	pipe := s.rdb.Pipeline()
	for _, d := range devices {
		pipe.ZIncrBy(ctx, keyReplays, 1, d.(string))
	}
	_, err := pipe.Exec(ctx)
	return s.fail("replay", err)
}

// RunReplays drains fl:replays until ctx ends: every pause, up to 8 listed
// devices each get one more step. Run one per replica.
func (s *Store) RunReplays(ctx context.Context, pause time.Duration) {
	t := time.NewTicker(pause)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := s.ReplayStep(ctx, 8); err != nil && ctx.Err() == nil {
			s.replayErrors.Add(1)
		}
	}
}

// ReplayStep gives up to n devices listed in fl:replays one step: the
// device is brought in step again (reconcile), which moves up to
// Config.ReplayStep of its sessions home, and leaves the list when none is
// left.
func (s *Store) ReplayStep(ctx context.Context, n int) error {
	rctx, cancel := context.WithTimeout(withOp(ctx, "replay"), s.cfg.Timeout)
	listed, err := s.rdb.ZRandMemberWithScores(rctx, keyReplays, n).Result()
	cancel()
	if err != nil || len(listed) == 0 {
		return s.fail("replay", err)
	}
	devices := make([]string, len(listed))
	score := map[string]string{}
	for i, z := range listed {
		devices[i] = z.Member.(string)
		score[devices[i]] = strconv.FormatFloat(z.Score, 'f', -1, 64)
	}
	raws, err := s.lookup(ctx, devices)
	if err != nil {
		return err
	}
	var rs []*recon
	var done []any
	for k, d := range devices {
		rt := s.cache.set(strings.Clone(d), raws[k])
		if rt == nil {
			done = append(done, d, score[d]) // no history (a workspace deleted since): nothing to move
			continue
		}
		rs = append(rs, &recon{device: d, route: rt})
	}
	if len(rs) > 0 {
		if err := s.reconcile(withOp(ctx, "replay"), rs); err != nil {
			return err
		}
	}
	for _, r := range rs {
		if !r.deferred {
			done = append(done, r.device, score[r.device])
		}
	}
	if len(done) == 0 {
		return nil
	}
	return s.exec(withOp(ctx, "replay"), []*call{{script: unreplayScript, keys: []string{keyReplays}, args: done}})
}

// ReplaysDeferred counts the placements that left sessions to move in the
// background.
func (s *Store) ReplaysDeferred() uint64 { return s.replaysDeferred.Load() }
