package fleetfake

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

var (
	_ fleet.Reader   = (*Store)(nil)
	_ fleet.KeyStore = (*Store)(nil)
	_ fleet.Ingester = (*Store)(nil)
)

var t0 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func mustApply(tb testing.TB, s *Store, events ...fleet.Event) []fleet.Result {
	tb.Helper()
	res := make([]fleet.Result, len(events))
	if err := s.Apply(context.Background(), events, res); err != nil {
		tb.Fatal(err)
	}
	return res
}

func reg(dev, ws string, ts time.Time) fleet.Event {
	return fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: dev, WorkspaceID: ws, Name: "n-" + dev, OS: "Linux", UserID: "u1", TS: ts.UnixMilli(), DurationSec: -1}
}

func TestApplyResults(t *testing.T) {
	s := New()
	e := reg("d1", "acme", t0)
	e.ID = "evt-1"
	got := mustApply(t, s, e, e, fleet.Event{Type: fleet.EventUnknown, ID: "evt-2"})
	want := []fleet.Result{fleet.Accepted, fleet.Duplicate, fleet.Ignored}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d: %v, want %v", i, got[i], want[i])
		}
	}
}

func TestDevicesAndPages(t *testing.T) {
	s := New()
	s.SetClock(func() time.Time { return t0.Add(time.Hour) })
	ctx := context.Background()
	for i := range 7 {
		mustApply(t, s, reg(fmt.Sprintf("d%d", i), "acme", t0))
	}
	mustApply(t, s, reg("other", "beta", t0), fleet.Event{Type: fleet.EventOnlineChanged, DeviceID: "d3", Online: true, TS: t0.Add(time.Minute).UnixMilli(), DurationSec: -1})

	var ids []string
	cursor := ""
	for range 10 {
		p, err := s.ListDevices(ctx, "acme", fleet.DeviceFilter{}, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range p.Items {
			ids = append(ids, d.ID)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if fmt.Sprint(ids) != "[d0 d1 d2 d3 d4 d5 d6]" {
		t.Fatalf("walked %v", ids)
	}
	on := true
	p, _ := s.ListDevices(ctx, "acme", fleet.DeviceFilter{Online: &on, OS: "LINUX"}, "", 50)
	if len(p.Items) != 1 || p.Items[0].ID != "d3" || !p.Items[0].LastSeen.Equal(t0.Add(time.Minute)) {
		t.Fatalf("online filter: %+v", p.Items)
	}
	if _, err := s.ListDevices(ctx, "acme", fleet.DeviceFilter{}, "!!", 3); fleet.ErrorCode(err) != fleet.EINVALID {
		t.Fatalf("malformed cursor: %v", err)
	}
	if _, err := s.Device(ctx, "acme", "other"); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("another workspace's device: %v", err)
	}

	d, err := s.UnbindDevice(ctx, "acme", "d1")
	if err != nil || d.UserID != "" {
		t.Fatalf("unbind: %+v %v", d, err)
	}
	if err := s.RotateDeviceSecret(ctx, "acme", "d3", []byte("h"), t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if d, _ := s.Device(ctx, "acme", "d3"); d.Online {
		t.Fatal("online after a secret rotation")
	}
}

func TestSessionsAndUsage(t *testing.T) {
	s := New()
	s.SetClock(func() time.Time { return t0.Add(time.Hour) })
	ctx := context.Background()
	mustApply(t, s, reg("d1", "acme", t0),
		fleet.Event{Type: fleet.EventSessionStarted, DeviceID: "d1", SessionID: "s1", TS: t0.Add(time.Minute).UnixMilli(), DurationSec: -1},
		fleet.Event{Type: fleet.EventSessionEnded, DeviceID: "d1", SessionID: "s1", Status: "success", DurationSec: 120, TS: t0.Add(3 * time.Minute).UnixMilli()},
		fleet.Event{Type: fleet.EventSessionStarted, DeviceID: "d1", SessionID: "s2", TS: t0.Add(10 * time.Minute).UnixMilli(), DurationSec: -1},
	)
	p, err := s.ListSessions(ctx, "acme", fleet.SessionFilter{}, "", 1)
	if err != nil || len(p.Items) != 1 || p.Items[0].ID != "s2" || p.Items[0].Status != fleet.StatusLive || p.Next == "" {
		t.Fatalf("first page: %+v %v", p, err)
	}
	p, err = s.ListSessions(ctx, "acme", fleet.SessionFilter{}, p.Next, 1)
	if err != nil || len(p.Items) != 1 || p.Items[0].ID != "s1" || p.Items[0].DurationSec != 120 || p.Next != "" {
		t.Fatalf("second page: %+v %v", p, err)
	}
	u, _ := s.Usage(ctx, "acme", t0, t0.Add(2*time.Hour))
	if u.SessionSeconds != 120 || u.ActiveDevices != 1 || u.Devices != 1 {
		t.Fatalf("usage %+v", u)
	}
}

func TestMembersAndKeys(t *testing.T) {
	s := New()
	ctx := context.Background()
	m := fleet.Member{Email: "a@b.c", Role: fleet.RoleMember, Status: fleet.MemberInvited, InvitedAt: t0}
	if err := s.AddMember(ctx, "acme", m); err != nil {
		t.Fatal(err)
	}
	if err := s.AddMember(ctx, "acme", m); fleet.ErrorCode(err) != fleet.ECONFLICT {
		t.Fatalf("second invite: %v", err)
	}
	if p, _ := s.ListMembers(ctx, "acme", "", 50); len(p.Items) != 1 {
		t.Fatalf("members %+v", p)
	}

	hash := []byte("hash-of-a-key")
	if err := s.CreateKey(ctx, hash, fleet.APIKey{ID: "key_1", Workspace: "acme", CreatedAt: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeyByHash(ctx, []byte("other")); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("unknown key: %v", err)
	}
	if err := s.TouchKey(ctx, "key_1", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if k, err := s.RevokeKey(ctx, "", hash); err != nil || !k.Revoked {
		t.Fatalf("revoke by hash: %+v %v", k, err)
	}
	ks, _ := s.ListKeys(ctx, "acme")
	if len(ks) != 1 || !ks[0].Revoked || !ks[0].LastUsedAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("keys %+v", ks)
	}
	if _, err := s.RevokeKey(ctx, "key_nope", nil); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("revoke unknown: %v", err)
	}
}
