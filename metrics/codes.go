package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// codeCounters caches the counter of each status code, so counting a request
// does not format and hash a label value every time.
type codeCounters struct {
	vec *prometheus.CounterVec
	m   sync.Map // int → prometheus.Counter
}

func (s *codeCounters) init(vec *prometheus.CounterVec) { s.vec = vec }

func (s *codeCounters) get(code int) prometheus.Counter {
	if c, ok := s.m.Load(code); ok {
		return c.(prometheus.Counter)
	}
	c := s.vec.WithLabelValues(strconv.Itoa(code))
	s.m.Store(code, c)
	return c
}
