package main

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// readiness says whether Redis answers, and why not, to /readyz, to the
// fleetd_ready metric and to the log. It logs one line at the first check
// (at start), one at each change (WARN when readiness is lost, naming the
// cause; INFO when it is back), and again every readinessRepeat while it
// stays lost; changes closer together than readinessLogEvery are counted
// into the next line instead of logged one by one (a flapping Redis does
// not flood the log). A background loop checks every readinessEvery, so a
// change is logged even when nothing probes /readyz. Safe for concurrent use.
type readiness struct {
	ping func(context.Context) error
	log  *slog.Logger
	now  func() time.Time
	tls  bool // the Redis URL is rediss://: a timeout may be a plain server

	ready atomic.Bool

	mu        sync.Mutex
	checked   bool      // a check has run
	lastOK    bool      // what the last check found
	since     time.Time // when the current state began
	logged    bool      // a line was logged
	lastLog   time.Time // when the last line was logged
	lastState bool      // the state the last line reported
	lastCause string    // the cause the last line reported
	changes   int       // changes of state since the last line
}

const (
	readinessEvery    = 2 * time.Second
	readinessTimeout  = time.Second
	readinessLogEvery = 10 * time.Second
	readinessRepeat   = time.Minute
)

func newReadiness(ping func(context.Context) error, log *slog.Logger, tls bool) *readiness {
	return &readiness{ping: ping, log: log, now: time.Now, tls: tls}
}

// Ready reports what the last check found.
func (r *readiness) Ready() bool { return r.ready.Load() }

// Check pings Redis within readinessTimeout (or ctx), records the outcome
// and logs it by the rules above. Its error is an EUNAVAILABLE fleet
// error whose message names the cause without addresses or credentials
// ("the state store is unreachable: connection refused"); the log line
// carries the full error.
func (r *readiness) Check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readinessTimeout)
	defer cancel()
	err := r.ping(ctx)
	r.record(err)
	if err != nil {
		return fleet.Errorf(fleet.EUNAVAILABLE, "the state store is unreachable: %s", r.cause(err))
	}
	return nil
}

func (r *readiness) record(err error) {
	ok := err == nil
	r.ready.Store(ok)
	cause := ""
	if !ok {
		cause = r.cause(err)
	}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.checked || ok != r.lastOK {
		if r.checked {
			r.changes++
		}
		r.since = now
	}
	r.checked, r.lastOK = true, ok
	differs := !r.logged || ok != r.lastState || cause != r.lastCause
	due := now.Sub(r.lastLog) >= readinessLogEvery
	switch {
	case !r.logged:
	case differs && due:
	case !differs && r.changes > 0 && due: // it flapped and came back
	case !differs && !ok && now.Sub(r.lastLog) >= readinessRepeat:
	default:
		return
	}
	var attrs []any
	if r.changes > 1 || !differs && r.changes > 0 {
		attrs = append(attrs, "changes_since_last_line", r.changes)
	}
	switch {
	case ok && !r.logged:
		r.log.Info("ready: Redis answers")
	case ok && differs:
		r.log.Info("ready again: Redis answers", attrs...)
	case ok:
		r.log.Info("ready: Redis answers, after flapping", attrs...)
	case differs:
		r.log.Warn("NOT READY: Redis does not answer: "+cause, append(attrs, "err", err.Error())...)
	default:
		r.log.Warn("still NOT READY: Redis does not answer: "+cause, append(attrs, "for", now.Sub(r.since).Round(time.Second).String(), "err", err.Error())...)
	}
	r.logged, r.lastLog, r.lastState, r.lastCause, r.changes = true, now, ok, cause, 0
}

// run checks every readinessEvery until ctx ends.
func (r *readiness) run(ctx context.Context) {
	t := time.NewTicker(readinessEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.Check(ctx)
		}
	}
}

// cause names why Redis did not answer, for an operator, without
// addresses or credentials.
func (r *readiness) cause(err error) string {
	msg := err.Error()
	has := func(s ...string) bool {
		for _, x := range s {
			if strings.Contains(msg, x) {
				return true
			}
		}
		return false
	}
	switch {
	case has("first record does not look like a TLS handshake"):
		return "TLS handshake failed: the server does not speak TLS (rediss:// against a plain Redis? use redis://)"
	case has("tls:", "x509:", "certificate"):
		return "TLS handshake failed (certificate or TLS settings of the rediss:// URL)"
	case has("NOAUTH", "WRONGPASS", "invalid password", "invalid username-password", "AUTH"):
		return "authentication failed (check the user and password of the Redis URL)"
	case has("connection refused"):
		return "connection refused (is Redis running on that host and port?)"
	case has("no such host", "server misbehaving"):
		return "unknown host (check the Redis URL's host name)"
	case has("LOADING"):
		return "Redis is loading its data set"
	case has("CLUSTERDOWN"):
		return "the Redis Cluster is down"
	case has("MASTERDOWN", "READONLY", "TRYAGAIN"):
		return "no Redis master answers (failover in progress?)"
	case has("EOF", "reset by peer", "broken pipe"):
		return "the server closed the connection (a TLS-only server? use rediss://)"
	case (errors.Is(err, context.DeadlineExceeded) || has("i/o timeout", "deadline exceeded")) && r.tls:
		return "no answer within " + readinessTimeout.String() + ": with rediss://, a server without TLS never answers the TLS handshake (use redis://?); else a wrong port, a firewall, or Redis overloaded"
	case errors.Is(err, context.DeadlineExceeded), has("i/o timeout", "deadline exceeded"):
		return "no answer within " + readinessTimeout.String() + " (wrong port, a firewall, or Redis overloaded)"
	case has("network is unreachable", "no route to host"):
		return "network unreachable"
	}
	return "Redis did not answer"
}
