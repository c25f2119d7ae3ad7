package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestEventsBeforeRegistrationApplyOnRegister(t *testing.T) {
	s, _ := MustOpen(t)
	wantResults(t, apply(t, s,
		online("d1", true, t0.Add(-30*time.Second), "o1"),
		online("d1", false, t0.Add(-40*time.Second), ""),
		started("d1", "s1", t0.Add(-5*time.Minute)),
		ended("d1", "s1", "success", -1, t0.Add(-time.Minute)),
		online("d1", true, t0, "o1"),
	), fleet.Accepted, fleet.Stale, fleet.Accepted, fleet.Accepted, fleet.Duplicate)
	wantResults(t, apply(t, s, reg("d1", "acme", t0.Add(-time.Hour))), fleet.Accepted)
	d := device(t, s, "acme", "d1")
	if !d.Online || !d.LastSeen.Equal(t0.Add(-30*time.Second)) {
		t.Fatalf("device = %+v, want online (kept event applied), last_seen of the newest event", d)
	}
	if st := stats(t, s, "acme"); st.SessionSeconds != 240 || st.Online != 1 {
		t.Fatalf("stats = %+v, want the kept session's 240 s", st)
	}
	// Kept events are dropped once applied: registering again changes nothing.
	apply(t, s, reg("d1", "acme", t0))
	if st := stats(t, s, "acme"); st.SessionSeconds != 240 {
		t.Fatalf("replayed twice: %+v", st)
	}
	if keys := keysMatching(t, s, "fl:{d:*}:pend:*"); len(keys) != 0 {
		t.Fatalf("kept events left behind: %v", keys)
	}
}

// Kept sessions are bounded per device: past MaxKeptSessions the one with
// the oldest start goes, counted in KeptDropped; the registration then
// brings the kept ones home, and other devices are not touched.
func TestKeptEventsBound(t *testing.T) {
	b := newBackend(t)
	b.cfg.MaxKeptSessions = 5
	s := b.open(t)
	var evs []fleet.Event
	for i := range 8 {
		evs = append(evs, ended("d1", fmt.Sprintf("s%d", i), "success", 60, t0.Add(time.Duration(i-20)*time.Minute)))
	}
	evs = append(evs, ended("d2", "x1", "success", 30, t0.Add(-time.Minute)))
	apply(t, s, evs...)
	if n := s.KeptDropped(); n != 3 {
		t.Fatalf("dropped %d, want 3", n)
	}
	// One more, newer: the oldest kept goes; an older one than all kept goes itself.
	apply(t, s, ended("d1", "s8", "success", 60, t0.Add(-2*time.Minute)), ended("d1", "old", "success", 60, t0.Add(-time.Hour)))
	if n := s.KeptDropped(); n != 5 {
		t.Fatalf("dropped %d, want 5", n)
	}
	apply(t, s, reg("d1", "a", t0.Add(-2*time.Hour)), reg("d2", "a", t0.Add(-2*time.Hour)))
	p, err := s.ListSessions(context.Background(), "a", fleet.SessionFilter{}, "", 50)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, x := range p.Items {
		got = append(got, x.ID)
	}
	if want := "[x1 s8 s7 s6 s5 s4]"; fmt.Sprint(got) != want {
		t.Fatalf("sessions %v, want the newest 5 of d1 and d2's one, %s", got, want)
	}
	if left := keysMatching(t, s, "fl:{d:*}:p*"); len(left) != 0 {
		t.Fatalf("kept events left after registration: %v", left)
	}
}

// A device with more kept sessions than Config.ReplayStep registers within
// one commit bringing ReplayStep of them home; the rest follow in the
// background steps (RunReplays), and the device leaves fl:replays when
// none is left.
func TestKeptEventsReplayInSteps(t *testing.T) {
	b := newBackend(t)
	b.cfg.ReplayStep = 5
	s := b.open(t)
	ctx := context.Background()
	var evs []fleet.Event
	for i := range 12 {
		evs = append(evs, ended("d1", fmt.Sprintf("s%02d", i), "success", 60, t0.Add(time.Duration(i-20)*time.Minute)))
	}
	apply(t, s, evs...)
	apply(t, s, reg("d1", "a", t0.Add(-2*time.Hour)))
	listed := func() int {
		p, err := s.ListSessions(ctx, "a", fleet.SessionFilter{}, "", 50)
		if err != nil {
			t.Fatal(err)
		}
		return len(p.Items)
	}
	if n := listed(); n != 5 {
		t.Fatalf("%d sessions home after the registration, want ReplayStep = 5", n)
	}
	if s.ReplaysDeferred() != 1 {
		t.Fatalf("deferred %d, want 1", s.ReplaysDeferred())
	}
	for step := 0; step < 3; step++ {
		if err := s.ReplayStep(ctx, 8); err != nil {
			t.Fatal(err)
		}
	}
	if n := listed(); n != 12 {
		t.Fatalf("%d sessions home after the background steps, want 12", n)
	}
	if left := keysMatching(t, s, "fl:replays"); len(left) != 0 {
		t.Fatalf("the device is still listed for replay: %v", left)
	}
	if st := stats(t, s, "a"); st.SessionSeconds != 12*60 {
		t.Fatalf("stats %+v, want 720 s", st)
	}
}

// Kept sessions of a deleted device have no home to go to: placements of
// the device (here a redelivered delete) do not list it for the background
// moves, so the moves end (a case the property found with ReplayStep 1,
// where the device stayed listed for good).
func TestKeptSessionsWithoutHomeAreNoMoves(t *testing.T) {
	b := newBackend(t)
	b.cfg.ReplayStep = 1
	s := b.open(t)
	del := fleet.Event{Type: fleet.EventDeviceDeleted, DeviceID: "gone", TS: ms(t0.Add(-time.Hour)), DurationSec: -1}
	apply(t, s, reg("gone", "a", t0.Add(-2*time.Hour)), del)
	for i := range 3 {
		apply(t, s, ended("gone", fmt.Sprintf("g%d", i), "success", 60, t0.Add(time.Duration(i-30)*time.Minute)))
	}
	apply(t, s, del)
	if err := drainReplays(s); err != nil {
		t.Fatal(err)
	}
	if s.ReplaysDeferred() != 0 {
		t.Fatalf("deferred %d placements, want none", s.ReplaysDeferred())
	}
}

// A session kept before the registration that gives it a home, still
// waiting for its replay step, gives a later event of the same session a
// home by its earlier start, though the event alone, after a delete, has
// none: the event is kept with it and both go home at once (a case the
// property found with ReplayStep 1, where the router and keep.lua sent the
// event back and forth until the request failed).
func TestKeptStartGivesLaterEventsAHome(t *testing.T) {
	b := newBackend(t)
	b.cfg.ReplayStep = 1
	s := b.open(t)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	del := fleet.Event{Type: fleet.EventDeviceDeleted, DeviceID: "d", TS: ms(at(-40)), DurationSec: -1}
	evs := []fleet.Event{started("d", "s0", at(-50)), started("d", "s1", at(-45)), reg("d", "w1", at(-60)), del, started("d", "s1", at(-30))}
	p := "kept-start-"
	pe := prefixed(evs, p)
	for _, e := range pe {
		apply(t, s, e)
	}
	if err := drainReplays(s); err != nil {
		t.Fatal(err)
	}
	if diff := differsFromModel(t, s, pe, p, ms(at(-120))); diff != "" {
		t.Fatal(diff)
	}
}

// A kept presence stays kept when the placement that would carry it finds,
// at its adopt step, that a placement on another replica has just made the
// device placed nowhere (here a delete between its sync and its adopt):
// the next registration carries it (a case the property found on the
// cluster with replicas at once, where the presence was dropped unapplied
// and the device stayed offline).
func TestKeptPresenceSurvivesARacingPlacement(t *testing.T) {
	b := newBackend(t)
	a, other := b.open(t), b.open(t)
	at := func(m int) time.Time { return t0.Add(time.Duration(m) * time.Minute) }
	p := "race-kept-"
	on := online(p+"d", true, at(-30), p+"on")
	del := fleet.Event{Type: fleet.EventDeviceDeleted, DeviceID: p + "d", TS: ms(at(-40)), DurationSec: -1}
	first, last := reg(p+"d", p+"w2", at(-50)), reg(p+"d", p+"w0", at(-20))
	apply(t, a, on)
	raced := false
	a.hookStep = func(st string) error {
		if st == "synced" && !raced {
			raced = true
			apply(t, other, del)
		}
		return nil
	}
	apply(t, a, first)
	a.hookStep = nil
	if !raced {
		t.Fatal("the placement had no sync step")
	}
	apply(t, other, last)
	if diff := differsFromModel(t, a, []fleet.Event{on, del, first, last}, p, ms(at(-120))); diff != "" {
		t.Fatal(diff)
	}
}
