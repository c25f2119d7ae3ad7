package main

// Regression tests of issue 10's cases 1-5, end to end through the webhook
// and the REST API of two replicas on a real Redis (or the real Cluster on
// FLEETD_TEST_BACKEND=cluster). Each asserts the state that internal/model
// gives for its events, field by field through the convergence harness, and
// names the fields the issue is about.

import (
	"fmt"
	"testing"
	"time"
)

// Event makers of the scenarios; at is the offset from the run's base
// (now - 2h). Sessions that must be live start after base+55m (the live
// bound of the harness is 65 minutes).
func ms(at time.Duration) int64 { return at.Milliseconds() }

func iReg(id, dev, ws string, at time.Duration) hev {
	return hev{Type: "device.registered", ID: id, TS: ms(at), Device: dev, Workspace: ws, Name: "n-" + ws, OS: "Linux"}
}

func iOnline(id, dev string, at time.Duration, on bool) hev {
	return hev{Type: "device.online.changed", ID: id, TS: ms(at), Device: dev, Online: &on}
}

func iDel(id, dev string, at time.Duration) hev {
	return hev{Type: "device.deleted", ID: id, TS: ms(at), Device: dev}
}

func iStart(id, dev, sid string, at time.Duration) hev {
	return hev{Type: "session.started", ID: id, TS: ms(at), Device: dev, Session: sid}
}

// iEnd is a session.ended; dur < 0 sends no durationSec.
func iEnd(id, dev, sid string, at time.Duration, dur int64) hev {
	e := hev{Type: "session.ended", ID: id, TS: ms(at), Device: dev, Session: sid, Status: "success"}
	if dur >= 0 {
		e.Duration = &dur
	}
	return e
}

// scenario is a history delivered step by step: steps[i] lists, for each
// replica, the events (indexes) it gets as one request in step i.
type scenario struct {
	events     []hev
	concurrent bool
	steps      [][2][]int
}

// run delivers the scenario and checks the whole state against the
// model; it returns the state read, for the assertions of the case.
func (sc scenario) run(t *testing.T, h *convHarness) view {
	t.Helper()
	c := convCase{Events: sc.events, Delivery: convDelivery{Name: t.Name(), Concurrent: sc.concurrent},
		Periods: []convPeriod{{From: -ms(time.Hour), To: ms(3 * time.Hour)}}}
	for i, st := range sc.steps {
		for rep, evs := range st {
			if len(evs) > 0 {
				c.Delivery.Batches = append(c.Delivery.Batches, convBatch{Replica: rep, Events: evs, Step: i})
			}
		}
	}
	r, err := h.newRun(c)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.deliver(r); err != nil {
		t.Fatal(err)
	}
	diffs, report, got, err := h.compare(r)
	if err != nil {
		t.Fatal(err)
	}
	if diffs != nil {
		t.Error(report)
	}
	return got
}

// wantField checks one field of the state read.
func wantField(t *testing.T, got view, path, want string) {
	t.Helper()
	if v, ok := got[path]; !ok || v != want {
		if !ok {
			v = "<absent>"
		}
		t.Errorf("%s = %s, want %s", path, v, want)
	}
}

func TestIssue10(t *testing.T) {
	h := startConvHarness(t)
	const T = 60 * time.Minute // scenarios start at base+1h

	// 1. A redelivered registration must not delete the device: register d
	// in w0 (id reg-a), send it online, move it to w1, redeliver the first
	// registration; a later event still reaches the device.
	t.Run("1 registration redelivered after a move", func(t *testing.T) {
		sc := scenario{events: []hev{
			iReg("reg-a", "d", "w0", T),
			iOnline("on-1", "d", T+time.Minute, true),
			iReg("reg-b", "d", "w1", T+2*time.Minute),
			iOnline("on-2", "d", T+4*time.Minute, false),
			iOnline("on-3", "d", T+5*time.Minute, true),
		}}
		sc.steps = [][2][]int{{{0}}, {{1}}, {nil, {2}}, {{0}}, {nil, {0}}, {{3}, nil}, {nil, {4}}}
		got := sc.run(t, h)
		wantField(t, got, "w1 device d", "200")
		wantField(t, got, "w1 device d.online", "true")
		wantField(t, got, "w1 device d.last_seen", "base+1h5m0s")
		wantField(t, got, "w0 device d", "404")
		wantField(t, got, "metrics fleet_devices{w1}", "1")
		wantField(t, got, "metrics fleet_devices{w0}", "0")
	})

	// 2. Two replicas moving one device at once: replica 0 registers it in
	// w1, replica 1 in w2, both requests fired together, 10 races. Equal
	// ts in even races (the greater workspace, w2, wins), w1 newer in odd
	// ones. Then an online change through replica 0 and a 60 s session
	// through replica 1 must both reach the one workspace it is in.
	t.Run("2 concurrent moves", func(t *testing.T) {
		for race := range 10 {
			t.Run(fmt.Sprint(race), func(t *testing.T) {
				w1ts, winner, loser := T+2*time.Minute, "w2", "w1"
				if race%2 == 1 {
					w1ts, winner, loser = T+3*time.Minute, "w1", "w2"
				}
				sc := scenario{concurrent: true, events: []hev{
					iReg("r0", "d", "w0", T),
					iOnline("o0", "d", T+time.Minute, true),
					iReg("r1", "d", "w1", w1ts),
					iReg("r2", "d", "w2", T+2*time.Minute),
					iOnline("o1", "d", T+4*time.Minute, false),
					iStart("s-start", "d", "s", T+5*time.Minute),
					iEnd("s-end", "d", "s", T+6*time.Minute, 60),
				}}
				sc.steps = [][2][]int{{{0, 1}}, {{2}, {3}}, {{4}, {5, 6}}}
				got := sc.run(t, h)
				wantField(t, got, winner+" device d", "200")
				wantField(t, got, winner+" device d.online", "false")
				wantField(t, got, loser+" device d", "404")
				wantField(t, got, "w0 device d", "404")
				wantField(t, got, "metrics fleet_devices{"+winner+"}", "1")
				wantField(t, got, "metrics fleet_devices{"+loser+"}", "0")
				wantField(t, got, "metrics fleet_devices{w0}", "0")
				wantField(t, got, "metrics fleet_session_seconds_total{"+winner+"}", "60")
				wantField(t, got, "metrics fleet_session_seconds_total{"+loser+"}", "0")
			})
		}
	})

	// 3. A session.ended redelivered after a move is billed once, in the
	// workspace of the session, under its own id and under a new one.
	t.Run("3 end redelivered after a move", func(t *testing.T) {
		end := iEnd("end-1", "d", "s", T+10*time.Minute, 600)
		endNewID := end
		endNewID.ID = "end-1-again"
		sc := scenario{events: []hev{
			iReg("r0", "d", "w0", T),
			end,
			iReg("r1", "d", "w1", T+20*time.Minute),
			endNewID,
		}}
		sc.steps = [][2][]int{{{0, 1}}, {nil, {1}}, {{2}}, {nil, {1}}, {{3}}, {{1}, {3}}}
		got := sc.run(t, h)
		wantField(t, got, "w0 sessions[d@base+1h0m0s]", "success/600")
		wantField(t, got, "metrics fleet_session_seconds_total{w0}", "600")
		wantField(t, got, "metrics fleet_session_seconds_total{w1}", "0")
		wantField(t, got, "w1 usage[month].session_seconds", "0")
		wantField(t, got, "w0 usage[month].session_seconds", "600")
	})

	// 4. A session live at a move, or at a delete, is closed in its
	// workspace by its end: 300 s there, nothing live, nothing elsewhere.
	t.Run("4 session live at a move", func(t *testing.T) {
		sc := scenario{events: []hev{
			iReg("r0", "d", "w0", T),
			iStart("s-start", "d", "s", T+10*time.Minute),
			iReg("r1", "d", "w1", T+12*time.Minute),
			iEnd("s-end", "d", "s", T+15*time.Minute, -1),
		}}
		sc.steps = [][2][]int{{{0, 1}}, {nil, {2}}, {{3}}}
		got := sc.run(t, h)
		wantField(t, got, "w0 sessions[d@base+1h10m0s]", "success/300")
		wantField(t, got, "metrics fleet_sessions_live{w0}", "0")
		wantField(t, got, "metrics fleet_session_seconds_total{w0}", "300")
		wantField(t, got, "metrics fleet_session_seconds_total{w1}", "0")
		wantField(t, got, "w1 device d", "200")
	})
	t.Run("4 session live at a delete", func(t *testing.T) {
		sc := scenario{events: []hev{
			iReg("r0", "d", "w0", T),
			iStart("s-start", "d", "s", T+10*time.Minute),
			iDel("del", "d", T+12*time.Minute),
			iEnd("s-end", "d", "s", T+15*time.Minute, -1),
		}}
		sc.steps = [][2][]int{{{0, 1}}, {nil, {2}}, {{3}}}
		got := sc.run(t, h)
		wantField(t, got, "w0 sessions[d@base+1h10m0s]", "success/300")
		wantField(t, got, "metrics fleet_sessions_live{w0}", "0")
		wantField(t, got, "metrics fleet_session_seconds_total{w0}", "300")
		wantField(t, got, "w0 usage[month].session_seconds", "300")
		wantField(t, got, "w0 device d", "404")
	})

	// 5. Minutes do not depend on arrival order: started at T, ended at
	// T+5m without durationSec, in both orders, is 300 s listed at T.
	for _, order := range []string{"start first", "end first"} {
		t.Run("5 "+order, func(t *testing.T) {
			sc := scenario{events: []hev{
				iReg("r0", "d", "w0", T-10*time.Minute),
				iStart("s-start", "d", "s", T),
				iEnd("s-end", "d", "s", T+5*time.Minute, -1),
			}}
			sc.steps = [][2][]int{{{0}}, {{1}}, {nil, {2}}}
			if order == "end first" {
				sc.steps = [][2][]int{{{0}}, {{2}}, {nil, {1}}}
			}
			got := sc.run(t, h)
			wantField(t, got, "w0 sessions[d@base+1h0m0s]", "success/300")
			wantField(t, got, "w0 usage[month].session_seconds", "300")
			wantField(t, got, "w0 usage[month].session_minutes", "5")
			wantField(t, got, "metrics fleet_session_seconds_total{w0}", "300")
		})
	}
}
