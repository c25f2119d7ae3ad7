package api

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// Read coalescing. Dashboards poll the same few reads (a workspace's usage,
// its first page of devices) from many clients at once, and each costs a
// store script whose work does not shrink with the number of callers. So
// identical reads share one store call, under a rule that keeps every
// answer as fresh as if it had been read alone: a request only joins a
// call that has not started yet. While a call for a key is running, new
// requests for that key queue as the next call, which starts the moment
// the running one ends and answers all of them. A client that saw a
// webhook acknowledged before it sent its request therefore never gets a
// state read before that acknowledgement.
//
// The cost under no contention is a map lookup under a mutex; the gain
// under contention is that the store sees at most two calls per key in
// flight instead of one per request.

// readKind tells apart the reads that share readKey.
type readKind uint8

const (
	readDevices readKind = iota + 1
	readDevice
	readSessions
	readUsage
	readMembers
)

// readKey identifies a read: the same key means the same answer. Each kind
// uses the fields its reply depends on and leaves the others zero.
type readKey struct {
	kind   readKind
	ws     string
	cursor string
	device string // readDevice's id; readSessions' device_id filter
	os     string // readDevices' os filter
	status string // readSessions' status filter
	limit  int
	online onlineKey // readDevices' online filter
	// from and to are readUsage's period, in Unix milliseconds.
	from, to int64
}

// onlineKey is an online filter as a key field.
type onlineKey uint8

const (
	onlineAny onlineKey = iota
	onlineFalse
	onlineTrue
)

func onlineFilter(on *bool) onlineKey {
	switch {
	case on == nil:
		return onlineAny
	case *on:
		return onlineTrue
	}
	return onlineFalse
}

// readFlight is one store call and the requests it answers. body is shared
// read-only by every request of the flight and goes back to the pool when
// the last of them has copied it.
type readFlight struct {
	wg sync.WaitGroup // done when the call has ended
	// joined counts the requests besides the leader; guarded by the
	// group's mutex, final once the call has ended.
	joined int32
	refs   atomic.Int32
	body   *[]byte
	err    error
}

var (
	flightPool = sync.Pool{New: func() any { return new(readFlight) }}
	slotPool   = sync.Pool{New: func() any { return new(readSlot) }}
)

// errReadAborted answers the requests of a call whose fn panicked.
var errReadAborted = &fleet.Error{Code: fleet.EINTERNAL, Message: "internal error"}

type readSlot struct{ running, next *readFlight }

// readGroup coalesces identical reads. Safe for concurrent use.
type readGroup struct {
	mu    sync.Mutex
	slots map[readKey]*readSlot
}

func newFlight() *readFlight {
	f := flightPool.Get().(*readFlight)
	f.wg.Add(1)
	return f
}

// read answers ctx with the JSON that fn appends to its argument, calling
// fn once for every request with the same key that arrived before the call
// started, or returns fn's error. fn must not keep ctx: it may run for
// another request.
func (s *Server) read(ctx *fasthttp.RequestCtx, key readKey, fn func(b []byte) ([]byte, error)) error {
	g := &s.reads
	g.mu.Lock()
	sl := g.slots[key]
	if sl == nil {
		sl = slotPool.Get().(*readSlot)
		g.slots[key] = sl
	}
	switch {
	case sl.running == nil:
		f := newFlight()
		sl.running = f
		g.mu.Unlock()
		g.run(key, sl, f, fn)
		return answer(ctx, f)
	case sl.next != nil:
		f := sl.next
		f.joined++
		g.mu.Unlock()
		f.wg.Wait()
		return answer(ctx, f)
	default:
		// Lead the next call: it may start only once the running one has
		// ended, since that one may have read the store before this
		// request arrived. Waiting on it counts as one of its requests.
		prev := sl.running
		prev.joined++
		f := newFlight()
		sl.next = f
		g.mu.Unlock()
		prev.wg.Wait()
		release(prev)
		g.run(key, sl, f, fn)
		return answer(ctx, f)
	}
}

// readPage answers ctx with one page of a listing, read by list (within
// the store timeout) and coalesced under key, each item as item appends it.
func readPage[T any](s *Server, ctx *fasthttp.RequestCtx, key readKey, item func([]byte, *T) []byte, list func(context.Context) (fleet.Page[T], error)) error {
	return s.read(ctx, key, func(b []byte) ([]byte, error) {
		c, cancel := storeContext()
		page, err := list(c)
		cancel()
		if err != nil {
			return b, err
		}
		return appendPage(b, &page, item), nil
	})
}

// run makes the call of f, which is sl.running, and hands the slot to the
// next call, if any. A panicking fn still ends the flight (as an internal
// error for the requests waiting on it) before the panic goes on.
func (g *readGroup) run(key readKey, sl *readSlot, f *readFlight, fn func([]byte) ([]byte, error)) {
	bp := getBuf()
	f.body = bp
	f.err = errReadAborted
	defer func() {
		g.mu.Lock()
		f.refs.Store(f.joined + 1)
		if sl.next != nil {
			sl.running, sl.next = sl.next, nil
		} else {
			sl.running = nil
			delete(g.slots, key)
			slotPool.Put(sl)
		}
		g.mu.Unlock()
		f.wg.Done()
	}()
	b, err := fn((*bp)[:0])
	*bp = b
	f.err = err
}

// answer writes the reply of f to ctx, or returns its error, and lets go
// of f.
func answer(ctx *fasthttp.RequestCtx, f *readFlight) error {
	err := f.err // f is recycled by the last release
	if err == nil {
		writeJSON(ctx, fasthttp.StatusOK, *f.body)
	}
	release(f)
	return err
}

// release drops one request's hold on f; the last one recycles it.
func release(f *readFlight) {
	if f.refs.Add(-1) != 0 {
		return
	}
	putBuf(f.body)
	f.body, f.err, f.joined = nil, nil, 0
	flightPool.Put(f)
}
