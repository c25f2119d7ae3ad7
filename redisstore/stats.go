package redisstore

import (
	"context"
	"strconv"
	"strings"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// The fleet state of workspaces, for the metrics.

// statsChunk is how many workspaces one Stats pipeline reads.
const statsChunk = 5000

// Stats reads the fleet state of every known workspace: StatsRange of all.
func (s *Store) Stats(ctx context.Context) ([]fleet.WorkspaceStats, error) {
	st, _, err := s.StatsRange(ctx, 0, -1)
	return st, err
}

// StatsRange implements fleet.StatsReader: the workspaces in the order
// they became known (fl:workspaces), in pipelines of statsChunk (go-redis
// splits them per node on a cluster), four commands a workspace.
func (s *Store) StatsRange(ctx context.Context, offset, count int) ([]fleet.WorkspaceStats, int, error) {
	ctx, cancel := context.WithTimeout(withOp(ctx, "stats"), 5*s.cfg.Timeout)
	defer cancel()
	stop := int64(-1)
	if count >= 0 {
		if count == 0 {
			n, err := s.rdb.ZCard(ctx, keyWorkspaces).Result()
			return nil, int(n), wrap("stats", err)
		}
		stop = int64(offset + count - 1)
	}
	pipe := s.rdb.Pipeline()
	known := pipe.ZCard(ctx, keyWorkspaces)
	names := pipe.ZRange(ctx, keyWorkspaces, int64(offset), stop)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, 0, wrap("stats", err)
	}
	wss := names.Val()
	now := s.clock()
	minLive := strconv.FormatInt(now-s.cfg.LiveSessionBound.Milliseconds(), 10)
	type cmds struct {
		devs, on, live *redis.IntCmd
		tot            *redis.MapStringStringCmd
	}
	cs := make([]cmds, len(wss))
	for lo := 0; lo < len(wss); lo += statsChunk {
		pipe := s.rdb.Pipeline()
		for i := lo; i < min(lo+statsChunk, len(wss)); i++ {
			ws := wss[i]
			cs[i] = cmds{
				devs: pipe.ZCard(ctx, wsKey(ws, kDevs)),
				on:   pipe.ZCard(ctx, wsKey(ws, kOn)),
				live: pipe.ZCount(ctx, wsKey(ws, kLive), minLive, "+inf"),
				tot:  pipe.HGetAll(ctx, wsKey(ws, kTot)),
			}
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, 0, wrap("stats", err)
		}
	}
	out := make([]fleet.WorkspaceStats, len(wss))
	for i, ws := range wss {
		st := fleet.WorkspaceStats{Workspace: ws, Devices: cs[i].devs.Val(), Online: cs[i].on.Val(), LiveSessions: cs[i].live.Val()}
		for f, v := range cs[i].tot.Val() {
			n, _ := strconv.ParseInt(v, 10, 64)
			if f == hSeconds {
				st.SessionSeconds = n
			} else if status, ok := strings.CutPrefix(f, hEnded); ok && n != 0 {
				if st.Ended == nil {
					st.Ended = map[string]int64{}
				}
				st.Ended[status] = n
			}
		}
		out[i] = st
	}
	return out, int(known.Val()), nil
}
