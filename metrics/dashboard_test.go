package metrics_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fleetd/fleetd/metrics"
	"github.com/prometheus/client_golang/prometheus"
)

// dashboardPath is the shipped Grafana dashboard, relative to this package.
var dashboardPath = filepath.Join("..", "deploy", "grafana", "dashboards", "fleetd.json")

// dashboardPanel is the part of a Grafana panel the tests read. Rows may
// hold panels of their own (collapsed rows do).
type dashboardPanel struct {
	ID         int              `json:"id"`
	Type       string           `json:"type"`
	Title      string           `json:"title"`
	Datasource *dashboardDS     `json:"datasource"`
	Panels     []dashboardPanel `json:"panels"`
	Targets    []struct {
		Expr       string       `json:"expr"`
		RefID      string       `json:"refId"`
		Datasource *dashboardDS `json:"datasource"`
	} `json:"targets"`
}

type dashboardDS struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type dashboardQuery struct {
	Panel string
	Expr  string
}

// MustDashboardQueries parses the shipped dashboard and returns every
// PromQL expression of every panel, checking on the way that panels and
// targets use the provisioned data source and that panel ids are unique.
func MustDashboardQueries(tb testing.TB) []dashboardQuery {
	tb.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		tb.Fatalf("dashboard: %v", err)
	}
	var d struct {
		UID        string           `json:"uid"`
		Title      string           `json:"title"`
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string       `json:"name"`
				Datasource *dashboardDS `json:"datasource"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		tb.Fatalf("dashboard: %v", err)
	}
	if d.UID == "" || d.Title == "" {
		tb.Errorf("dashboard: uid %q and title %q must be set", d.UID, d.Title)
	}
	for _, v := range d.Templating.List {
		if v.Datasource == nil || v.Datasource.UID != "prometheus" {
			tb.Errorf("dashboard variable %s: data source %+v, want uid prometheus", v.Name, v.Datasource)
		}
	}
	var out []dashboardQuery
	ids := map[int]string{}
	var walk func([]dashboardPanel)
	walk = func(ps []dashboardPanel) {
		for _, p := range ps {
			if prev, ok := ids[p.ID]; ok {
				tb.Errorf("dashboard: panels %q and %q share id %d", prev, p.Title, p.ID)
			}
			ids[p.ID] = p.Title
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if p.Datasource == nil || p.Datasource.UID != "prometheus" {
				tb.Errorf("panel %q: data source %+v, want uid prometheus", p.Title, p.Datasource)
			}
			if len(p.Targets) == 0 {
				tb.Errorf("panel %q has no query", p.Title)
			}
			for _, t := range p.Targets {
				if t.Datasource == nil || t.Datasource.UID != "prometheus" {
					tb.Errorf("panel %q target %s: data source %+v, want uid prometheus", p.Title, t.RefID, t.Datasource)
				}
				if strings.TrimSpace(t.Expr) == "" {
					tb.Errorf("panel %q target %s: empty expr", p.Title, t.RefID)
				}
				out = append(out, dashboardQuery{Panel: p.Title, Expr: t.Expr})
			}
		}
	}
	walk(d.Panels)
	if len(out) == 0 {
		tb.Fatal("dashboard: no queries")
	}
	return out
}

// dashboardVars replaces the Grafana variables the dashboard uses with what
// Grafana would send by default: every workspace, and a rate window.
var dashboardVars = strings.NewReplacer(`$workspace`, `.*`, `$__rate_interval`, `1m`)

// ExpandDashboardExpr substitutes the dashboard variables; it fails on a
// variable it does not know, so a new one cannot slip past the tests.
func ExpandDashboardExpr(tb testing.TB, expr string) string {
	tb.Helper()
	e := dashboardVars.Replace(expr)
	if strings.Contains(e, "$") {
		tb.Fatalf("dashboard query %q uses a variable the tests do not substitute", expr)
	}
	return e
}

var metricNameRE = regexp.MustCompile(`\bfleetd?_[a-z_]+`)
var descNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// TestDashboardMetricNames checks, without a Prometheus server, that every
// metric the dashboard queries is one fleetd exports, so a renamed metric
// cannot leave a silently empty panel.
func TestDashboardMetricNames(t *testing.T) {
	var rec descRecorder
	metrics.NewWebhook(&rec)
	metrics.NewAPI(&rec)
	rec.MustRegister(metrics.NewFleetCollector(nil, 1, nil))
	known := map[string]bool{}
	for _, d := range rec.descs {
		if m := descNameRE.FindStringSubmatch(d.String()); m != nil {
			known[m[1]] = true
		}
	}
	for _, q := range MustDashboardQueries(t) {
		ExpandDashboardExpr(t, q.Expr)
		for _, name := range metricNameRE.FindAllString(q.Expr, -1) {
			base := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suf); ok && known[b] {
					base = b
				}
			}
			if !known[base] {
				names := make([]string, 0, len(known))
				for n := range known {
					names = append(names, n)
				}
				slices.Sort(names)
				t.Errorf("panel %q queries %s, which fleetd does not export (known: %v)", q.Panel, name, names)
			}
		}
	}
}

// descRecorder is a prometheus.Registerer that keeps the descriptions of
// what is registered: vectors without children are invisible to Gather.
type descRecorder struct{ descs []*prometheus.Desc }

func (r *descRecorder) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc, 16)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for d := range ch {
		r.descs = append(r.descs, d)
	}
	return nil
}

func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		r.Register(c)
	}
}

func (r *descRecorder) Unregister(prometheus.Collector) bool { return false }
