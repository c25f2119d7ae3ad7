package loadtest

import (
	"encoding/json"
	"fmt"
	"html"
	"html/template"
	"io"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

// result is everything a run produced; --json writes it as is.
type result struct {
	Tool         string            `json:"tool"`
	Started      time.Time         `json:"started"`
	Config       *config           `json:"config"`
	Target       string            `json:"target"`
	Mode         string            `json:"mode"`
	Setup        *phaseSummary     `json:"setup"`
	Load         *phaseSummary     `json:"load,omitempty"`
	Percentiles  []percentilePoint `json:"latency_percentiles"`
	VsBaseline   float64           `json:"vs_baseline,omitempty"`
	Verification *verification     `json:"verification"`
	Errors       []string          `json:"errors"`
	Passed       bool              `json:"passed"`
}

// withEmptyLists returns res with every nil list of the JSON result made
// empty, so that readers get [] rather than null.
func (res *result) withEmptyLists() *result {
	r := *res
	if r.Percentiles == nil {
		r.Percentiles = []percentilePoint{}
	}
	if r.Errors == nil {
		r.Errors = []string{}
	}
	for _, p := range []**phaseSummary{&r.Setup, &r.Load} {
		if *p != nil && (*p).Timeline == nil {
			c := **p
			c.Timeline = []timelinePoint{}
			*p = &c
		}
	}
	if v := r.Verification; v != nil {
		c := *v
		if c.Differences == nil {
			c.Differences = []difference{}
		}
		if c.Notes == nil {
			c.Notes = []string{}
		}
		r.Verification = &c
	}
	return &r
}

// latencySummary is a phase's request latency: for a closed loop from the
// first send to the final answer (retries included), for an open loop from
// the request's scheduled send time.
type latencySummary struct {
	Count  uint64  `json:"count"`
	MinMs  float64 `json:"min_ms"`
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	P90Ms  float64 `json:"p90_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p99_9_ms"`
	MaxMs  float64 `json:"max_ms"`
}

// phaseSummary is the reported form of a phaseResult. Events and requests
// count what was acknowledged; HTTPRequests counts every exchange, retries
// included.
type phaseSummary struct {
	Name            string            `json:"name"`
	Events          uint64            `json:"events"`
	DroppedEvents   uint64            `json:"dropped_events,omitempty"`
	Requests        uint64            `json:"requests"`
	HTTPRequests    uint64            `json:"http_requests"`
	DurationSec     float64           `json:"duration_sec"`
	EventsPerSec    float64           `json:"events_per_sec"`
	RequestsPerSec  float64           `json:"requests_per_sec"`
	Latency         latencySummary    `json:"latency"`
	Status          map[string]uint64 `json:"status_counts"`
	Retries         uint64            `json:"retries"`
	FailedRequests  uint64            `json:"failed_requests"`
	UnackedEvents   uint64            `json:"unacknowledged_events"`
	Server          serverCounts      `json:"server_counts"`
	CountMismatches uint64            `json:"count_mismatches"`
	Unparsable      uint64            `json:"unparsable_bodies"`
	FirstRejection  string            `json:"first_refusal,omitempty"`
	Timeline        []timelinePoint   `json:"timeline"`
}

// percentilePoint is one point of the latency-by-percentile curve.
type percentilePoint struct {
	Percentile float64 `json:"percentile"`
	Ms         float64 `json:"ms"`
}

func summarize(r phaseResult) *phaseSummary {
	secs := r.Elapsed.Seconds()
	s := &phaseSummary{
		Name:            r.Name,
		Events:          r.Events,
		DroppedEvents:   r.Dropped,
		Requests:        r.AckedRequests,
		HTTPRequests:    r.Requests,
		DurationSec:     secs,
		Status:          make(map[string]uint64),
		Retries:         r.Retries,
		FailedRequests:  r.FailedReqs,
		UnackedEvents:   r.FailedEvents,
		Server:          r.Server,
		CountMismatches: r.Mismatched,
		Unparsable:      r.Unparsable,
		FirstRejection:  r.Rejection,
		Timeline:        r.Timeline,
		Latency: latencySummary{
			Count:  r.Hist.Count(),
			MinMs:  ms(r.Hist.Min()),
			MeanMs: ms(r.Hist.Mean()),
			P50Ms:  ms(r.Hist.Quantile(0.5)),
			P90Ms:  ms(r.Hist.Quantile(0.9)),
			P99Ms:  ms(r.Hist.Quantile(0.99)),
			P999Ms: ms(r.Hist.Quantile(0.999)),
			MaxMs:  ms(r.Hist.Max()),
		},
	}
	if secs > 0 {
		s.EventsPerSec = float64(r.Events) / secs
		s.RequestsPerSec = float64(r.AckedRequests) / secs
	}
	for code, n := range r.Status {
		s.Status[strconv.Itoa(code)] = n
	}
	if r.NetErrors > 0 {
		s.Status["transport_error"] = r.NetErrors
	}
	return s
}

func percentileCurve(h *Histogram) []percentilePoint {
	if h == nil || h.Count() == 0 {
		return nil
	}
	var out []percentilePoint
	for _, q := range []float64{0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 1} {
		out = append(out, percentilePoint{Percentile: q * 100, Ms: ms(h.Quantile(q))})
	}
	return out
}

func pct(x float64) string { return strconv.FormatFloat(x*100, 'f', -1, 64) + "%" }

func writeHeader(w io.Writer, cfg *config, res *result) {
	fmt.Fprintf(w, "fleetd loadtest: run %s (seed %d) against %s", cfg.RunID, cfg.Seed, res.Target)
	if cfg.Baseline {
		fmt.Fprint(w, " (bare fasthttp baseline)")
	}
	fmt.Fprintln(w)
	bound := []string{}
	if cfg.Duration > 0 {
		bound = append(bound, cfg.Duration.String())
	}
	if cfg.Events > 0 {
		bound = append(bound, fmt.Sprintf("%d events", cfg.Events))
	}
	fmt.Fprintf(w, "  %d devices over %d workspaces (lt-%s-*); %s, %d connections, batch %d; duplicates %s, reorder %s; timed phase: %s\n",
		cfg.Devices, cfg.Workspaces, cfg.RunID, res.Mode, cfg.Connections, cfg.Batch, pct(cfg.Duplicates), pct(cfg.Reorder), strings.Join(bound, " or "))
	if cfg.DropEvery > 0 {
		fmt.Fprintf(w, "  TEST HOOK --drop-every %d: every %dth event is counted as sent but not sent; verification must fail\n", cfg.DropEvery, cfg.DropEvery)
	}
}

func statusLine(m map[string]uint64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

func writeSummary(w io.Writer, cfg *config, res *result) {
	if s := res.Setup; s != nil {
		fmt.Fprintf(w, "setup: %d registrations acknowledged in %.2fs (%.0f events/s)\n", s.Events+s.DroppedEvents, s.DurationSec, s.EventsPerSec)
	}
	if s := res.Load; s != nil {
		l := s.Latency
		fmt.Fprintf(w, "load:  %d events in %d requests over %.2fs\n", s.Events, s.Requests, s.DurationSec)
		fmt.Fprintf(w, "       %.1f events/s  %.1f requests/s (acknowledged)\n", s.EventsPerSec, s.RequestsPerSec)
		fmt.Fprintf(w, "       latency p50 %.3fms  p90 %.3fms  p99 %.3fms  p99.9 %.3fms  max %.3fms  (mean %.3fms over %d requests)\n",
			l.P50Ms, l.P90Ms, l.P99Ms, l.P999Ms, l.MaxMs, l.MeanMs, l.Count)
		fmt.Fprintf(w, "       statuses: %s\n", statusLine(s.Status))
		fmt.Fprintf(w, "       retries %d, failed requests %d, unacknowledged events %d\n", s.Retries, s.FailedRequests, s.UnackedEvents)
		fmt.Fprintf(w, "       server counts: accepted=%d duplicate=%d stale=%d ignored=%d\n", s.Server.Accepted, s.Server.Duplicate, s.Server.Stale, s.Server.Ignored)
		if s.DroppedEvents > 0 {
			fmt.Fprintf(w, "       dropped by --drop-every (never sent): %d\n", s.DroppedEvents)
		}
		if cfg.Baseline {
			fmt.Fprintf(w, "baseline: bare HTTP rate %.0f requests/s on this machine; pass --baseline-rps %.0f to a fleetd run to compare\n", s.RequestsPerSec, s.RequestsPerSec)
		}
		if res.VsBaseline > 0 {
			fmt.Fprintf(w, "       %.2fx the bare HTTP rate (%.0f requests/s)\n", res.VsBaseline, cfg.BaselineRPS)
		}
	}
	v := res.Verification
	switch {
	case v == nil:
	case !v.Ran:
		fmt.Fprintf(w, "verify: skipped (%s)\n", v.SkippedReason)
	case v.Passed && v.Mode == VerifyMetrics:
		fmt.Fprintf(w, "verify: PASS (metrics only, --verify=metrics; the REST API was not checked): %d workspaces match on /metrics (devices %d, online %d, live sessions %d, ended sessions %d, session seconds %d)\n",
			v.Workspaces, v.Expected.Devices, v.Expected.Online, v.Expected.LiveSessions, v.Expected.EndedSessions, v.Expected.SessionSeconds)
	case v.Passed:
		fmt.Fprintf(w, "verify: PASS: %d workspaces match on /metrics and the REST API of %d (devices %d, online %d, live sessions %d, ended sessions %d, session seconds %d)\n",
			v.Workspaces, v.RESTWorkspaces, v.Expected.Devices, v.Expected.Online, v.Expected.LiveSessions, v.Expected.EndedSessions, v.Expected.SessionSeconds)
	case len(v.Differences) == 0 && v.RESTSkipped > 0:
		fmt.Fprintf(w, "verify: FAIL: the REST API of %d of %d workspaces was NOT checked (no API key: give --redis-url/--redis-cluster so keys can be minted, or --api-key; --verify=metrics to check /metrics only); /metrics and the REST API of %d workspaces match\n",
			v.RESTSkipped, v.Workspaces, v.RESTWorkspaces)
	default:
		fmt.Fprintf(w, "verify: FAIL: %d differences (expected totals: devices %d, online %d, live sessions %d, ended sessions %d, session seconds %d)\n",
			len(v.Differences), v.Expected.Devices, v.Expected.Online, v.Expected.LiveSessions, v.Expected.EndedSessions, v.Expected.SessionSeconds)
		for _, d := range v.Differences {
			ws := d.Workspace
			if ws == "" {
				ws = "-"
			}
			fmt.Fprintf(w, "  DIFF workspace=%s field=%s expected=%s got=%s\n", ws, d.Field, d.Expected, d.Got)
		}
	}
	if v != nil {
		for _, n := range v.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
	}
	for _, e := range res.Errors {
		fmt.Fprintf(w, "ERROR: %s\n", e)
	}
}

func writeJSON(path string, res *result) error {
	b, err := json.MarshalIndent(res.withEmptyLists(), "", "  ")
	if err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("--json: %w", err)
	}
	return nil
}

// chartSeries is one line of a chart.
type chartSeries struct {
	Name  string
	Color string
	Pts   [][2]float64
}

type chartTick struct {
	V     float64
	Label string
}

// niceStep returns a 1, 2 or 5 × 10^n step close to x.
func niceStep(x float64) float64 {
	if x <= 0 || math.IsNaN(x) || math.IsInf(x, 0) {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(x)))
	switch f := x / e; {
	case f <= 1:
		return e
	case f <= 2:
		return 2 * e
	case f <= 5:
		return 5 * e
	default:
		return 10 * e
	}
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	default:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
}

// svgChart draws series as an inline SVG line chart. xTicks, when given,
// replace the automatic x axis labels.
func svgChart(title, xLabel, yLabel string, series []chartSeries, xTicks []chartTick) template.HTML {
	const (
		width, height          = 760.0, 280.0
		left, right, top, bott = 70.0, 36.0, 34.0, 44.0
	)
	pw, ph := width-left-right, height-top-bott
	xmax, ymax := 0.0, 0.0
	for _, s := range series {
		for _, p := range s.Pts {
			xmax, ymax = max(xmax, p[0]), max(ymax, p[1])
		}
	}
	for _, t := range xTicks {
		xmax = max(xmax, t.V)
	}
	if xmax <= 0 {
		xmax = 1
	}
	ystep := niceStep(max(ymax, 1e-9) / 5)
	ymax = math.Ceil(max(ymax, 1e-9)/ystep) * ystep
	x := func(v float64) float64 { return left + v/xmax*pw }
	y := func(v float64) float64 { return top + ph - v/ymax*ph }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s">`, width, height, html.EscapeString(title))
	b.WriteString(svgStyle)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" class="title">%s</text>`, left, html.EscapeString(title))
	for v := 0.0; v <= ymax+ystep/2; v += ystep {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="grid"/>`, left, left+pw, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="ylab">%s</text>`, left-6, y(v)+4, fmtNum(roundTo(v, ystep)))
	}
	if len(xTicks) == 0 {
		xstep := niceStep(xmax / 8)
		for v := 0.0; v <= xmax+xstep/100; v += xstep {
			xTicks = append(xTicks, chartTick{V: v, Label: fmtNum(roundTo(v, xstep))})
		}
	}
	for _, t := range xTicks {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="tick"/>`, x(t.V), x(t.V), top+ph, top+ph+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="xlab">%s</text>`, x(t.V), top+ph+16, html.EscapeString(t.Label))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="axis"/>`, left, left+pw, top+ph, top+ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="xlab">%s</text>`, left+pw/2, height-6, html.EscapeString(xLabel))
	fmt.Fprintf(&b, `<text x="14" y="%.1f" class="xlab" transform="rotate(-90 14 %.1f)">%s</text>`, top+ph/2, top+ph/2, html.EscapeString(yLabel))
	for i, s := range series {
		if len(s.Pts) == 0 {
			continue
		}
		pts := make([]string, len(s.Pts))
		for j, p := range s.Pts {
			pts[j] = fmt.Sprintf("%.1f,%.1f", x(p[0]), y(p[1]))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.Join(pts, " "), s.Color)
		if len(s.Pts) <= 60 {
			for _, p := range s.Pts {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`, x(p[0]), y(p[1]), s.Color)
			}
		}
		// Legend in the title row, right-aligned, one slot per series.
		lx := left + pw - float64(len(series)-i)*110
		fmt.Fprintf(&b, `<rect x="%.1f" y="11" width="12" height="3" fill="%s"/><text x="%.1f" y="18" class="legend">%s</text>`,
			lx, s.Color, lx+18, html.EscapeString(s.Name))
	}
	b.WriteString(`</svg>`)
	// Built from numbers and escaped text only, so it is safe to inline.
	return template.HTML(b.String())
}

// svgStyle travels inside every chart so a chart copied out of the report
// still renders the same.
const svgStyle = `<style>text{font-family:system-ui,-apple-system,"Segoe UI",sans-serif}` +
	`.title{font-weight:600;font-size:13px;fill:#1d2330}.grid{stroke:#e5e9f0}.axis,.tick{stroke:#8a94a6}` +
	`.ylab{font-size:11px;fill:#5a6475;text-anchor:end}.xlab{font-size:11px;fill:#5a6475;text-anchor:middle}` +
	`.legend{font-size:12px;fill:#1d2330}.minor{stroke:#f1f3f7}.ptlab{font-size:10px;fill:#1d2330;text-anchor:middle}</style>`

func roundTo(v, step float64) float64 {
	digits := max(0, -math.Floor(math.Log10(step)))
	p := math.Pow(10, digits)
	return math.Round(v*p) / p
}

type htmlData struct {
	Res        *result
	ConfigJSON string
	Charts     []template.HTML
	Phases     []*phaseSummary
}

const htmlPage = `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>fleetd loadtest {{.Res.Config.RunID}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px auto;max-width:820px;color:#1d2330;padding:0 12px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #dde2ea;padding-bottom:4px}
table{border-collapse:collapse;margin:6px 0}td,th{padding:3px 12px 3px 0;text-align:left;vertical-align:top}th{color:#5a6475;font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums}
.pass{color:#0a7a2f;font-weight:700}.fail{color:#b3261e;font-weight:700}
pre{background:#f5f7fa;padding:10px;overflow:auto;font-size:12px}
svg{width:100%;height:auto;margin:8px 0;background:#fbfcfe;border:1px solid #e5e9f0}
.muted{color:#5a6475}
</style></head><body>
<h1>fleetd loadtest: run {{.Res.Config.RunID}}</h1>
<div class="muted">{{.Res.Started.Format "2006-01-02 15:04:05 UTC"}} · {{.Res.Target}} · {{.Res.Mode}} · {{.Res.Config.Connections}} connections · batch {{.Res.Config.Batch}} · {{.Res.Config.Devices}} devices / {{.Res.Config.Workspaces}} workspaces</div>
<p>Result: {{if .Res.Passed}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL</span>{{end}}</p>
{{range .Res.Errors}}<p class="fail">{{.}}</p>{{end}}
{{with .Res.Load}}
<h2>Throughput and latency</h2>
<table>
<tr><th>events</th><td class="num">{{.Events}}</td><th>events/s</th><td class="num">{{printf "%.1f" .EventsPerSec}}</td></tr>
<tr><th>requests</th><td class="num">{{.Requests}}</td><th>requests/s</th><td class="num">{{printf "%.1f" .RequestsPerSec}}</td></tr>
<tr><th>duration</th><td class="num">{{printf "%.2f" .DurationSec}} s</td><th>retries / failed</th><td class="num">{{.Retries}} / {{.FailedRequests}}</td></tr>
</table>
<table>
<tr><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>
<tr><td class="num">{{printf "%.3f" .Latency.P50Ms}} ms</td><td class="num">{{printf "%.3f" .Latency.P90Ms}} ms</td><td class="num">{{printf "%.3f" .Latency.P99Ms}} ms</td><td class="num">{{printf "%.3f" .Latency.P999Ms}} ms</td><td class="num">{{printf "%.3f" .Latency.MaxMs}} ms</td><td class="num">{{printf "%.3f" .Latency.MeanMs}} ms</td></tr>
</table>
{{end}}
{{if .Res.VsBaseline}}<p>{{printf "%.2f" .Res.VsBaseline}}× the bare HTTP rate ({{printf "%.0f" .Res.Config.BaselineRPS}} requests/s).</p>{{end}}
{{range .Charts}}{{.}}{{end}}
<h2>Phases</h2>
<table><tr><th>phase</th><th>events</th><th>requests</th><th>seconds</th><th>events/s</th><th>statuses</th><th>server counts (accepted / duplicate / stale / ignored)</th></tr>
{{range .Phases}}<tr><td>{{.Name}}</td><td class="num">{{.Events}}</td><td class="num">{{.Requests}}</td><td class="num">{{printf "%.2f" .DurationSec}}</td><td class="num">{{printf "%.0f" .EventsPerSec}}</td><td>{{range $k, $v := .Status}}{{$k}}={{$v}} {{end}}</td><td>{{.Server.Accepted}} / {{.Server.Duplicate}} / {{.Server.Stale}} / {{.Server.Ignored}}</td></tr>
{{end}}</table>
<h2>Verification</h2>
{{with .Res.Verification}}{{if not .Ran}}<p>Skipped: {{.SkippedReason}}</p>{{else}}
<p>{{if .Passed}}<span class="pass">PASS</span>{{else}}<span class="fail">FAIL: {{len .Differences}} differences</span>{{end}}:
{{.Workspaces}} workspaces; /metrics {{if .MetricsChecked}}checked{{else}}not checked{{end}}; REST API checked for {{.RESTWorkspaces}} workspaces.
Expected: {{.Expected.Devices}} devices, {{.Expected.Online}} online, {{.Expected.LiveSessions}} live sessions, {{.Expected.EndedSessions}} ended sessions, {{.Expected.SessionSeconds}} session seconds.</p>
{{range .Notes}}<p class="muted">Note: {{.}}</p>{{end}}
{{if .Differences}}<table><tr><th>workspace</th><th>field</th><th>expected</th><th>got</th></tr>
{{range .Differences}}<tr><td>{{.Workspace}}</td><td>{{.Field}}</td><td>{{.Expected}}</td><td>{{.Got}}</td></tr>
{{end}}</table>{{end}}{{end}}{{end}}
<h2>Configuration</h2>
<pre>{{.ConfigJSON}}</pre>
</body></html>
`

func writeHTML(path string, res *result) error {
	tmpl, err := template.New("report").Parse(htmlPage)
	if err != nil {
		return fmt.Errorf("--html: %w", err)
	}
	cfgJSON, _ := json.MarshalIndent(res.Config, "", "  ")
	data := htmlData{Res: res, ConfigJSON: string(cfgJSON)}
	for _, p := range []*phaseSummary{res.Setup, res.Load} {
		if p != nil {
			data.Phases = append(data.Phases, p)
		}
	}
	if l := res.Load; l != nil && len(l.Timeline) > 0 {
		var ev, rq, p50, p99 chartSeries
		ev = chartSeries{Name: "events/s", Color: "#2f6fdb"}
		rq = chartSeries{Name: "requests/s", Color: "#8aa9e0"}
		p50 = chartSeries{Name: "p50", Color: "#2a9d5c"}
		p99 = chartSeries{Name: "p99", Color: "#d1495b"}
		for _, t := range l.Timeline {
			ev.Pts = append(ev.Pts, [2]float64{t.T, t.EventsPerSec})
			rq.Pts = append(rq.Pts, [2]float64{t.T, t.RequestsPerSec})
			p50.Pts = append(p50.Pts, [2]float64{t.T, t.P50Ms})
			p99.Pts = append(p99.Pts, [2]float64{t.T, t.P99Ms})
		}
		tp := []chartSeries{ev}
		if l.Requests != l.Events {
			tp = append(tp, rq)
		}
		data.Charts = append(data.Charts,
			svgChart("Throughput per second", "seconds", "per second", tp, nil),
			svgChart("Latency per second", "seconds", "ms", []chartSeries{p50, p99}, nil))
	}
	if len(res.Percentiles) > 0 {
		data.Charts = append(data.Charts, percentileChart(res.Percentiles))
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--html: %w", err)
	}
	if err := tmpl.Execute(f, data); err != nil {
		f.Close()
		return fmt.Errorf("--html: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--html: %w", err)
	}
	return nil
}

// percentileChart draws latency by percentile on log axes: x is
// -log10(1 - q) (50 %, 90 %, 99 %, 99.9 %, ... evenly spaced), y is log10 of
// the latency in ms with a tick per decade, because tail latencies span
// orders of magnitude. Every point is labelled with its value.
func percentileChart(points []percentilePoint) template.HTML {
	const (
		width, height          = 760.0, 300.0
		left, right, top, bott = 70.0, 36.0, 34.0, 44.0
		title                  = "Latency by percentile (log scales)"
	)
	pw, ph := width-left-right, height-top-bott
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range points {
		v := math.Max(p.Ms, 0.001)
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	dlo, dhi := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
	if dhi <= dlo {
		dhi = dlo + 1
	}
	const xmax = 5.0 // percentileX(100)
	x := func(v float64) float64 { return left + v/xmax*pw }
	y := func(ms float64) float64 {
		return top + ph - (math.Log10(math.Max(ms, 0.001))-dlo)/(dhi-dlo)*ph
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" role="img" aria-label="%s" class="percentiles">`, width, height, title)
	b.WriteString(svgStyle)
	fmt.Fprintf(&b, `<text x="%.0f" y="18" class="title">%s</text>`, left, title)
	for d := dlo; d <= dhi; d++ {
		v := math.Pow(10, d)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="grid"/>`, left, left+pw, y(v), y(v))
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="ylab">%s</text>`, left-6, y(v)+4, fmtNum(roundTo(v, v)))
		if d < dhi {
			for _, m := range []float64{2, 5} {
				fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="grid minor"/>`, left, left+pw, y(m*v), y(m*v))
			}
		}
	}
	ticks := []chartTick{}
	for _, p := range []float64{50, 90, 99, 99.9, 99.99} {
		ticks = append(ticks, chartTick{V: percentileX(p), Label: strconv.FormatFloat(p, 'f', -1, 64) + "%"})
	}
	ticks = append(ticks, chartTick{V: percentileX(100), Label: "max"})
	for _, t := range ticks {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="tick"/>`, x(t.V), x(t.V), top+ph, top+ph+4)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="xlab">%s</text>`, x(t.V), top+ph+16, t.Label)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%.1f" y2="%.1f" class="axis"/>`, left, left+pw, top+ph, top+ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="xlab">percentile</text>`, left+pw/2, height-6)
	fmt.Fprintf(&b, `<text x="14" y="%.1f" class="xlab" transform="rotate(-90 14 %.1f)">ms (log)</text>`, top+ph/2, top+ph/2)
	const color = "#7b4fd1"
	pts := make([]string, len(points))
	for i, p := range points {
		pts[i] = fmt.Sprintf("%.1f,%.1f", x(percentileX(p.Percentile)), y(p.Ms))
	}
	fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"/>`, strings.Join(pts, " "), color)
	for i, p := range points {
		px, py := x(percentileX(p.Percentile)), y(p.Ms)
		// Labels alternate above and below the line so neighbours do not overlap.
		ly := py - 8
		if i%2 == 1 {
			ly = py + 16
		}
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, px, py, color)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="ptlab">%s</text>`, px, ly, fmtMs(p.Ms))
	}
	b.WriteString(`</svg>`)
	// Built from numbers and fixed text only, so it is safe to inline.
	return template.HTML(b.String())
}

// fmtMs prints a latency with about three significant digits.
func fmtMs(ms float64) string {
	switch {
	case ms >= 100:
		return strconv.FormatFloat(ms, 'f', 0, 64) + " ms"
	case ms >= 10:
		return strconv.FormatFloat(ms, 'f', 1, 64) + " ms"
	}
	return strconv.FormatFloat(ms, 'f', 2, 64) + " ms"
}

// percentileX places a percentile on a log axis of 1/(1-q): 90 % → 1,
// 99 % → 2, 99.9 % → 3; the maximum goes one step after 99.99 %.
func percentileX(p float64) float64 {
	if p >= 100 {
		return 5
	}
	return -math.Log10(1 - p/100)
}
