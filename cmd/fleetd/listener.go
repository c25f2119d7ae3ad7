package main

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// gateListener lets a graceful shutdown stop accepting connections while
// the server keeps serving the ones it has: fasthttp's own Shutdown closes
// idle keep-alive connections at once, so a request racing it would get a
// reset instead of the 503 + Connection: close that tells a client to retry
// elsewhere. fleetd first stops accepting, answers 503 for a grace period,
// then lets fasthttp shut down.
//
// It also enforces the connection limit (--concurrency) itself: fasthttp's
// own answer past Server.Concurrency is a plain-text 503 without
// Retry-After, so the server's limit is set above this one and a refused
// connection gets refusal (the JSON error of every other answer) here.
type gateListener struct {
	net.Listener
	gate     chan struct{} // closed: stop accepting
	closed   chan struct{} // closed: Close was called
	gateOnce sync.Once
	once     sync.Once

	limit    int64         // most connections open at once; 0: no limit
	open     atomic.Int64  // connections handed out and not yet released
	refusal  []byte        // the whole HTTP response of a refused connection
	refusing chan struct{} // bounds the goroutines answering refusals
	onRefuse func()        // called per refused connection, if set
}

// maxRefusing bounds the refused connections being answered at once; past
// it a refused connection is closed without an answer.
const maxRefusing = 256

// refuseLinger bounds how long a refused connection may take to receive
// its answer and close.
const refuseLinger = time.Second

func newGateListener(l net.Listener, limit int, refusal []byte, onRefuse func()) *gateListener {
	return &gateListener{
		Listener: l, gate: make(chan struct{}), closed: make(chan struct{}),
		limit: int64(limit), refusal: refusal, refusing: make(chan struct{}, maxRefusing), onRefuse: onRefuse,
	}
}

// Accept blocks once accepting stopped, until Close: the server's accept
// loop must not end before the server's Shutdown runs.
func (l *gateListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			select {
			case <-l.gate:
				<-l.closed
				return nil, net.ErrClosed
			default:
			}
			return nil, err
		}
		if n := l.open.Add(1); l.limit > 0 && n > l.limit {
			l.open.Add(-1)
			l.refuse(c)
			continue
		}
		return c, nil
	}
}

// refuse answers c with the refusal and closes it, without blocking the
// accept loop. The request is drained after the answer so that closing
// does not reset the connection before the client read the answer.
func (l *gateListener) refuse(c net.Conn) {
	if l.onRefuse != nil {
		l.onRefuse()
	}
	select {
	case l.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-l.refusing }()
		defer c.Close()
		c.SetDeadline(time.Now().Add(refuseLinger))
		if _, err := c.Write(l.refusal); err != nil {
			return
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		io.Copy(io.Discard, io.LimitReader(c, 64<<10))
	}()
}

// StopAccepting closes the socket: new connections are refused by the
// kernel, existing ones keep being served.
func (l *gateListener) StopAccepting() {
	l.gateOnce.Do(func() {
		close(l.gate)
		l.Listener.Close()
	})
}

// Close implements net.Listener.
func (l *gateListener) Close() error {
	l.StopAccepting()
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Release gives back the slot of a connection that the server closed (or
// handed off): wired to fasthttp's ConnState, so the connections keep
// their own type (fasthttp writes large answers with writev only on a
// *net.TCPConn).
func (l *gateListener) Release() { l.open.Add(-1) }

// Open returns the connections handed out and not yet released.
func (l *gateListener) Open() int64 { return l.open.Load() }
