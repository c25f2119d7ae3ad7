package redisstore

import (
	"context"
	"fmt"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// Usage of a period.

// Usage implements fleet.Reader.
func (s *Store) Usage(ctx context.Context, ws string, from, to time.Time) (fleet.Usage, error) {
	u := fleet.Usage{From: from, To: to}
	now := s.clock()
	bound := s.cfg.LiveSessionBound.Milliseconds()
	cmd, err := s.eval(ctx, usageScript, []string{wsDevKey(ws)}, from.UnixMilli(), to.UnixMilli(), now, bound)
	if err != nil {
		return u, err
	}
	v, err := cmd.Int64Slice()
	if err != nil || len(v) != 3 {
		return u, fmt.Errorf("redisstore: usage: bad reply: %v", err)
	}
	u.SessionSeconds, u.ActiveDevices, u.Devices = v[0], v[1], v[2]
	return u, nil
}
