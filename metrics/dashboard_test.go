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
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// dashboardPath is the shipped Grafana dashboard, relative to this package.
var dashboardPath = filepath.Join("..", "deploy", "grafana", "dashboards", "fleetd.json")

// dashboardPanel is the part of a Grafana panel the tests read. Rows may
// hold panels of their own (collapsed rows do).
type dashboardPanel struct {
	ID          int              `json:"id"`
	Type        string           `json:"type"`
	Title       string           `json:"title"`
	Datasource  *dashboardDS     `json:"datasource"`
	Panels      []dashboardPanel `json:"panels"`
	FieldConfig struct {
		Defaults struct {
			Unit string `json:"unit"`
		} `json:"defaults"`
	} `json:"fieldConfig"`
	Targets []struct {
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

// dashboardDatasource is what every panel, target and query variable of the
// dashboard names as its data source: the dashboard's own datasource
// variable, so that a hand import into another Grafana binds it to any
// Prometheus (provisioning binds it to the default one).
const dashboardDatasource = "${datasource}"

// MustDashboardQueries parses the shipped dashboard and returns every
// PromQL expression of every panel, checking on the way that the dashboard
// imports anywhere (__inputs, a datasource variable used by every panel
// and target) and that panel ids are unique.
func MustDashboardQueries(tb testing.TB) []dashboardQuery {
	tb.Helper()
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		tb.Fatalf("dashboard: %v", err)
	}
	var d struct {
		Inputs []struct {
			Name     string `json:"name"`
			Type     string `json:"type"`
			PluginID string `json:"pluginId"`
		} `json:"__inputs"`
		UID        string           `json:"uid"`
		Title      string           `json:"title"`
		Panels     []dashboardPanel `json:"panels"`
		Templating struct {
			List []struct {
				Name       string       `json:"name"`
				Type       string       `json:"type"`
				Query      any          `json:"query"`
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
	if len(d.Inputs) != 1 || d.Inputs[0].Type != "datasource" || d.Inputs[0].PluginID != "prometheus" {
		tb.Errorf("dashboard: __inputs = %+v, want one Prometheus datasource input", d.Inputs)
	}
	if strings.Contains(string(b), `"uid": "prometheus"`) {
		tb.Errorf("dashboard: a panel is still bound to the data source uid prometheus")
	}
	dsVar := false
	for _, v := range d.Templating.List {
		if v.Type == "datasource" {
			dsVar = v.Name == "datasource" && v.Query == "prometheus"
			continue
		}
		if v.Datasource == nil || v.Datasource.UID != dashboardDatasource {
			tb.Errorf("dashboard variable %s: data source %+v, want uid %s", v.Name, v.Datasource, dashboardDatasource)
		}
	}
	if !dsVar {
		tb.Errorf("dashboard: no datasource variable named datasource of type prometheus")
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
			if p.Datasource == nil || p.Datasource.UID != dashboardDatasource {
				tb.Errorf("panel %q: data source %+v, want uid %s", p.Title, p.Datasource, dashboardDatasource)
			}
			if strings.Contains(p.Title, "inutes") && p.FieldConfig.Defaults.Unit != "m" {
				tb.Errorf("panel %q shows minutes in unit %q, want m", p.Title, p.FieldConfig.Defaults.Unit)
			}
			if len(p.Targets) == 0 {
				tb.Errorf("panel %q has no query", p.Title)
			}
			for _, t := range p.Targets {
				if t.Datasource == nil || t.Datasource.UID != dashboardDatasource {
					tb.Errorf("panel %q target %s: data source %+v, want uid %s", p.Title, t.RefID, t.Datasource, dashboardDatasource)
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

var metricNameRE = regexp.MustCompile(`\b(fleetd?|process|go)_[a-z_]+`)
var descNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// TestDashboardMetricNames checks, without a Prometheus server, that every
// metric the dashboard queries is one fleetd exports, so a renamed metric
// cannot leave a silently empty panel.
func TestDashboardMetricNames(t *testing.T) {
	var rec descRecorder
	metrics.NewWebhook(&rec)
	metrics.NewAPI(&rec)
	metrics.NewConnections(&rec, func() float64 { return 0 })
	metrics.NewBuildInfo(&rec, "v", "r", "go")
	metrics.NewReady(&rec, func() bool { return true })
	metrics.NewIngest(&rec, func() float64 { return 0 }, 1)
	metrics.NewRedis(&rec)
	metrics.NewInFlight(&rec)
	metrics.NewLimits(&rec)
	rec.MustRegister(metrics.NewFleetCollector(nil, 1, nil), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
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

// TestDashboardShowsOnCallSignals: the panels an on-call needs are there.
func TestDashboardShowsOnCallSignals(t *testing.T) {
	queried := map[string]bool{}
	for _, q := range MustDashboardQueries(t) {
		for _, name := range metricNameRE.FindAllString(q.Expr, -1) {
			queried[name] = true
		}
	}
	for _, m := range []string{"fleetd_connections_open", "fleetd_connections_refused_total", "fleetd_ingest_queue_events",
		"fleetd_ingest_commit_duration_seconds_bucket", "fleetd_redis_call_duration_seconds_bucket", "fleetd_redis_call_errors_total",
		"process_resident_memory_bytes", "go_goroutines", "fleetd_ready", "fleetd_build_info", "fleetd_requests_in_flight"} {
		if !queried[m] {
			t.Errorf("no dashboard panel queries %s", m)
		}
	}
}

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
