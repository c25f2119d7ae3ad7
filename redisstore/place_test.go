package redisstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestMoveBetweenWorkspaces(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", true, t0.Add(-time.Minute), ""),
		started("d1", "s1", t0.Add(-30*time.Minute)), ended("d1", "s1", "success", 60, t0.Add(-29*time.Minute)))
	apply(t, s, reg("d1", "b", t0))
	a, b := stats(t, s, "a"), stats(t, s, "b")
	if a.Devices != 0 || a.Online != 0 || b.Devices != 1 || b.Online != 1 {
		t.Fatalf("after move: a=%+v b=%+v, want the device (online) in b only", a, b)
	}
	if a.SessionSeconds != 60 || b.SessionSeconds != 0 {
		t.Fatalf("session history must stay where it happened: a=%+v b=%+v", a, b)
	}
	// Later events follow the device to b.
	apply(t, s, online("d1", false, t0, ""))
	if b := stats(t, s, "b"); b.Online != 0 {
		t.Fatalf("b = %+v, want offline", b)
	}
}

func TestDeleteThenEventsAreKept(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", true, t0.Add(-time.Minute), ""))
	wantResults(t, apply(t, s, fleet.Event{Type: fleet.EventDeviceDeleted, DeviceID: "d1", TS: ms(t0)}), fleet.Accepted)
	if a := stats(t, s, "a"); a.Devices != 0 || a.Online != 0 {
		t.Fatalf("after delete: %+v", a)
	}
	wantResults(t, apply(t, s, online("d1", true, t0.Add(time.Second), "")), fleet.Accepted)
	if a := stats(t, s, "a"); a.Devices != 0 || a.Online != 0 {
		t.Fatalf("an event after delete resurrected the device: %+v", a)
	}
	apply(t, s, reg("d1", "a", t0.Add(2*time.Second)))
	if a := stats(t, s, "a"); a.Devices != 1 || a.Online != 1 {
		t.Fatalf("re-registered device should take the kept online event: %+v", a)
	}
}

// A placement interrupted after its index step (a crash) heals when it is
// redelivered: the device leaves the workspace, and an event meanwhile
// keeps its effect.
func TestInterruptedPlacementHealsOnRedelivery(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)))
	crash := errors.New("crash")
	s.hookStep = func(step string) error {
		if step == "placed" {
			return crash
		}
		return nil
	}
	del := fleet.Event{Type: fleet.EventDeviceDeleted, DeviceID: "d1", TS: ms(t0.Add(-time.Minute))}
	if err := s.Apply(context.Background(), []fleet.Event{del}, make([]fleet.Result, 1)); !errors.Is(err, crash) {
		t.Fatalf("apply: %v, want the crash", err)
	}
	s.hookStep = nil
	apply(t, s, online("d1", true, t0, ""))
	wantResults(t, apply(t, s, del), fleet.Duplicate)
	if a := stats(t, s, "a"); a.Devices != 0 || a.Online != 0 {
		t.Fatalf("after the redelivered delete: %+v", a)
	}
	apply(t, s, reg("d1", "a", t0.Add(time.Second)))
	if a := stats(t, s, "a"); a.Devices != 1 || a.Online != 1 {
		t.Fatalf("after re-registering: %+v, want the online event kept", a)
	}
}

// Another replica moving a device makes this replica's cache stale: the
// event must still land in the new workspace.
func TestStaleCacheFollowsMove(t *testing.T) {
	s, b := MustOpen(t)
	other := b.open(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", false, t0.Add(-time.Hour), "")) // s caches d1 → a
	apply(t, other, reg("d1", "b", t0.Add(-time.Minute)))
	apply(t, s, online("d1", true, t0, ""))
	if b := stats(t, s, "b"); b.Online != 1 || b.Devices != 1 {
		t.Fatalf("b = %+v, want d1 online there", b)
	}
}

// A replica whose cache still names the old workspace applies an event to
// the old copy while another replica moves the device: the event's
// presence reaches the new workspace instead of being evicted with the copy.
func TestMoveKeepsPresenceFromARacingReplica(t *testing.T) {
	s, b := MustOpen(t)
	other := b.open(t)
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", false, t0.Add(-time.Hour), ""))
	apply(t, other, online("d1", false, t0.Add(-50*time.Minute), "")) // other caches d1 → a
	raced := false
	s.hookStep = func(step string) error {
		if step == "placed" && !raced {
			raced = true
			wantResults(t, apply(t, other, online("d1", true, t0.Add(-time.Second), "")), fleet.Accepted)
		}
		return nil
	}
	apply(t, s, reg("d1", "b", t0.Add(-time.Minute)))
	if !raced {
		t.Fatal("the registration did not move the device")
	}
	if a, b := stats(t, s, "a"), stats(t, s, "b"); a.Devices != 0 || a.Online != 0 || b.Devices != 1 || b.Online != 1 {
		t.Fatalf("a=%+v b=%+v, want d1 online in b only", a, b)
	}
	d, err := s.Device(context.Background(), "b", "d1")
	if err != nil || !d.LastSeen.Equal(t0.Add(-time.Second)) {
		t.Fatalf("device %+v %v, want last seen %v", d, err, t0.Add(-time.Second))
	}
}
