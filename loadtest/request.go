package loadtest

import (
	"context"
	"slices"
	"strconv"
	"sync/atomic"
)

// Request states. A request leaves reqPending exactly once.
const (
	reqPending int32 = iota
	reqAcked         // got a 2xx: every event in it is acknowledged
	reqFailed        // gave up: its events may or may not have been applied
)

// request is one pre-encoded webhook POST and what it carries.
type request struct {
	body []byte // nil once sent; only the sender that took it touches it
	dels []delivery
	deps []*request // requests that must be acknowledged before this is sent
	wire int        // events actually in body (deliveries minus dropped ones)

	// ackSeq orders acknowledgements; the sender writes it before state
	// leaves reqPending, others read it only after the phase ended.
	ackSeq int64

	state atomic.Int32
}

func (r *request) finished() bool { return r.state.Load() != reqPending }

// plan turns generator output into pre-encoded requests and remembers all
// of them for verification. It is owned by one producer goroutine at a time;
// others read it only after that goroutine ended.
type plan struct {
	fl        *fleet
	gen       *generator
	batch     int
	dropEvery int64
	placedN   int64      // deliveries placed so far, for --drop-every
	firstReq  []*request // by event index: the request of its first delivery
	all       []*request

	// Requests, deliveries and bodies are carved out of large chunks, so
	// encoding a request costs no allocation of its own; a body chunk is
	// freed once every body in it was sent.
	bodySlab []byte
	delSlab  []delivery
	reqSlab  []request
}

const (
	slabBytes      = 1 << 20
	slabDeliveries = 16 << 10
	slabRequests   = 4 << 10
)

func newPlan(fl *fleet, gen *generator, batch, dropEvery int) *plan {
	return &plan{fl: fl, gen: gen, batch: batch, dropEvery: int64(dropEvery)}
}

// reserve makes room for about n more events, so that the tables do not
// grow (and copy themselves) while the senders run.
func (p *plan) reserve(n int) {
	p.gen.events = slices.Grow(p.gen.events, n)
	p.firstReq = slices.Grow(p.firstReq, n)
	p.all = slices.Grow(p.all, n/p.batch+1)
}

// setupSource returns a builder of the registration requests (phase 1).
func (p *plan) setupSource() func() *request {
	next := int32(0)
	return func() *request {
		if int(next) >= p.fl.devices {
			return nil
		}
		r := p.newRequest(min(p.batch, p.fl.devices-int(next)))
		for i := 0; i < p.batch && int(next) < p.fl.devices; i++ {
			p.place(r, p.gen.register(next), false)
			next++
		}
		return p.finish(r)
	}
}

// loadSource returns a builder of phase-2 requests; limit bounds the number
// of deliveries (0: unbounded).
func (p *plan) loadSource(limit int64) func() *request {
	var n int64
	return func() *request {
		if limit > 0 && n >= limit {
			return nil
		}
		size := int64(p.batch)
		if limit > 0 {
			size = min(size, limit-n)
		}
		r := p.newRequest(int(size))
		for range size {
			p.place(r, p.gen.next(), true)
		}
		n += size
		return p.finish(r)
	}
}

func (p *plan) newRequest(size int) *request {
	if len(p.reqSlab) == 0 {
		p.reqSlab = make([]request, slabRequests)
	}
	r := &p.reqSlab[0]
	p.reqSlab = p.reqSlab[1:]
	if cap(p.delSlab)-len(p.delSlab) < size {
		p.delSlab = make([]delivery, 0, max(slabDeliveries, size))
	}
	n := len(p.delSlab)
	r.dels = p.delSlab[n : n : n+size]
	p.delSlab = p.delSlab[:n+size]
	// The body is encoded straight into the free end of the body slab; an
	// event larger than estimated just makes append move it elsewhere.
	if want := size*maxEventBytes + 2; cap(p.bodySlab)-len(p.bodySlab) < want {
		p.bodySlab = make([]byte, 0, max(slabBytes, want))
	}
	r.body = p.bodySlab[len(p.bodySlab):]
	if p.batch > 1 {
		r.body = append(r.body, '[')
	}
	return r
}

// maxEventBytes bounds the encoding of one event (the longest, a
// session.ended with a 32-character run id, is about 200 bytes).
const maxEventBytes = 256

// finish closes the body and claims its bytes in the body slab.
func (p *plan) finish(r *request) *request {
	if p.batch > 1 {
		r.body = append(r.body, ']')
	}
	free := p.bodySlab[len(p.bodySlab):cap(p.bodySlab)]
	if len(r.body) > 0 && len(free) > 0 && &r.body[0] == &free[0] {
		p.bodySlab = p.bodySlab[:len(p.bodySlab)+len(r.body)]
	}
	r.body = r.body[:len(r.body):len(r.body)] // a later append must not write into the slab
	if r.wire == 0 {
		r.body = nil
	}
	p.all = append(p.all, r)
	return r
}

// place appends delivery d to r: encodes it unless --drop-every says to
// pretend, records what it must wait for, and lets the generator schedule
// what waits for it.
func (p *plan) place(r *request, d delivery, notify bool) {
	p.placedN++
	d.dropped = p.dropEvery > 0 && p.placedN%p.dropEvery == 0
	if int(d.ev) >= len(p.firstReq) {
		p.firstReq = append(p.firstReq, make([]*request, int(d.ev)+1-len(p.firstReq))...)
	}
	if p.firstReq[d.ev] == nil {
		p.firstReq[d.ev] = r
	}
	if d.depEv >= 0 {
		if dep := p.firstReq[d.depEv]; dep != nil && dep != r && !containsReq(r.deps, dep) {
			r.deps = append(r.deps, dep)
		}
	}
	r.dels = append(r.dels, d)
	if !d.dropped {
		if r.wire > 0 {
			r.body = append(r.body, ',')
		}
		r.body = p.appendEvent(r.body, d.ev)
		r.wire++
	}
	if notify {
		p.gen.placed(d)
	}
}

func containsReq(rs []*request, r *request) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

// appendEvent encodes event ev as JSON. Every string is built from the run
// id (validated to [A-Za-z0-9._-]) and fixed ASCII, so nothing needs escaping.
func (p *plan) appendEvent(b []byte, ev int32) []byte {
	e := &p.gen.events[ev]
	b = append(b, `{"id":"`...)
	b = p.fl.appendID(b, 'e', int64(ev))
	b = append(b, `","type":"`...)
	b = append(b, e.kind.String()...)
	b = append(b, `","ts":`...)
	b = strconv.AppendInt(b, e.ts, 10)
	b = append(b, `,"qdDeviceId":"`...)
	b = p.fl.appendID(b, 'd', int64(e.device))
	b = append(b, '"')
	switch e.kind {
	case evRegistered:
		b = append(b, `,"workspaceId":"`...)
		b = p.fl.appendID(b, 0, int64(p.fl.workspaceOf(e.device)))
		b = append(b, `","name":"host-`...)
		b = strconv.AppendInt(b, int64(e.device), 10)
		b = append(b, `","os":"`...)
		b = append(b, deviceOS(e.device)...)
		b = append(b, '"')
	case evOnline:
		b = strconv.AppendBool(append(b, `,"online":`...), e.online)
	case evSessionStarted:
		b = append(b, `,"sessionId":"`...)
		b = p.fl.appendID(b, 's', int64(e.session))
		b = append(b, '"')
	case evSessionEnded:
		b = append(b, `,"sessionId":"`...)
		b = p.fl.appendID(b, 's', int64(e.session))
		b = append(b, `","status":"`...)
		b = append(b, statusName(e.status)...)
		b = append(b, `","durationSec":`...)
		b = strconv.AppendInt(b, int64(e.dur), 10)
	}
	return append(b, '}')
}

// produce runs build until it returns nil or ctx ends, sending each request
// to out, then closes out. prefilled is closed once out is full or build is
// exhausted, so the timed phase can start with bodies already encoded.
func produce(ctx context.Context, out chan<- *request, build func() *request, prefilled chan<- struct{}) {
	defer close(out)
	signalled := false
	signal := func() {
		if !signalled {
			signalled = true
			close(prefilled)
		}
	}
	defer signal()
	for {
		if len(out) == cap(out) {
			signal()
		}
		r := build()
		if r == nil {
			return
		}
		if len(out) == cap(out) {
			signal()
		}
		select {
		case out <- r:
		case <-ctx.Done():
			return
		}
	}
}
