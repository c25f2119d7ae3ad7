package main

import (
	"net"
	"sync"
)

// gateListener lets a graceful shutdown stop accepting connections while
// the server keeps serving the ones it has: fasthttp's own Shutdown closes
// idle keep-alive connections at once, so a request racing it would get a
// reset instead of the 503 + Connection: close that tells a client to retry
// elsewhere. fleetd first stops accepting, answers 503 for a grace period,
// then lets fasthttp shut down.
type gateListener struct {
	net.Listener
	gate     chan struct{} // closed: stop accepting
	closed   chan struct{} // closed: Close was called
	gateOnce sync.Once
	once     sync.Once
}

func newGateListener(l net.Listener) *gateListener {
	return &gateListener{Listener: l, gate: make(chan struct{}), closed: make(chan struct{})}
}

// Accept blocks once accepting stopped, until Close: the server's accept
// loop must not end before the server's Shutdown runs.
func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		select {
		case <-l.gate:
			<-l.closed
			return nil, net.ErrClosed
		default:
		}
	}
	return c, err
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
