package loadtest

import (
	"fmt"
	"io"
	"sort"

	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"
)

// sample is one sample of the Prometheus text exposition format.
type sample struct {
	name   string
	labels map[string]string
	value  float64
}

// parsePromText reads the Prometheus text format (0.0.4, what the verifier
// asks /metrics for) with prometheus/common's parser and returns the
// samples of gauges, counters and untyped series whose metric name keep
// accepts (all when keep is nil), ordered by name and then as they came.
// Summaries and histograms are not sampled: the verifier reads none.
func parsePromText(r io.Reader, keep func(name string) bool) ([]sample, error) {
	p := expfmt.NewTextParser(pmodel.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	names := make([]string, 0, len(fams))
	for name := range fams {
		if keep == nil || keep(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var out []sample
	for _, name := range names {
		for _, m := range fams[name].GetMetric() {
			var v float64
			switch {
			case m.Gauge != nil:
				v = m.Gauge.GetValue()
			case m.Counter != nil:
				v = m.Counter.GetValue()
			case m.Untyped != nil:
				v = m.Untyped.GetValue()
			default:
				continue
			}
			s := sample{name: name, value: v}
			for _, l := range m.GetLabel() {
				if s.labels == nil {
					s.labels = make(map[string]string, len(m.GetLabel()))
				}
				s.labels[l.GetName()] = l.GetValue()
			}
			out = append(out, s)
		}
	}
	return out, nil
}
