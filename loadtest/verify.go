package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// difference is one way fleetd's state differs from what the acknowledged
// events imply.
type difference struct {
	Workspace string `json:"workspace"`
	Field     string `json:"field"`
	Expected  string `json:"expected"`
	Got       string `json:"got"`
}

// verification is the outcome of --verify.
type verification struct {
	Ran             bool         `json:"ran"`
	Passed          bool         `json:"passed"`
	Workspaces      int          `json:"workspaces"`
	MetricsChecked  bool         `json:"metrics_checked"`
	RESTWorkspaces  int          `json:"rest_workspaces_checked"`
	RESTSkipped     int          `json:"rest_workspaces_skipped"`
	Mode            string       `json:"mode"`
	AckedEvents     int64        `json:"acknowledged_events"`
	UnackedEvents   int64        `json:"unacknowledged_events"`
	Expected        expectTotals `json:"expected_totals"`
	Differences     []difference `json:"differences"`
	Notes           []string     `json:"notes"`
	SkippedReason   string       `json:"skipped_reason,omitempty"`
	MinDupPlusStale uint64       `json:"min_duplicate_plus_stale"`
}

// expectTotals sums the expected state over all workspaces, for the report.
type expectTotals struct {
	Devices        int64 `json:"devices"`
	Online         int64 `json:"online"`
	LiveSessions   int64 `json:"live_sessions"`
	EndedSessions  int64 `json:"ended_sessions"`
	SessionSeconds int64 `json:"session_seconds"`
}

func (v *verification) diff(ws, field string, expected, got any) {
	v.Differences = append(v.Differences, difference{Workspace: ws, Field: field, Expected: fmt.Sprint(expected), Got: fmt.Sprint(got)})
}

// expectation is what the acknowledged events imply.
type expectation struct {
	state []wsState
	// minDupStale is a lower bound of duplicate+stale the server must have
	// counted: redeliveries and late deliveries sent after what they follow
	// was acknowledged. Natural reordering of concurrent requests can only
	// add to it.
	minDupStale uint64
	acked       int64
	unacked     int64
}

// expect replays every acknowledged delivery, in acknowledgement order,
// through the reference model. Deliveries dropped by --drop-every count as
// acknowledged: that is the point of the hook.
func expect(p *plan) expectation {
	var acked []*request
	var x expectation
	for _, r := range p.all {
		switch r.state.Load() {
		case reqAcked:
			acked = append(acked, r)
			x.acked += int64(len(r.dels))
		case reqFailed:
			x.unacked += int64(len(r.dels))
		}
	}
	sort.Slice(acked, func(i, j int) bool { return acked[i].ackSeq < acked[j].ackSeq })
	m := newModel(p.fl, p.gen.events)
	for _, r := range acked {
		for _, d := range r.dels {
			m.apply(d.ev)
			if d.kind == deliveryFresh || d.dropped {
				continue
			}
			if dep := p.firstReq[d.depEv]; dep != nil && dep != r && dep.state.Load() == reqAcked {
				x.minDupStale++
			}
		}
	}
	x.state = m.state()
	return x
}

// verifier compares fleetd with an expectation.
type verifier struct {
	base   string
	client *http.Client
	fl     *fleet
	keyFor func(ctx context.Context, ws string) (string, bool, error)
	// checkUsage is false when the UTC month changed during the run, so the
	// default usage period no longer holds every session.
	checkUsage bool
	// restWanted is --verify=full: every workspace's REST API must be
	// checked, and one that could not be (no key) fails the run.
	restWanted bool
}

func newVerifyClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second}
}

// checkMetrics compares the fleet_* series of /metrics with x.
func (vf *verifier) checkMetrics(ctx context.Context, x expectation, v *verification) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, vf.base+"/metrics", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := vf.client.Do(req)
	if err != nil {
		return fmt.Errorf("GET /metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /metrics: status %d", resp.StatusCode)
	}
	samples, err := parsePromText(resp.Body, func(n string) bool { return strings.HasPrefix(n, "fleet_") })
	if err != nil {
		return err
	}
	type key struct{ name, ws, status string }
	got := make(map[key]float64)
	for _, s := range samples {
		k := key{name: s.name, ws: s.labels["workspace"], status: s.labels["status"]}
		if _, dup := got[k]; dup {
			v.diff(k.ws, s.name+" series", "one series", "several with the same labels")
		}
		got[k] = s.value
	}
	for w, st := range x.state {
		ws := vf.fl.workspaceID(w)
		check := func(name, status string, want int64, mayBeAbsent bool) {
			field := name
			if status != "" {
				field = fmt.Sprintf("%s{status=%q}", name, status)
			}
			g, ok := got[key{name, ws, status}]
			switch {
			case !ok && !(mayBeAbsent && want == 0):
				v.diff(ws, "/metrics "+field, want, "missing")
			case ok && g != float64(want):
				v.diff(ws, "/metrics "+field, want, strconv.FormatFloat(g, 'f', -1, 64))
			}
		}
		check("fleet_devices", "", st.Devices, false)
		check("fleet_devices_online", "", st.Online, false)
		check("fleet_sessions_live", "", st.LiveSessions, false)
		check("fleet_session_seconds_total", "", st.SessionSeconds, false)
		for s := range numStatuses {
			check("fleet_sessions_ended_total", statusName(s), st.Ended[s], true)
		}
		for k, g := range got {
			if k.ws == ws && k.name == "fleet_sessions_ended_total" && !knownStatus(k.status) && g != 0 {
				v.diff(ws, fmt.Sprintf("/metrics fleet_sessions_ended_total{status=%q}", k.status), 0, g)
			}
		}
	}
	v.MetricsChecked = true
	return nil
}

func knownStatus(s string) bool {
	for st := range numStatuses {
		if statusName(st) == s {
			return true
		}
	}
	return false
}

// apiGet GETs path with the workspace key and decodes the JSON reply.
func (vf *verifier) apiGet(ctx context.Context, key, path string, dst any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, vf.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("x-api-key", key)
	resp, err := vf.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		msg := strings.TrimSpace(string(body))
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return fmt.Errorf("status %d %s", resp.StatusCode, msg)
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("bad JSON: %w", err)
	}
	return nil
}

type usageReply struct {
	SessionMinutes *float64 `json:"session_minutes"`
	SessionSeconds *float64 `json:"session_seconds"`
	ActiveDevices  *float64 `json:"active_devices"`
	Devices        *float64 `json:"devices"`
}

type devicesPage struct {
	Items []struct {
		ID     string `json:"id"`
		Online *bool  `json:"online"`
	} `json:"items"`
	NextCursor *string `json:"next_cursor"`
}

// walkDevices lists every page of /api/v1/devices (filtered by ?online= when
// online is not empty) and returns
// id → online. It reports pagination faults (repeats, short middle pages,
// loops) as differences.
func (vf *verifier) walkDevices(ctx context.Context, ws, key, online string, v *verification) (map[string]bool, error) {
	const limit = 500
	field := "GET /api/v1/devices"
	if online != "" {
		field += "?online=" + online
	}
	seen := make(map[string]bool)
	cursors := make(map[string]bool)
	cursor := ""
	maxPages := vf.fl.devices/limit + 10
	for page := 0; ; page++ {
		if page >= maxPages {
			v.diff(ws, field+" pages", fmt.Sprintf("at most %d", maxPages), "more (cursor loop?)")
			return seen, nil
		}
		params := url.Values{"limit": {strconv.Itoa(limit)}}
		if online != "" {
			params.Set("online", online)
		}
		if cursor != "" {
			params.Set("cursor", cursor)
		}
		path := "/api/v1/devices?" + params.Encode()
		var pg devicesPage
		if err := vf.apiGet(ctx, key, path, &pg); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for _, it := range pg.Items {
			if _, dup := seen[it.ID]; dup {
				v.diff(ws, field, it.ID+" listed once", "listed twice")
			}
			seen[it.ID] = it.Online != nil && *it.Online
		}
		if pg.NextCursor == nil || *pg.NextCursor == "" {
			return seen, nil
		}
		if len(pg.Items) < limit {
			v.diff(ws, field+" page size", fmt.Sprintf("%d items on a page that has a next_cursor", limit), len(pg.Items))
		}
		if cursors[*pg.NextCursor] {
			v.diff(ws, field+" next_cursor", "a new cursor", "a cursor seen before")
			return seen, nil
		}
		cursors[*pg.NextCursor] = true
		cursor = *pg.NextCursor
	}
}

// checkREST compares usage and device lists of one workspace with st.
func (vf *verifier) checkREST(ctx context.Context, w int, key string, st wsState, v *verification) {
	ws := vf.fl.workspaceID(w)
	var u usageReply
	if err := vf.apiGet(ctx, key, "/api/v1/usage", &u); err != nil {
		v.diff(ws, "GET /api/v1/usage", "200 with usage", err.Error())
	} else {
		num := func(field string, p *float64, want int64) {
			switch {
			case p == nil:
				v.diff(ws, "usage."+field, want, "missing")
			case *p != float64(want):
				v.diff(ws, "usage."+field, want, strconv.FormatFloat(*p, 'f', -1, 64))
			}
		}
		num("devices", u.Devices, st.Devices)
		num("active_devices", u.ActiveDevices, st.ActiveDevices)
		if vf.checkUsage {
			num("session_seconds", u.SessionSeconds, st.SessionSeconds)
			num("session_minutes", u.SessionMinutes, st.SessionSeconds/60)
		}
	}

	wantOnline := make(map[string]bool, len(st.OnlineIDs))
	for _, d := range st.OnlineIDs {
		wantOnline[vf.fl.deviceID(d)] = true
	}
	online, err := vf.walkDevices(ctx, ws, key, "true", v)
	if err != nil {
		v.diff(ws, "GET /api/v1/devices?online=true", "200 pages", err.Error())
	} else {
		if int64(len(online)) != st.Online {
			v.diff(ws, "online devices listed (?online=true)", st.Online, len(online))
		}
		for _, id := range sortedKeys(wantOnline) {
			if _, ok := online[id]; !ok {
				v.diff(ws, "?online=true lists "+id, "listed (online)", "not listed")
			}
		}
		for _, id := range sortedKeys(online) {
			if !wantOnline[id] {
				v.diff(ws, "?online=true lists "+id, "not listed (offline or unknown)", "listed")
			}
		}
	}

	all, err := vf.walkDevices(ctx, ws, key, "", v)
	if err != nil {
		v.diff(ws, "GET /api/v1/devices", "200 pages", err.Error())
		return
	}
	if int64(len(all)) != st.Devices {
		v.diff(ws, "devices listed", st.Devices, len(all))
	}
	wantAll := make(map[string]bool, len(st.DeviceIDs))
	for _, d := range st.DeviceIDs {
		id := vf.fl.deviceID(d)
		wantAll[id] = true
		on, ok := all[id]
		switch {
		case !ok:
			v.diff(ws, "device "+id, "listed", "not listed")
		case on != wantOnline[id]:
			v.diff(ws, "device "+id+" online", wantOnline[id], on)
		}
	}
	for _, id := range sortedKeys(all) {
		if !wantAll[id] {
			v.diff(ws, "device "+id, "not listed", "listed")
		}
	}
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// verify runs every check and fills a verification. Differences in
// acknowledgement counts are reported along with state differences.
func verify(ctx context.Context, vf *verifier, x expectation, counts countFacts, v *verification, stderr io.Writer) {
	v.Ran = true
	v.Workspaces = len(x.state)
	v.AckedEvents, v.UnackedEvents = x.acked, x.unacked
	v.MinDupPlusStale = x.minDupStale
	for _, st := range x.state {
		v.Expected.Devices += st.Devices
		v.Expected.Online += st.Online
		v.Expected.LiveSessions += st.LiveSessions
		v.Expected.SessionSeconds += st.SessionSeconds
		for _, n := range st.Ended {
			v.Expected.EndedSessions += n
		}
	}
	if x.unacked > 0 {
		v.Notes = append(v.Notes, fmt.Sprintf("%d events were never acknowledged: fleetd may or may not have applied them, so differences may stem from them", x.unacked))
	}
	if counts.mismatched > 0 {
		v.diff("", "webhook 200 bodies", "accepted+duplicate+stale+ignored = events in the request", fmt.Sprintf("%d answers that do not add up", counts.mismatched))
	}
	if counts.unparsable > 0 {
		v.diff("", "webhook 200 bodies", `{"accepted":N,"duplicate":N,"stale":N,"ignored":N}`, fmt.Sprintf("%d unparsable answers", counts.unparsable))
	}
	if counts.server.Ignored != 0 {
		v.diff("", "webhook ignored count", 0, counts.server.Ignored)
	}
	if counts.dropEvery == 0 && counts.server.Duplicate+counts.server.Stale < x.minDupStale {
		v.diff("", "webhook duplicate+stale count", fmt.Sprintf(">= %d (redeliveries and late online changes sent after what they follow was acked)", x.minDupStale), counts.server.Duplicate+counts.server.Stale)
	}

	// fleetd answers concurrent scrapes from one rendering, up to a second
	// old (metrics.ShareFor): another scraper (Prometheus) may just have
	// had one made before the last events were committed. A scrape that
	// differs is taken again once that has passed; the state no longer
	// changes, so a later scrape can only be fresher.
	before := len(v.Differences)
	err := vf.checkMetrics(ctx, x, v)
	for try := 0; err == nil && len(v.Differences) > before && try < 2; try++ {
		select {
		case <-ctx.Done():
		case <-time.After(1100 * time.Millisecond):
			v.Differences = v.Differences[:before]
			err = vf.checkMetrics(ctx, x, v)
		}
	}
	if err != nil {
		v.diff("", "/metrics", "readable fleet_* series", err.Error())
	}

	if !vf.restWanted {
		v.Mode = VerifyMetrics
		v.Notes = append(v.Notes, "--verify=metrics: the REST API was not checked")
		v.Passed = len(v.Differences) == 0
		return
	}
	v.Mode = VerifyFull
	checked, missing := 0, 0
	for w, st := range x.state {
		ws := vf.fl.workspaceID(w)
		key, ok, err := vf.keyFor(ctx, ws)
		switch {
		case err != nil:
			v.diff(ws, "API key", "minted", err.Error())
			continue
		case !ok:
			missing++
			continue
		}
		vf.checkREST(ctx, w, key, st, v)
		checked++
	}
	v.RESTWorkspaces, v.RESTSkipped = checked, missing
	if missing > 0 {
		msg := fmt.Sprintf("REST API verification SKIPPED for %d of %d workspaces: no API key (give the Redis flags, --redis-url or --redis-cluster, so keys can be minted, or --api-key ws=key,...; --verify=metrics checks /metrics only); /metrics was still checked", missing, len(x.state))
		v.Notes = append(v.Notes, msg)
		fmt.Fprintf(stderr, "\n!!! %s\n\n", msg)
	}
	if !vf.checkUsage {
		v.Notes = append(v.Notes, "the UTC month changed during the run: usage session_seconds/session_minutes were not compared")
	}
	v.Passed = len(v.Differences) == 0 && missing == 0
}

// countFacts are the webhook answer tallies verification looks at.
type countFacts struct {
	server     serverCounts
	mismatched uint64
	unparsable uint64
	dropEvery  int
}
