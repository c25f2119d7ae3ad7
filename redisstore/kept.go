package redisstore

// Events kept for devices without a home for them (lua/keep.lua).

// countDropped adds to KeptDropped what a script reports it dropped.
func (s *Store) countDropped(v any) {
	if n, ok := v.(int64); ok && n > 0 {
		s.keptDropped.Add(uint64(n))
	}
}

// KeptDropped is how many kept session events were dropped because their
// device had --max-kept-events kept already (the oldest go first).
func (s *Store) KeptDropped() uint64 { return s.keptDropped.Load() }
