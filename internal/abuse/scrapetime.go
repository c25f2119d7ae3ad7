package main

import (
	"fmt"
	"strconv"
	"time"
)

// scrapeSet is a few scrapes taken o.scrapeGap apart.
type scrapeSet struct {
	Took      spread
	Fleet     int // scrapes with fleetd_fleet_collect_success 1
	Overflow  int // scrapes with an _overflow series
	Failed    int // scrapes without an answer
	LastBytes int // gzipped size of the last answer
	Last      scrapeResult
	// Collect is fleetd_fleet_collect_duration_seconds of each scrape:
	// the part of it that read the store.
	Collect []time.Duration
}

func (s scrapeSet) String() string {
	return fmt.Sprintf("%v (of which reading the store: %v); with fleet series %d of %d, with _overflow %d, failed %d, %d bytes gzipped",
		s.Took, spreadOf(s.Collect), s.Fleet, s.Took.N+s.Failed, s.Overflow, s.Failed, s.LastBytes)
}

// add counts one scrape in s.
func (s *scrapeSet) add(r scrapeResult) {
	s.Last, s.LastBytes = r, r.Gzipped
	if r.Fleet {
		s.Fleet++
	}
	if r.Overflow {
		s.Overflow++
	}
	if v, ok := metricValue(r.Text, "fleetd_fleet_collect_duration_seconds"); ok {
		s.Collect = append(s.Collect, time.Duration(v*float64(time.Second)))
	}
}

// scrapes takes n scrapes o.scrapeGap apart.
func (o options) scrapes(n int) scrapeSet {
	var s scrapeSet
	var ds []time.Duration
	for i := range n {
		if i > 0 {
			time.Sleep(o.scrapeGap)
		}
		r, err := o.scrape()
		if err != nil {
			s.Failed++
			continue
		}
		ds = append(ds, r.Took)
		s.add(r)
	}
	s.Took = spreadOf(ds)
	return s
}

// workspaceStep is what the workspaces case measured at one count.
type workspaceStep struct {
	Workspaces int
	Build      time.Duration // registrations up to this count
	Waiting    scrapeSet     // scrapes until _overflow appeared
	// OverflowAt is when the _overflow series first appeared, after the
	// last registration was answered; -1: it did not within o.overflowWait
	// (0 when no workspace is past the cap).
	OverflowAt time.Duration
	// CompleteAt is when fleet_devices{workspace="_overflow"} first
	// counted every overflow workspace's device (one each), -1: not
	// within o.overflowWait.
	CompleteAt  time.Duration
	Overflowed  float64   // fleetd_fleet_workspaces_overflow
	Steady      scrapeSet // the o.samples scrapes after it appeared
	RSS, Peak   int64
	OverflowAge float64 // fleetd_fleet_overflow_age_seconds of the last scrape (-1: none)
}

// workspaces creates workspaces with one registered device each, 1,000
// registrations per webhook request, up to each count of o.steps in turn;
// at each it scrapes /metrics until the _overflow series appears and
// counts every overflow workspace (when fleetd_fleet_workspaces_overflow
// says workspaces are past the cap), at most o.overflowWait, then
// o.samples times more, and reports the scrape times and fleetd's RSS.
func workspaces(o options) ([]workspaceStep, error) {
	var steps []workspaceStep
	have := 0
	now := time.Now().UnixMilli()
	for _, target := range o.steps {
		st := workspaceStep{Workspaces: target, OverflowAt: -1, CompleteAt: -1, OverflowAge: -1}
		s := sample(o.pid)
		from := have
		var err error
		st.Build, err = o.send(target-have, 1000, 2, func(i int) event {
			w := strconv.Itoa(from + i)
			return registration("dev-"+w, "ws-"+w, now-10_000)
		})
		if err != nil {
			s.Stop()
			return steps, fmt.Errorf("building %d workspaces: %w", target, err)
		}
		have = target
		built := time.Now()
		fmt.Fprintf(o.out, "workspaces: %d (one registered device each) in %v (load %s)\n", target, st.Build.Round(time.Millisecond), loadavg())
		// Scrape until the _overflow series is there, or is not due.
		var waiting []time.Duration
		for {
			r, err := o.scrape()
			if err != nil {
				st.Waiting.Failed++
			} else {
				waiting = append(waiting, r.Took)
				st.Waiting.add(r)
				st.Overflowed, _ = metricValue(r.Text, "fleetd_fleet_workspaces_overflow")
				if r.Overflow {
					if st.OverflowAt < 0 {
						st.OverflowAt = time.Since(built)
					}
					if v, _ := metricValue(r.Text, `fleet_devices{workspace="_overflow"}`); v == st.Overflowed {
						st.CompleteAt = time.Since(built)
						break
					}
				}
				if r.Fleet && st.Overflowed == 0 {
					st.OverflowAt, st.CompleteAt = 0, 0
					break
				}
			}
			if time.Since(built) > o.overflowWait {
				break
			}
			time.Sleep(o.scrapeGap)
		}
		st.Waiting.Took = spreadOf(waiting)
		time.Sleep(o.scrapeGap)
		st.Steady = o.scrapes(o.samples)
		if v, ok := metricValue(st.Steady.Last.Text, "fleetd_fleet_overflow_age_seconds"); ok {
			st.OverflowAge = v
		}
		st.Peak = s.Stop()
		st.RSS, _ = rss(o.pid)
		st.Peak = max(st.Peak, st.RSS)
		steps = append(steps, st)

		fmt.Fprintf(o.out, "workspaces: %d: scrapes from the last registration until _overflow counts them all: %v\n", target, st.Waiting)
		switch {
		case st.OverflowAt == 0:
			fmt.Fprintf(o.out, "workspaces: %d: no workspace past the cap (fleetd_fleet_workspaces_overflow 0)\n", target)
		case st.OverflowAt < 0:
			fmt.Fprintf(o.out, "workspaces: %d: no _overflow series within %v (fleetd_fleet_workspaces_overflow %.0f)\n", target, o.overflowWait, st.Overflowed)
		default:
			complete := fmt.Sprintf("not within %v", o.overflowWait)
			if st.CompleteAt >= 0 {
				complete = fmt.Sprintf("%v after", st.CompleteAt.Round(100*time.Millisecond))
			}
			fmt.Fprintf(o.out, "workspaces: %d: _overflow first seen %v after the last registration; it counted all %.0f overflow workspaces (fleetd_fleet_workspaces_overflow) %s\n",
				target, st.OverflowAt.Round(100*time.Millisecond), st.Overflowed, complete)
		}
		fmt.Fprintf(o.out, "workspaces: %d: then %d scrapes: %v\n", target, o.samples, st.Steady)
		age := "no such metric"
		if st.OverflowAge >= 0 {
			age = fmt.Sprintf("%.1f s", st.OverflowAge)
		}
		fmt.Fprintf(o.out, "workspaces: %d: fleetd_fleet_overflow_age_seconds: %s; fleetd RSS %s (peak %s); load %s\n",
			target, age, mib(st.RSS), mib(st.Peak), loadavg())
	}
	return steps, nil
}

// statusesResult is what the statuses case measured.
type statusesResult struct {
	Before, After scrapeSet
	Build         time.Duration
	// Series of fleet_sessions_ended_total of the workspace, before and
	// after.
	SeriesBefore, SeriesAfter int
	RSS                       int64
}

// statuses registers one device in o.workspace, scrapes o.samples times,
// ends o.statusCount sessions on it with statuses s-1..s-N (1,000 events
// per request) and scrapes o.samples times again.
func statuses(o options) (statusesResult, error) {
	var r statusesResult
	const dev = "status-dev"
	now := time.Now().UnixMilli()
	if err := o.postRetried([]event{registration(dev, o.workspace, now-3_600_000),
		{Type: "session.ended", Device: dev, Session: "st-0", Status: "success", Duration: 1, TS: now - 3_500_000}}); err != nil {
		return r, err
	}
	label := `workspace="` + o.workspace + `"`
	time.Sleep(o.scrapeGap)
	r.Before = o.scrapes(o.samples)
	r.SeriesBefore = countSeries(r.Before.Last.Text, "fleet_sessions_ended_total{", label)
	first := now - 3_000_000
	var err error
	r.Build, err = o.send(o.statusCount, 1000, 2, func(i int) event {
		n := strconv.Itoa(i + 1)
		return event{Type: "session.ended", Device: dev, Session: "st-" + n, Status: "s-" + n, Duration: 1,
			TS: first + int64(i)*2_000_000/int64(o.statusCount)}
	})
	if err != nil {
		return r, fmt.Errorf("ending %d sessions: %w", o.statusCount, err)
	}
	time.Sleep(o.scrapeGap)
	r.After = o.scrapes(o.samples)
	r.SeriesAfter = countSeries(r.After.Last.Text, "fleet_sessions_ended_total{", label)
	r.RSS, _ = rss(o.pid)
	fmt.Fprintf(o.out, "statuses: before: %d scrapes: %v; %d series of fleet_sessions_ended_total\n", o.samples, r.Before, r.SeriesBefore)
	fmt.Fprintf(o.out, "statuses: %d sessions ended with statuses s-1..s-%d in %v (requests of 1,000; load %s)\n",
		o.statusCount, o.statusCount, r.Build.Round(time.Millisecond), loadavg())
	fmt.Fprintf(o.out, "statuses: after: %d scrapes: %v; %d series of fleet_sessions_ended_total; fleetd RSS %s\n",
		o.samples, r.After, r.SeriesAfter, mib(r.RSS))
	return r, nil
}
