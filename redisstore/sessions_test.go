package redisstore

import (
	"context"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestSessionEndedCountedOnce(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)))
	e := ended("d1", "s1", "success", 120, t0)
	e.ID = "x1"
	e2 := e
	e2.ID = "x2" // the same session ended, redelivered under a new id
	wantResults(t, apply(t, s, started("d1", "s1", t0.Add(-2*time.Minute)), e, e, e2), fleet.Accepted, fleet.Accepted, fleet.Duplicate, fleet.Duplicate)
	st := stats(t, s, "acme")
	if st.SessionSeconds != 120 || st.Ended["success"] != 1 || st.LiveSessions != 0 {
		t.Fatalf("stats = %+v, want 120 s, 1 ended, 0 live", st)
	}
}

func TestLateSessionStartDoesNotMakeLive(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)))
	apply(t, s, ended("d1", "s1", "failed", -1, t0))
	wantResults(t, apply(t, s, started("d1", "s1", t0.Add(-time.Minute))), fleet.Accepted)
	if st := stats(t, s, "acme"); st.LiveSessions != 0 || st.Ended["failed"] != 1 || st.SessionSeconds != 60 {
		t.Fatalf("stats = %+v, want no live session, 1 failed of 60 s (recomputed from the late start)", st)
	}
	page, err := s.ListSessions(context.Background(), "acme", fleet.SessionFilter{}, "", 10)
	if err != nil || len(page.Items) != 1 {
		t.Fatalf("sessions = %+v, %v", page, err)
	}
	if got := page.Items[0]; got.Status != "failed" || !got.At.Equal(t0.Add(-time.Minute)) {
		t.Fatalf("session = %+v, want failed, at = the late start", got)
	}
}

func TestLiveSessionBound(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-48*time.Hour)), started("d1", "old", t0.Add(-25*time.Hour)), started("d1", "new", t0.Add(-time.Minute)))
	if st := stats(t, s, "acme"); st.LiveSessions != 1 {
		t.Fatalf("live = %d, want 1: a session older than the bound (24 h) is not live", st.LiveSessions)
	}
	page, err := s.ListSessions(context.Background(), "acme", fleet.SessionFilter{}, "", 10)
	if err != nil || len(page.Items) != 2 {
		t.Fatalf("sessions = %+v, %v", page, err)
	}
	if page.Items[0].Status != fleet.StatusLive || page.Items[0].DurationSec != 60 || page.Items[1].Status != fleet.StatusAbandoned {
		t.Fatalf("sessions = %+v, want live (60 s) then abandoned", page.Items)
	}
	// A session that was live ages out as time passes.
	s.SetClock(func() time.Time { return t0.Add(24 * time.Hour) })
	if st := stats(t, s, "acme"); st.LiveSessions != 0 {
		t.Fatalf("live = %d after the bound, want 0", st.LiveSessions)
	}
}
