package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
)

// keptResult is what the kept case measured.
type keptResult struct {
	Sent       time.Duration // the kept events, all requests
	Attempts   []attempt     // the registration's, in order
	Registered bool          // one attempt answered 200
	// The other sender's webhooks to the same replica before the
	// registration, while it was being answered (all attempts) and
	// after; Other* the same to the other replica (-other-addr).
	Before, During, After                steadyPhase
	OtherBefore, OtherDuring, OtherAfter steadyPhase
	Dropped                              float64 // fleetd_pending_dropped_total
	HasDropped                           bool    // the metric is there at all
	Listed                               int     // sessions the REST API lists for the device
	ListErr                              error
}

type attempt struct {
	Code int
	Took time.Duration
}

type steadyPhase struct {
	spread
	Codes map[int]int
}

func (p steadyPhase) String() string { return p.spread.String() + ", " + codes(p.Codes) }

// kept sends o.events session events (each of its own session: even ones
// session.started, odd ones session.ended) for one device that no
// registration has placed, then registers it in o.workspace, retried on
// 503/429 up to 14 attempts, while another sender posts o.rate webhooks a
// second (one online change each) for o.others registered devices of
// another workspace, to the same replica or, every other one, to another
// replica on the same Redis when o.otherAddr is set; it reports the
// registration's answers, that sender's latency before, during and after
// it, fleetd_pending_dropped_total and how many sessions the REST API
// lists for the device.
func kept(o options) (keptResult, error) {
	var r keptResult
	const dev = "kept-1"
	now := time.Now().UnixMilli()
	// The other sender's devices.
	if _, err := o.send(o.others, 1000, 1, func(i int) event {
		return registration("other-"+strconv.Itoa(i), "others", now-10_000)
	}); err != nil {
		return r, fmt.Errorf("registering the other devices: %w", err)
	}
	// The kept events, 100 ms apart, ending a second ago; an ended
	// session lasted 60 s.
	first := now - int64(o.events)*100 - 1000
	var err error
	r.Sent, err = o.send(o.events, 1000, 1, func(i int) event {
		e := event{Device: dev, Session: "k-" + strconv.Itoa(i), TS: first + int64(i)*100}
		if i%2 == 0 {
			e.Type = "session.started"
		} else {
			e.Type, e.Status, e.Duration = "session.ended", "success", 60
		}
		return e
	})
	if err != nil {
		return r, fmt.Errorf("sending the kept events: %w", err)
	}
	fmt.Fprintf(o.out, "kept: %d session events for unregistered device %s sent in %v (requests of 1,000)\n",
		o.events, dev, r.Sent.Round(time.Millisecond))

	// The other sender, open loop: one request every 1/rate s, each on
	// its own goroutine, so a slow answer does not hold the next back.
	type sample struct {
		at    time.Time
		took  time.Duration
		code  int
		other bool // sent to o.otherAddr
	}
	var (
		mu      sync.Mutex
		samples []sample
		wg      sync.WaitGroup
		stop    = make(chan struct{})
	)
	wg.Go(func() {
		t := time.NewTicker(time.Second / time.Duration(o.rate))
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			online := (n/o.others)%2 == 0
			e := event{Type: "device.online.changed", Device: "other-" + strconv.Itoa(n%o.others), Online: &online, TS: time.Now().UnixMilli()}
			to, other := o, o.otherAddr != "" && n%2 == 1
			if other {
				to.addr = o.otherAddr
			}
			wg.Go(func() {
				at := time.Now()
				code, _, took, err := to.post([]event{e})
				if err != nil {
					code = 0
				}
				mu.Lock()
				samples = append(samples, sample{at, took, code, other})
				mu.Unlock()
			})
		}
	})
	time.Sleep(o.phase / 2) // warm-up, not counted
	time.Sleep(o.phase)     // before
	regStart := time.Now()
	reg := []event{registration(dev, o.workspace, time.Now().UnixMilli())}
	for len(r.Attempts) < 14 {
		code, body, took, err := o.post(reg)
		if err != nil {
			return r, fmt.Errorf("registration: %w", err)
		}
		r.Attempts = append(r.Attempts, attempt{code, took})
		if code == 200 {
			r.Registered = true
			break
		}
		if code != 503 && code != 429 {
			return r, fmt.Errorf("registration: %d %s", code, body)
		}
		time.Sleep(time.Second) // Retry-After
	}
	regEnd := time.Now()
	time.Sleep(o.phase) // after
	close(stop)
	wg.Wait()
	phase := func(other bool, from, to time.Time) steadyPhase {
		p := steadyPhase{Codes: map[int]int{}}
		var ds []time.Duration
		for _, s := range samples {
			if s.other == other && !s.at.Before(from) && s.at.Before(to) {
				ds = append(ds, s.took)
				p.Codes[s.code]++
			}
		}
		p.spread = spreadOf(ds)
		return p
	}
	r.Before = phase(false, regStart.Add(-o.phase), regStart)
	r.During = phase(false, regStart, regEnd)
	r.After = phase(false, regEnd, regEnd.Add(o.phase))
	r.OtherBefore = phase(true, regStart.Add(-o.phase), regStart)
	r.OtherDuring = phase(true, regStart, regEnd)
	r.OtherAfter = phase(true, regEnd, regEnd.Add(o.phase))

	sc, err := o.scrape()
	if err != nil {
		return r, err
	}
	r.Dropped, r.HasDropped = metricValue(sc.Text, "fleetd_pending_dropped_total")
	r.Listed, r.ListErr = o.listSessions("device_id="+dev, o.events/500+2)

	var line strings.Builder
	for _, a := range r.Attempts {
		fmt.Fprintf(&line, " %d in %s;", a.Code, ms(a.Took))
	}
	fmt.Fprintf(o.out, "kept: registration of %s in %s: %d attempt(s):%s answered 200: %v, %v from the first attempt to the last answer\n",
		dev, o.workspace, len(r.Attempts), line.String(), r.Registered, regEnd.Sub(regStart).Round(time.Millisecond))
	fmt.Fprintf(o.out, "kept: other sender, %d webhooks/s (one online change each, %d devices of workspace others), by the time each was sent:\n", o.rate, o.others)
	report := func(where string, before, during, after steadyPhase) {
		fmt.Fprintf(o.out, "kept:   %s: before (%v): %v\n", where, o.phase, before)
		fmt.Fprintf(o.out, "kept:   %s: during (%v): %v\n", where, regEnd.Sub(regStart).Round(time.Millisecond), during)
		fmt.Fprintf(o.out, "kept:   %s: after  (%v): %v\n", where, o.phase, after)
	}
	if o.otherAddr == "" {
		report("same replica", r.Before, r.During, r.After)
	} else {
		report("same replica (half)", r.Before, r.During, r.After)
		report("other replica (half)", r.OtherBefore, r.OtherDuring, r.OtherAfter)
	}
	if r.HasDropped {
		fmt.Fprintf(o.out, "kept: fleetd_pending_dropped_total %.0f\n", r.Dropped)
	} else {
		fmt.Fprintln(o.out, "kept: fleetd_pending_dropped_total: no such metric")
	}
	if r.ListErr != nil {
		fmt.Fprintf(o.out, "kept: sessions of %s through the REST API: %d, then %v\n", dev, r.Listed, r.ListErr)
	} else {
		fmt.Fprintf(o.out, "kept: sessions of %s through the REST API: %d\n", dev, r.Listed)
	}
	return r, nil
}
