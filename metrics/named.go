package metrics

import (
	"sync"

	"github.com/fleetd/fleetd/fleet"
	"github.com/prometheus/client_golang/prometheus"
)

// maxNamedTypes bounds the type label values that EventNamed adds to
// fleetd_webhook_events_total beyond the fleet.EventType names, whatever
// its callers pass.
const maxNamedTypes = 64

// namedEvents caches the counters of event names outside fleet.EventType.
type namedEvents struct {
	mu    sync.Mutex
	names map[string]*[fleet.NumResults]prometheus.Counter
}

// EventNamed counts one event of a sender whose event names are not
// fleet.EventType names (QuickDesk's: webhook.test, session.revoked...),
// in fleetd_webhook_events_total{type=name}. The caller folds names into
// a bounded set (ingest.QuickDeskEventNames); past maxNamedTypes distinct
// names the rest count as "unknown", so the series stay bounded anyway.
// Safe for concurrent use.
func (w *Webhook) EventNamed(name string, r fleet.Result) {
	n := &w.named
	n.mu.Lock()
	c := n.names[name]
	if c == nil {
		if len(n.names) >= maxNamedTypes {
			n.mu.Unlock()
			w.events[fleet.EventUnknown][r].Inc()
			return
		}
		if n.names == nil {
			n.names = map[string]*[fleet.NumResults]prometheus.Counter{}
		}
		c = new([fleet.NumResults]prometheus.Counter)
		for i := range c {
			c[i] = w.eventVec.WithLabelValues(name, fleet.Result(i).String())
		}
		n.names[name] = c
	}
	n.mu.Unlock()
	c[r].Inc()
}
