package redisstore

// Housekeeping of workspaces (lua/sweep.lua).

// sweeps returns the housekeeping calls due for the workspaces a commit
// touches: each at most once a minute per replica (sweep.lua).
func (s *Store) sweeps(applies []*call, now int64) []*call {
	var out []*call
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	if len(s.swept) > 100000 {
		clear(s.swept)
	}
	for _, c := range applies {
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
