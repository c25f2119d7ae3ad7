package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// listingQuery is what the listings case measured of one query.
type listingQuery struct {
	Query string
	Took  spread
	First time.Duration // the first request's (the slowest may be it)
	Codes map[int]int
	Items int    // items of the last page answered
	Wrong string // an item that does not match the filter, if any
}

// listingsResult is what the listings case measured.
type listingsResult struct {
	Sessions, Failed, Live int
	Build                  time.Duration
	Queries                []listingQuery
}

// listings builds o.sessions sessions in o.workspace over o.devices
// devices (every o.failedEvery-th ended failed, every o.liveEvery-th live,
// the rest ended success), 1,000 events per request, then asks each of
// ?status=failed, ?status=live and ?device_id=D (another device each time)
// with limit=50, o.requests times one after the other, and reports their
// latency and answers.
func listings(o options) (listingsResult, error) {
	r := listingsResult{Sessions: o.sessions}
	now := time.Now().UnixMilli()
	dev := func(i int) string { return fmt.Sprintf("dev-%05d", i) }
	if _, err := o.send(o.devices, 1000, 1, func(i int) event {
		return registration(dev(i), o.workspace, now-3*86_400_000)
	}); err != nil {
		return r, fmt.Errorf("registering %d devices: %w", o.devices, err)
	}
	// Ended sessions over the last 48 h, live ones over the last 20 h (a
	// live one older than --live-session-bound would be abandoned), so
	// the live ones are spread among the newest half of the history.
	const day = 86_400_000
	for i := range o.sessions {
		switch {
		case i%o.liveEvery == 0:
			r.Live++
		case i%o.failedEvery == 0:
			r.Failed++
		}
	}
	var err error
	r.Build, err = o.send(o.sessions, 1000, 2, func(i int) event {
		e := event{Device: dev(i % o.devices), Session: "x-" + strconv.Itoa(i)}
		switch {
		case i%o.liveEvery == 0:
			e.Type, e.TS = "session.started", now-20*3_600_000+int64(i)*20*3_600_000/int64(o.sessions)
		case i%o.failedEvery == 0:
			e.Type, e.Status, e.Duration = "session.ended", "failed", 30
		default:
			e.Type, e.Status, e.Duration = "session.ended", "success", 120
		}
		if e.TS == 0 {
			e.TS = now - 2*day + int64(i)*2*day/int64(o.sessions)
		}
		return e
	})
	if err != nil {
		return r, fmt.Errorf("building %d sessions: %w", o.sessions, err)
	}
	fmt.Fprintf(o.out, "listings: %d sessions (%d failed, %d live, the rest success) on %d devices of %s built in %v (requests of 1,000; load %s)\n",
		o.sessions, r.Failed, r.Live, o.devices, o.workspace, r.Build.Round(time.Millisecond), loadavg())
	type query struct {
		name  string
		path  func(n int) string
		match func(deviceID, status string, n int) bool
	}
	queries := []query{
		{"status=failed&limit=50", func(int) string { return "status=failed&limit=50" },
			func(_, s string, _ int) bool { return s == "failed" }},
		{"status=live&limit=50", func(int) string { return "status=live&limit=50" },
			func(_, s string, _ int) bool { return s == "live" }},
		{"device_id=D&limit=50", func(n int) string { return "device_id=" + dev(n%o.devices) + "&limit=50" },
			func(d, _ string, n int) bool { return d == dev(n%o.devices) }},
	}
	for _, q := range queries {
		lq := listingQuery{Query: q.name, Codes: map[int]int{}}
		var ds []time.Duration
		for n := range o.requests {
			code, body, took, err := o.apiGet("/api/v1/sessions?" + q.path(n))
			if err != nil {
				return r, err
			}
			ds = append(ds, took)
			lq.Codes[code]++
			if code != 200 {
				continue
			}
			var p sessionPage
			if err := json.Unmarshal(body, &p); err != nil {
				return r, err
			}
			lq.Items = len(p.Items)
			for _, it := range p.Items {
				if !q.match(it.DeviceID, it.Status, n) && lq.Wrong == "" {
					lq.Wrong = fmt.Sprintf("%s %s", it.DeviceID, it.Status)
				}
			}
		}
		lq.Took = spreadOf(ds)
		if len(ds) > 0 {
			lq.First = ds[0]
		}
		r.Queries = append(r.Queries, lq)
		wrong := ""
		if lq.Wrong != "" {
			wrong = ", an item outside the filter: " + lq.Wrong
		}
		fmt.Fprintf(o.out, "listings: GET /api/v1/sessions?%s × %d, one after the other: %v (the first %s); %s; %d items on the last page%s (load %s)\n",
			q.name, o.requests, lq.Took, ms(lq.First), codes(lq.Codes), lq.Items, wrong, loadavg())
	}
	return r, nil
}
