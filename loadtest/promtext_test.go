package loadtest

import (
	"math"
	"strings"
	"testing"
)

func TestParsePromText(t *testing.T) {
	const text = `# HELP fleet_devices Registered devices.
# TYPE fleet_devices gauge
fleet_devices{workspace="acme"} 12
fleet_devices{ workspace = "we\"ird\\ws\n" , } 3 1700000000000
fleet_sessions_ended_total{status="success",workspace="acme"} 4e+00
fleet_session_seconds_total{workspace="acme"} +Inf
fleet_sessions_live{workspace="acme"} NaN
go_goroutines 7
  process_up   1
# EOF
`
	all, err := parsePromText(strings.NewReader(text), nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 7 {
		t.Fatalf("got %d samples, want 7: %+v", len(all), all)
	}
	fleet, err := parsePromText(strings.NewReader(text), func(n string) bool { return strings.HasPrefix(n, "fleet_") })
	if err != nil {
		t.Fatal(err)
	}
	if len(fleet) != 5 {
		t.Fatalf("filter kept %d samples, want 5", len(fleet))
	}
	checks := []struct {
		i      int
		name   string
		labels map[string]string
		value  float64
	}{
		{0, "fleet_devices", map[string]string{"workspace": "acme"}, 12},
		{1, "fleet_devices", map[string]string{"workspace": "we\"ird\\ws\n"}, 3},
		{2, "fleet_session_seconds_total", map[string]string{"workspace": "acme"}, math.Inf(1)},
		{3, "fleet_sessions_ended_total", map[string]string{"status": "success", "workspace": "acme"}, 4},
	}
	for _, c := range checks {
		s := fleet[c.i]
		if s.name != c.name || s.value != c.value || len(s.labels) != len(c.labels) {
			t.Errorf("sample %d = %+v", c.i, s)
		}
		for k, v := range c.labels {
			if s.labels[k] != v {
				t.Errorf("sample %d label %s = %q, want %q", c.i, k, s.labels[k], v)
			}
		}
	}
	if !math.IsNaN(fleet[4].value) {
		t.Errorf("NaN parsed as %v", fleet[4].value)
	}
}

func TestParsePromTextErrors(t *testing.T) {
	for name, line := range map[string]string{
		"no value":          "fleet_devices{workspace=\"a\"}",
		"bad value":         "fleet_devices 12x",
		"unterminated":      "fleet_devices{workspace=\"a} 1",
		"unquoted":          "fleet_devices{workspace=a} 1",
		"missing equals":    "fleet_devices{workspace\"a\"} 1",
		"bad name":          "{workspace=\"a\"} 1",
		"too many fields":   "fleet_devices 1 2 3",
		"missing separator": "fleet_devices{a=\"1\" b=\"2\"} 1",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := parsePromText(strings.NewReader(line+"\n"), nil); err == nil {
				t.Errorf("accepted %q", line)
			}
		})
	}
}

func FuzzParsePromText(f *testing.F) {
	f.Add("fleet_devices{workspace=\"a\"} 1\n")
	f.Add("# HELP x y\nx{a=\"\\\"\",b=\"\\n\"} NaN 17\n")
	f.Add("x{} -Inf\n")
	f.Fuzz(func(t *testing.T, s string) {
		samples, err := parsePromText(strings.NewReader(s), nil)
		if err == nil {
			for _, smp := range samples {
				if smp.name == "" {
					t.Fatalf("sample without a name from %q", s)
				}
			}
		}
	})
}
