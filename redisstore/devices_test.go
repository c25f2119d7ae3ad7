package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestRotateSecretTakesDeviceOffline(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)), online("d1", true, t0.Add(-time.Minute), ""))
	rot := t0.Truncate(time.Second)
	if err := s.RotateDeviceSecret(ctx, "a", "d1", []byte{1, 2, 3}, rot); err != nil {
		t.Fatal(err)
	}
	if d := device(t, s, "a", "d1"); d.Online {
		t.Fatal("device online after rotation")
	}
	wantResults(t, apply(t, s, online("d1", true, rot, "")), fleet.Stale)
	wantResults(t, apply(t, s, online("d1", true, rot.Add(time.Millisecond), "")), fleet.Accepted)
	if err := s.RotateDeviceSecret(ctx, "b", "d1", []byte{1}, rot); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("rotate in another workspace: %v", err)
	}
}

func TestListDevicesPaging(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	var evs []fleet.Event
	for i := range 23 {
		evs = append(evs, reg(fmt.Sprintf("d%02d", i), "a", t0))
		if i%3 == 0 {
			evs = append(evs, online(fmt.Sprintf("d%02d", i), true, t0, ""))
		}
	}
	apply(t, s, evs...)
	on, off := true, false
	for name, tc := range map[string]struct {
		f    fleet.DeviceFilter
		want int
	}{"all": {fleet.DeviceFilter{}, 23}, "online": {fleet.DeviceFilter{Online: &on}, 8}, "offline": {fleet.DeviceFilter{Online: &off}, 15},
		"os": {fleet.DeviceFilter{OS: "linux"}, 23}, "other os": {fleet.DeviceFilter{OS: "windows"}, 0}} {
		t.Run(name, func(t *testing.T) {
			seen := map[string]bool{}
			cursor := ""
			for pages := 0; ; pages++ {
				p, err := s.ListDevices(ctx, "a", tc.f, cursor, 5)
				if err != nil {
					t.Fatal(err)
				}
				if p.Next != "" && len(p.Items) != 5 {
					t.Fatalf("short page %d with a next cursor", len(p.Items))
				}
				for _, d := range p.Items {
					if seen[d.ID] {
						t.Fatalf("%s listed twice", d.ID)
					}
					seen[d.ID] = true
					if tc.f.Online != nil && d.Online != *tc.f.Online {
						t.Fatalf("%s online=%v does not match the filter", d.ID, d.Online)
					}
				}
				if cursor = p.Next; cursor == "" {
					break
				}
			}
			if len(seen) != tc.want {
				t.Fatalf("listed %d, want %d", len(seen), tc.want)
			}
		})
	}
	if _, err := s.ListDevices(ctx, "a", fleet.DeviceFilter{}, "!!notbase64", 5); fleet.ErrorCode(err) != fleet.EINVALID {
		t.Fatalf("malformed cursor: %v", err)
	}
}

// A filter that matches little is served in bounded script calls; pages
// still come full and every match exactly once.
func TestListingAcrossScanBudget(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	var evs []fleet.Event
	for i := range 2*scanBudget + 500 {
		e := reg(fmt.Sprintf("d%05d", i), "a", t0)
		if i%1000 == 7 {
			e.OS = "Windows"
		}
		evs = append(evs, e)
	}
	apply(t, s, evs...)
	var got []string
	for cursor := ""; ; {
		p, err := s.ListDevices(ctx, "a", fleet.DeviceFilter{OS: "WINDOWS"}, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		if p.Next != "" && len(p.Items) != 2 {
			t.Fatalf("short page %v with a next cursor", p.Items)
		}
		for _, d := range p.Items {
			got = append(got, d.ID)
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if fmt.Sprint(got) != "[d00007 d01007 d02007 d03007 d04007]" {
		t.Fatalf("windows devices = %v", got)
	}

	// Sessions tied on one start time page by id without loss or repeats.
	evs = evs[:0]
	for i := range 700 {
		evs = append(evs, started("d00001", fmt.Sprintf("s%04d", i), t0.Add(-time.Minute)))
	}
	apply(t, s, evs...)
	seen := map[string]bool{}
	for cursor := ""; ; {
		p, err := s.ListSessions(ctx, "a", fleet.SessionFilter{Status: "live"}, cursor, 99)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range p.Items {
			if seen[x.ID] {
				t.Fatalf("%s listed twice", x.ID)
			}
			seen[x.ID] = true
		}
		if cursor = p.Next; cursor == "" {
			break
		}
	}
	if len(seen) != 700 {
		t.Fatalf("listed %d sessions, want 700", len(seen))
	}
}

func TestUnbindMissingDeviceIsNotFound(t *testing.T) {
	s, _ := MustOpen(t)
	if _, err := s.UnbindDevice(context.Background(), "a", "nope"); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("err = %v, want not_found", err)
	}
	apply(t, s, fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: "d1", WorkspaceID: "a", Name: "n", OS: "L", UserID: "u1", TS: ms(t0)})
	d, err := s.UnbindDevice(context.Background(), "a", "d1")
	if err != nil || d.UserID != "" || d.Name != "n" {
		t.Fatalf("unbind = %+v, %v", d, err)
	}
}
