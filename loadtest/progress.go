package loadtest

import (
	"fmt"
	"io"
	"os"
	"time"
)

// progressMode is how the live progress line is shown.
type progressMode int

const (
	progressOff   progressMode = iota
	progressTTY                // one line rewritten with \r every 250 ms
	progressPlain              // a new line every 2 s, for logs and CI
)

// detectProgress picks the mode for --progress=auto: a rewritten line when
// w is a terminal, plain lines otherwise.
func detectProgress(w io.Writer) progressMode {
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return progressTTY
		}
	}
	return progressPlain
}

const (
	monitorTick = 250 * time.Millisecond
	plainEvery  = 8 // ticks between plain progress lines (2 s)
)

// monitor samples a running phase: a timeline point every second and the
// progress line. It is the only reader of the workers' interval histograms.
type monitor struct {
	done     chan struct{}
	timeline chan []timelinePoint
}

func startMonitor(ph *phase, w io.Writer) *monitor {
	m := &monitor{done: make(chan struct{}), timeline: make(chan []timelinePoint, 1)}
	go m.loop(ph, w)
	return m
}

// stop ends sampling and returns the per-second timeline.
func (m *monitor) stop() []timelinePoint {
	close(m.done)
	return <-m.timeline
}

func (m *monitor) loop(ph *phase, w io.Writer) {
	tick := time.NewTicker(monitorTick)
	defer tick.Stop()
	var (
		points     []timelinePoint
		interval   = new(Histogram)
		overall    = new(Histogram)
		lastPoint  = ph.start
		lastEvents uint64
		lastReqs   uint64
		lastErrs   uint64
		progT      = ph.start
		progEvents uint64
		progReqs   uint64
		ticks      int
	)
	point := func(now time.Time) {
		interval.Reset()
		for _, ws := range ph.workers {
			ws.mu.Lock()
			interval.Merge(&ws.interval)
			ws.interval.Reset()
			ws.mu.Unlock()
		}
		secs := max(now.Sub(lastPoint).Seconds(), 1e-3) // never divide by zero (JSON has no Inf)
		ev, rq, er := ph.events.Load(), ph.requests.Load(), ph.errs.Load()
		points = append(points, timelinePoint{
			T:              now.Sub(ph.start).Seconds(),
			EventsPerSec:   float64(ev-lastEvents) / secs,
			RequestsPerSec: float64(rq-lastReqs) / secs,
			Errors:         er - lastErrs,
			P50Ms:          ms(interval.Quantile(0.50)),
			P99Ms:          ms(interval.Quantile(0.99)),
			MaxMs:          ms(interval.Max()),
		})
		lastPoint, lastEvents, lastReqs, lastErrs = now, ev, rq, er
	}
	show := func(now time.Time, mode progressMode) {
		overall.Reset()
		for _, ws := range ph.workers {
			ws.mu.Lock()
			overall.Merge(&ws.total)
			ws.mu.Unlock()
		}
		secs := max(now.Sub(progT).Seconds(), 1e-3)
		ev, rq := ph.events.Load(), ph.requests.Load()
		line := fmt.Sprintf("%s %5.1fs  %9.0f events/s  %8.0f req/s  errors %d  p99 %s",
			ph.cfg.name, now.Sub(ph.start).Seconds(), float64(ev-progEvents)/secs,
			float64(rq-progReqs)/secs, ph.errs.Load(), fmtDur(overall.Quantile(0.99)))
		progT, progEvents, progReqs = now, ev, rq
		if mode == progressTTY {
			fmt.Fprintf(w, "\r%s\033[K", line)
		} else {
			fmt.Fprintln(w, line)
		}
	}
	for {
		select {
		case now := <-tick.C:
			ticks++
			if now.Sub(lastPoint) >= time.Second-monitorTick/2 {
				point(now)
			}
			switch {
			case ph.cfg.progress == progressTTY:
				show(now, progressTTY)
			case ph.cfg.progress == progressPlain && ticks%plainEvery == 0:
				show(now, progressPlain)
			}
		case <-m.done:
			now := time.Now()
			if now.Sub(lastPoint) >= 100*time.Millisecond || len(points) == 0 {
				point(now)
			}
			if ph.cfg.progress == progressTTY {
				fmt.Fprint(w, "\r\033[K")
			}
			m.timeline <- points
			return
		}
	}
}

// ms converts a duration to fractional milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fmtDur prints a latency with three significant digits.
func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.3gs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.3gms", ms(d))
	default:
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
}
