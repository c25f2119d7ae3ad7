package metrics

import (
	"strconv"
	"testing"

	"github.com/fleetd/fleetd/fleet"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestEventNamed counts named events next to the typed ones, in the same
// family, and holds the type label bound past maxNamedTypes names.
func TestEventNamed(t *testing.T) {
	reg := prometheus.NewRegistry()
	w := NewWebhook(reg)
	w.EventNamed("webhook.test", fleet.Ignored)
	w.EventNamed("webhook.test", fleet.Ignored)
	w.EventNamed("session.revoked", fleet.Invalid)
	w.Event(fleet.EventOnlineChanged, fleet.Accepted)
	w.EventNamed("device.online.changed", fleet.Accepted) // the same series as the typed name
	vec := w.eventVec
	for _, tc := range []struct {
		typ, result string
		want        float64
	}{
		{"webhook.test", "ignored", 2},
		{"session.revoked", "invalid", 1},
		{"device.online.changed", "accepted", 2},
	} {
		if got := testutil.ToFloat64(vec.WithLabelValues(tc.typ, tc.result)); got != tc.want {
			t.Errorf("%s/%s = %v, want %v", tc.typ, tc.result, got, tc.want)
		}
	}
	before := testutil.CollectAndCount(vec)
	for i := range maxNamedTypes + 10 {
		w.EventNamed("name-"+strconv.Itoa(i), fleet.Ignored)
	}
	added := testutil.CollectAndCount(vec) - before
	// Each new name brings its NumResults series; the ones past the bound
	// count as unknown.
	if max := (maxNamedTypes - 3) * int(fleet.NumResults); added > max {
		t.Fatalf("%d series added, want at most %d", added, max)
	}
	if got := testutil.ToFloat64(vec.WithLabelValues("unknown", "ignored")); got < 10 {
		t.Fatalf("unknown/ignored = %v, want the names past the bound (>= 10)", got)
	}
	if problems, err := testutil.CollectAndLint(vec); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}
