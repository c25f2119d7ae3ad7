package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/redisstore"
)

// replicaEvents makes a deterministic stream over 3 workspaces: devices
// register, flap with increasing ts, and run sessions with durations.
func replicaEvents(seed uint64) []string {
	r := rand.New(rand.NewPCG(seed, 1))
	base := time.Now().Add(-30 * time.Minute).UnixMilli()
	var out []string
	for i := range 60 {
		out = append(out, fmt.Sprintf(`{"type":"device.registered","id":"r%d","qdDeviceId":"rd%d","workspaceId":"rw%d","name":"n%d","os":"Linux","ts":%d}`, i, i, i%3, i, base))
	}
	for k := range 1500 {
		d := r.IntN(60)
		ts := base + int64(k+1)*1000
		switch r.IntN(4) {
		case 0, 1:
			out = append(out, fmt.Sprintf(`{"type":"device.online.changed","id":"o%d","qdDeviceId":"rd%d","online":%v,"ts":%d}`, k, d, r.IntN(2) == 0, ts))
		case 2:
			dur := r.IntN(600)
			out = append(out,
				fmt.Sprintf(`{"type":"session.started","id":"s%d","qdDeviceId":"rd%d","sessionId":"ss%d","ts":%d}`, k, d, k, ts),
				fmt.Sprintf(`{"type":"session.ended","id":"e%d","qdDeviceId":"rd%d","sessionId":"ss%d","status":"success","durationSec":%d,"ts":%d}`, k, d, k, dur, ts+int64(dur)*1000))
		case 3:
			out = append(out, fmt.Sprintf(`{"type":"session.started","id":"l%d","qdDeviceId":"rd%d","sessionId":"ls%d","ts":%d}`, k, d, k, ts))
		}
	}
	return out
}

// snapshot is the observable state of the replica workspaces.
func snapshot(tb testing.TB, s *redisstore.Store) string {
	tb.Helper()
	ctx := context.Background()
	var b strings.Builder
	all, err := s.Stats(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Workspace < all[j].Workspace })
	for _, st := range all {
		j, _ := json.Marshal(st)
		b.WriteString(string(j) + "\n")
		for cursor := ""; ; {
			p, err := s.ListDevices(ctx, st.Workspace, fleet.DeviceFilter{}, cursor, 500)
			if err != nil {
				tb.Fatal(err)
			}
			for _, d := range p.Items {
				fmt.Fprintf(&b, "%+v\n", d)
			}
			if cursor = p.Next; cursor == "" {
				break
			}
		}
		for cursor := ""; ; {
			p, err := s.ListSessions(ctx, st.Workspace, fleet.SessionFilter{}, cursor, 500)
			if err != nil {
				tb.Fatal(err)
			}
			for _, x := range p.Items {
				if x.Status == fleet.StatusLive {
					x.DurationSec = 0 // elapsed time differs between the two reads
				}
				fmt.Fprintf(&b, "%+v\n", x)
			}
			if cursor = p.Next; cursor == "" {
				break
			}
		}
		u, err := s.Usage(ctx, st.Workspace, time.Now().Add(-24*time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			tb.Fatal(err)
		}
		fmt.Fprintf(&b, "usage %d %d %d\n", u.SessionSeconds, u.ActiveDevices, u.Devices)
	}
	return b.String()
}

// TestReplicasConverge: the same events split between two fleetd replicas
// on one Redis, shuffled and partly redelivered, end in the state that one
// replica reaches with the events in order.
func TestReplicasConverge(t *testing.T) {
	events := replicaEvents(7)

	envA, storeA := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	one := MustStart(t, envA)
	for lo := 0; lo < len(events); lo += 100 {
		hi := min(lo+100, len(events))
		if r := one.webhook(t, "["+strings.Join(events[lo:hi], ",")+"]"); r.code != 200 {
			t.Fatalf("in order: %d %s", r.code, r.raw)
		}
	}

	envB, storeB := testBackend(t, map[string]string{"FLEETD_WEBHOOK_SECRET": testSecret})
	replicas := []*daemon{MustStart(t, envB), MustStart(t, envB)}
	shuffled := append([]string(nil), events...)
	r := rand.New(rand.NewPCG(99, 2))
	r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	shuffled = append(shuffled, shuffled[:200]...) // redeliveries
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := w * 20; lo < len(shuffled); lo += 80 {
				hi := min(lo+20, len(shuffled))
				d := replicas[(lo/20)%2]
				if r := d.webhook(t, "["+strings.Join(shuffled[lo:hi], ",")+"]"); r.code != 200 {
					t.Errorf("shuffled: %d %s", r.code, r.raw)
					return
				}
			}
		}()
	}
	wg.Wait()
	a, b := snapshot(t, storeA), snapshot(t, storeB)
	if a != b {
		la, lb := strings.Split(a, "\n"), strings.Split(b, "\n")
		for i := range min(len(la), len(lb)) {
			if la[i] != lb[i] {
				t.Fatalf("state differs (first at line %d):\n in order: %s\n shuffled: %s", i, la[i], lb[i])
			}
		}
		t.Fatalf("state differs in length: %d vs %d lines", len(la), len(lb))
	}
	if !strings.Contains(a, `"Devices":20`) {
		t.Fatalf("unexpected state:\n%s", a[:min(len(a), 500)])
	}
}
