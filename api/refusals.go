package api

import (
	"log/slog"
	"sync"
	"time"
)

// refusalLogEvery is how often webhook refusals of one status are logged:
// during an outage every request is refused, and one line per request
// would flood the log.
const refusalLogEvery = 10 * time.Second

// refusalLog logs why webhooks are answered 503 (Redis unreachable or too
// slow) or 429 (the ingest queue is full) at warn level, at most once per
// refusalLogEvery and status, with the number of refusals since the last
// line. Safe for concurrent use.
type refusalLog struct {
	mu    sync.Mutex
	last  map[int]time.Time
	count map[int]int
}

func (r *refusalLog) warn(log *slog.Logger, code int, err error) {
	if code != 503 && code != 429 {
		return
	}
	now := time.Now()
	r.mu.Lock()
	if r.last == nil {
		r.last, r.count = map[int]time.Time{}, map[int]int{}
	}
	r.count[code]++
	if now.Sub(r.last[code]) < refusalLogEvery {
		r.mu.Unlock()
		return
	}
	n := r.count[code]
	r.last[code], r.count[code] = now, 0
	r.mu.Unlock()
	msg := "webhooks refused: the events could not be committed (answered 503, senders retry)"
	if code == 429 {
		msg = "webhooks refused: the ingest queue is full (answered 429, senders retry; see --queue-events)"
	}
	log.Warn(msg, "status", code, "refused_since_last_line", n, "err", err.Error())
}
