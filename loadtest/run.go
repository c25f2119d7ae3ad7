package loadtest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Retry pacing: Retry-After is honoured but clamped, so a server asking for
// minutes does not stall a load test and one asking for 0 is not hammered.
const (
	minRetryWait = 50 * time.Millisecond
	maxRetryWait = time.Second
	// depPoll is how often a sender looks whether a request it must follow
	// has been acknowledged; it rarely has to, thanks to the generator's gaps.
	depPoll = 200 * time.Microsecond
)

// target is the parsed --target.
type target struct {
	base  string // scheme://host[:port], no trailing slash
	addr  string // host:port for dialing
	isTLS bool
}

func parseTarget(s string) (target, error) {
	u, err := url.Parse(s)
	if err != nil {
		return target{}, fmt.Errorf("--target %q: %w", s, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return target{}, fmt.Errorf("--target %q: want http://host:port or https://host:port", s)
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" {
		return target{}, fmt.Errorf("--target %q: give the base URL only (no path or query)", s)
	}
	addr := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	return target{base: u.Scheme + "://" + u.Host, addr: addr, isTLS: u.Scheme == "https"}, nil
}

// isLoopback reports whether the target host is a loopback name or address.
func (t target) isLoopback() bool {
	host, _, err := net.SplitHostPort(t.addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// sender posts webhook bodies with one keep-alive fasthttp client.
type sender struct {
	hc      *fasthttp.HostClient
	uri     string
	secret  string
	timeout time.Duration
	retries int
}

func newSender(t target, cfg *config) *sender {
	return &sender{
		hc: &fasthttp.HostClient{
			Addr:                t.addr,
			IsTLS:               t.isTLS,
			Name:                "fleetd-loadtest",
			MaxConns:            cfg.Connections,
			MaxConnWaitTimeout:  cfg.Timeout,
			MaxIdleConnDuration: time.Minute,
			ReadTimeout:         cfg.Timeout,
			WriteTimeout:        cfg.Timeout,
			MaxResponseBodySize: 1 << 20,
		},
		uri:     t.base + "/backend/webhook",
		secret:  cfg.secret,
		timeout: cfg.Timeout,
		retries: cfg.Retries,
	}
}

func (s *sender) prepare(req *fasthttp.Request) {
	req.SetRequestURI(s.uri)
	req.Header.SetMethod(fasthttp.MethodPost)
	req.Header.SetContentType("application/json")
	req.Header.Set("x-webhook-secret", s.secret)
}

// retryWait turns a Retry-After header into a wait within [min, max].
func retryWait(h []byte) time.Duration {
	secs, err := strconv.ParseFloat(string(bytes.TrimSpace(h)), 64)
	if err != nil || secs < 0 {
		return minRetryWait
	}
	return min(max(time.Duration(secs*float64(time.Second)), minRetryWait), maxRetryWait)
}

// backoff is the wait before retry number attempt after an error without
// Retry-After: 50 ms doubling up to 1 s.
func backoff(attempt int) time.Duration {
	return min(minRetryWait<<min(attempt, 10), maxRetryWait)
}

// parseCounts reads {"accepted":N,"duplicate":N,"stale":N,"ignored":N}
// without reflection; it reports false when any of the four is missing.
func parseCounts(b []byte) (serverCounts, bool) {
	var c serverCounts
	ok := true
	for _, f := range []struct {
		key string
		dst *uint64
	}{{`"accepted"`, &c.Accepted}, {`"duplicate"`, &c.Duplicate}, {`"stale"`, &c.Stale}, {`"ignored"`, &c.Ignored}} {
		i := bytes.Index(b, []byte(f.key))
		if i < 0 {
			ok = false
			continue
		}
		rest := bytes.TrimLeft(b[i+len(f.key):], " \t\r\n")
		if len(rest) == 0 || rest[0] != ':' {
			ok = false
			continue
		}
		rest = bytes.TrimLeft(rest[1:], " \t\r\n")
		j := 0
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		n, err := strconv.ParseUint(string(rest[:j]), 10, 64)
		if err != nil {
			ok = false
			continue
		}
		*f.dst = n
	}
	return c, ok
}

// phaseConfig says how one phase loads the target.
type phaseConfig struct {
	name     string
	rate     float64       // events/s on a fixed timetable; 0: closed loop
	batch    int           // events per request, for the timetable
	duration time.Duration // 0: until the source is exhausted
	workers  int
	progress progressMode
}

// workerStats is what one sender goroutine measured. Its mutex is only
// contended by the once-per-tick monitor.
type workerStats struct {
	mu         sync.Mutex
	total      Histogram
	interval   Histogram
	status     map[int]uint64
	netErrors  uint64
	retries    uint64
	server     serverCounts
	acked      uint64
	mismatched uint64 // 200 answers whose counts do not add up to the events sent
	unparsable uint64
	failedReqs uint64
	failedEvs  uint64
	droppedEvs uint64
}

// phase is one run of the senders over one request source.
type phase struct {
	cfg      phaseConfig
	s        *sender
	ackSeq   *atomic.Int64
	start    time.Time
	deadline time.Time
	slot     atomic.Int64
	workers  []*workerStats

	events   atomic.Uint64 // events in acknowledged bodies
	requests atomic.Uint64 // HTTP exchanges, retries included
	errs     atomic.Uint64 // exchanges that were neither 2xx nor 429/503

	mu        sync.Mutex
	abortErr  error
	rejection string // first permanently refused answer, for the report
	cancel    context.CancelFunc
}

// phaseResult summarises a finished phase.
type phaseResult struct {
	Name          string
	Elapsed       time.Duration
	Requests      uint64
	AckedRequests uint64
	Events        uint64
	Dropped       uint64
	Status        map[int]uint64
	NetErrors     uint64
	Retries       uint64
	FailedReqs    uint64
	FailedEvents  uint64
	Server        serverCounts
	Mismatched    uint64
	Unparsable    uint64
	Rejection     string
	Hist          *Histogram
	Timeline      []timelinePoint
	Err           error
}

// timelinePoint is one second of a phase.
type timelinePoint struct {
	T              float64 `json:"t"`
	EventsPerSec   float64 `json:"events_per_sec"`
	RequestsPerSec float64 `json:"requests_per_sec"`
	Errors         uint64  `json:"errors"`
	P50Ms          float64 `json:"p50_ms"`
	P99Ms          float64 `json:"p99_ms"`
	MaxMs          float64 `json:"max_ms"`
}

func (ph *phase) abort(err error) {
	ph.mu.Lock()
	if ph.abortErr == nil {
		ph.abortErr = err
	}
	ph.mu.Unlock()
	ph.cancel()
}

func (ph *phase) noteRejection(status int, body []byte) {
	ph.mu.Lock()
	if ph.rejection == "" {
		if len(body) > 300 {
			body = body[:300]
		}
		ph.rejection = fmt.Sprintf("%d %s", status, bytes.TrimSpace(body))
	}
	ph.mu.Unlock()
}

// runPhase loads the target with the requests that build returns, with
// prefill requests encoded ahead, and returns when the source is exhausted,
// the duration is over, or ctx ends. Requests that were started are always
// finished (acknowledged or given up), never cut off midway.
func runPhase(ctx context.Context, pc phaseConfig, s *sender, ackSeq *atomic.Int64, build func() *request, prefill int, stderr io.Writer) phaseResult {
	prodCtx, stopProducer := context.WithCancel(ctx)
	src := make(chan *request, max(prefill, 1))
	prefilled := make(chan struct{})
	producerDone := make(chan struct{})
	go func() {
		defer close(producerDone)
		produce(prodCtx, src, build, prefilled)
	}()
	select {
	case <-prefilled:
	case <-ctx.Done():
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	ph := &phase{cfg: pc, s: s, ackSeq: ackSeq, cancel: cancel, start: time.Now()}
	if pc.duration > 0 {
		ph.deadline = ph.start.Add(pc.duration)
	}
	ph.workers = make([]*workerStats, pc.workers)
	var wg sync.WaitGroup
	for i := range ph.workers {
		ws := &workerStats{status: make(map[int]uint64)}
		ph.workers[i] = ws
		wg.Add(1)
		go func() {
			defer wg.Done()
			ph.work(runCtx, ws, src)
		}()
	}
	mon := startMonitor(ph, stderr)
	wg.Wait()
	elapsed := time.Since(ph.start)
	timeline := mon.stop()
	stopProducer()
	<-producerDone

	res := phaseResult{Name: pc.name, Elapsed: elapsed, Status: make(map[int]uint64), Hist: new(Histogram), Timeline: timeline}
	for _, ws := range ph.workers {
		res.Hist.Merge(&ws.total)
		for k, v := range ws.status {
			res.Status[k] += v
		}
		res.NetErrors += ws.netErrors
		res.Retries += ws.retries
		res.Server.add(ws.server)
		res.AckedRequests += ws.acked
		res.Mismatched += ws.mismatched
		res.Unparsable += ws.unparsable
		res.FailedReqs += ws.failedReqs
		res.FailedEvents += ws.failedEvs
		res.Dropped += ws.droppedEvs
	}
	res.Requests = ph.requests.Load()
	res.Events = ph.events.Load()
	res.Rejection = ph.rejection
	res.Err = ph.abortErr
	if res.Err == nil && ctx.Err() != nil {
		res.Err = ctx.Err()
	}
	return res
}

// work is one sender: closed loop (next request as soon as the last one is
// done) or open loop (each request has a slot on a fixed timetable, and its
// latency counts from that slot, so a stalled server cannot hide the
// requests that should have been sent meanwhile).
func (ph *phase) work(ctx context.Context, ws *workerStats, src <-chan *request) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	ph.s.prepare(req)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	open := ph.cfg.rate > 0
	perSlot := 0.0
	if open {
		perSlot = float64(time.Second) * float64(ph.cfg.batch) / ph.cfg.rate
	}
	for {
		var start time.Time
		if open {
			slot := ph.slot.Add(1) - 1
			start = ph.start.Add(time.Duration(float64(slot) * perSlot))
			if !ph.deadline.IsZero() && !start.Before(ph.deadline) {
				return
			}
			if d := time.Until(start); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					timer.Stop()
					return
				}
			}
		} else if !ph.deadline.IsZero() && !time.Now().Before(ph.deadline) {
			return
		}
		var r *request
		select {
		case <-ctx.Done():
			return
		case x, ok := <-src:
			if !ok {
				return
			}
			r = x
		}
		if !open {
			start = time.Now()
		}
		ph.deliver(ctx, ws, req, resp, r, start)
	}
}

// deliver sends r until it is acknowledged or given up.
func (ph *phase) deliver(ctx context.Context, ws *workerStats, req *fasthttp.Request, resp *fasthttp.Response, r *request, start time.Time) {
	for _, dep := range r.deps {
		for !dep.finished() {
			if ctx.Err() != nil {
				r.state.Store(reqFailed)
				return
			}
			time.Sleep(depPoll)
		}
	}
	dropped := uint64(len(r.dels) - r.wire)
	if r.wire == 0 {
		// Every event of it was dropped by --drop-every: pretend it was acked.
		r.ackSeq = ph.ackSeq.Add(1)
		r.state.Store(reqAcked)
		ws.mu.Lock()
		ws.droppedEvs += dropped
		ws.mu.Unlock()
		return
	}
	req.SetBodyRaw(r.body)
	for attempt := 0; ; attempt++ {
		err := ph.s.hc.DoTimeout(req, resp, ph.s.timeout)
		ph.requests.Add(1)
		status := 0
		if err == nil {
			status = resp.StatusCode()
		}
		switch {
		case err == nil && status >= 200 && status < 300:
			var counts serverCounts
			ok := true
			if status == fasthttp.StatusOK {
				counts, ok = parseCounts(resp.Body())
			}
			r.ackSeq = ph.ackSeq.Add(1)
			r.body = nil
			r.state.Store(reqAcked)
			ph.events.Add(uint64(r.wire))
			lat := time.Since(start)
			ws.mu.Lock()
			ws.status[status]++
			ws.acked++
			ws.total.Record(lat)
			ws.interval.Record(lat)
			ws.droppedEvs += dropped
			if status == fasthttp.StatusOK {
				if !ok {
					ws.unparsable++
				} else {
					ws.server.add(counts)
					if counts.total() != uint64(r.wire) {
						ws.mismatched++
					}
				}
			}
			ws.mu.Unlock()
			return
		case err == nil && (status == fasthttp.StatusUnauthorized || status == fasthttp.StatusForbidden):
			ph.record(ws, status, false)
			ph.noteRejection(status, resp.Body())
			ph.abort(fmt.Errorf("%s: the webhook refused the secret (%d %s); check --secret / FLEETD_WEBHOOK_SECRET (a shared secret, not a whsec_ signing key)", ph.cfg.name, status, bytes.TrimSpace(resp.Body())))
			ph.giveUp(ws, r, start)
			return
		case err == nil && (status == fasthttp.StatusNotFound || status == fasthttp.StatusMethodNotAllowed):
			ph.record(ws, status, false)
			ph.noteRejection(status, resp.Body())
			ph.abort(fmt.Errorf("%s: POST %s answered %d: is --target a fleetd?", ph.cfg.name, ph.s.uri, status))
			ph.giveUp(ws, r, start)
			return
		case err == nil && status >= 400 && status < 500 && status != fasthttp.StatusTooManyRequests:
			// 400, 413, ...: the request itself is refused; sending it again
			// cannot help.
			ph.record(ws, status, false)
			ph.noteRejection(status, resp.Body())
			ph.giveUp(ws, r, start)
			return
		}
		retryable429 := err == nil && (status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable)
		ph.record(ws, status, retryable429)
		if attempt >= ph.s.retries || ctx.Err() != nil {
			ph.giveUp(ws, r, start)
			return
		}
		wait := backoff(attempt)
		if retryable429 {
			wait = retryWait(resp.Header.Peek("Retry-After"))
		}
		ws.mu.Lock()
		ws.retries++
		ws.mu.Unlock()
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			ph.giveUp(ws, r, start)
			return
		}
	}
}

// record counts one non-2xx exchange (status 0: a transport error).
func (ph *phase) record(ws *workerStats, status int, backpressure bool) {
	if !backpressure {
		ph.errs.Add(1)
	}
	ws.mu.Lock()
	if status == 0 {
		ws.netErrors++
	} else {
		ws.status[status]++
	}
	ws.mu.Unlock()
}

func (ph *phase) giveUp(ws *workerStats, r *request, start time.Time) {
	r.state.Store(reqFailed)
	lat := time.Since(start)
	ws.mu.Lock()
	ws.failedReqs++
	ws.failedEvs += uint64(len(r.dels))
	ws.total.Record(lat)
	ws.interval.Record(lat)
	ws.mu.Unlock()
}

// checkReachable dials the target once so a wrong address fails in a second
// instead of after every request's retries.
func checkReachable(ctx context.Context, t target) error {
	d := net.Dialer{Timeout: 3 * time.Second}
	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return fmt.Errorf("cannot reach --target %s: %w", t.base, err)
	}
	return c.Close()
}

// startBaseline serves a bare fasthttp handler answering 204 on loopback,
// so the same client load shows what plain HTTP costs on this machine.
func startBaseline() (string, func(), error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("baseline: listen: %w", err)
	}
	srv := &fasthttp.Server{
		Handler:            func(c *fasthttp.RequestCtx) { c.SetStatusCode(fasthttp.StatusNoContent) },
		Name:               "loadtest-baseline",
		ReadTimeout:        30 * time.Second,
		WriteTimeout:       30 * time.Second,
		IdleTimeout:        time.Minute,
		MaxRequestBodySize: 64 << 20,
		Concurrency:        fasthttp.DefaultConcurrency,
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.ShutdownWithContext(ctx)
		<-done // Serve's error after a shutdown says nothing worth reporting
	}
	return ln.Addr().String(), stop, nil
}
