package redisstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestDedupeByID(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)))
	wantResults(t, apply(t, s, online("d1", true, t0, "e1"), online("d1", true, t0, "e1")), fleet.Accepted, fleet.Duplicate)
	// A redelivery a day later is still a duplicate (window ≥ 24 h).
	s.SetClock(func() time.Time { return t0.Add(24 * time.Hour) })
	wantResults(t, apply(t, s, online("d1", false, t0.Add(time.Second), "e1")), fleet.Duplicate)
	if d := device(t, s, "acme", "d1"); !d.Online {
		t.Fatal("a duplicate changed the device")
	}
}

// De-duplication over three days with enough ids that the second and
// third days use several buckets (sized from the day before): every
// redelivery within the window is a duplicate, and the buckets stay small
// hashes (listpack), which is what makes an id cost ~20 bytes.
func TestDedupeAcrossDaysAndBuckets(t *testing.T) {
	s, _ := MustOpen(t)
	day := t0.Truncate(24 * time.Hour).Add(time.Hour)
	s.SetClock(func() time.Time { return day })
	apply(t, s, reg("d1", "acme", day.Add(-time.Hour)))
	ts := day
	batch := func(prefix string, n int) []fleet.Event {
		var out []fleet.Event
		for i := range n {
			ts = ts.Add(time.Millisecond)
			out = append(out, online("d1", i%2 == 0, ts, fmt.Sprintf("%s-%d", prefix, i)))
		}
		return out
	}
	want := func(res []fleet.Result, r fleet.Result, what string) {
		t.Helper()
		for i, got := range res {
			if got != r {
				t.Fatalf("%s: event %d is %v, want %v", what, i, got, r)
			}
		}
	}
	want(apply(t, s, batch("a", 600)...), fleet.Accepted, "day 1, new ids")
	s.SetClock(func() time.Time { return day.Add(24 * time.Hour) })
	want(apply(t, s, batch("a", 600)...), fleet.Duplicate, "day 2, day 1's ids again")
	want(apply(t, s, batch("b", 600)...), fleet.Accepted, "day 2, new ids")
	want(apply(t, s, batch("b", 600)...), fleet.Duplicate, "day 2, day 2's ids again")
	s.SetClock(func() time.Time { return day.Add(48 * time.Hour) })
	want(apply(t, s, batch("b", 600)...), fleet.Duplicate, "day 3, day 2's ids again")
	want(apply(t, s, batch("c", 600)...), fleet.Accepted, "day 3, new ids")

	// Day 2 sized its buckets from day 1's 600 ids: 16 buckets of ~38.
	day2 := (day.UnixMilli() / dayMs) + 1
	keys, ids := dedupeBuckets(t, s, "acme", day2, true)
	if keys != 16 || ids != 600 {
		t.Fatalf("day 2: %d ids in %d buckets, want 600 in 16", ids, keys)
	}
}

// A workspace's first day has no day before to size its buckets from: it
// is sized from its devices (4 ids a device, ~64 a bucket), so that its
// ids do not pile up in one long listpack that every id scans.
func TestDedupeFirstDaySizedFromDevices(t *testing.T) {
	s, _ := MustOpen(t)
	day := t0.Truncate(24 * time.Hour).Add(time.Hour)
	s.SetClock(func() time.Time { return day })
	var regs, events []fleet.Event
	for i := range 256 {
		regs = append(regs, reg(fmt.Sprintf("d%d", i), "acme", day.Add(-time.Hour)))
	}
	apply(t, s, regs...)
	for i := range 1024 {
		events = append(events, online(fmt.Sprintf("d%d", i%256), i%2 == 0, day.Add(time.Duration(i)*time.Millisecond), fmt.Sprintf("id-%d", i)))
	}
	wantResults(t, apply(t, s, events[:1]...), fleet.Accepted)
	apply(t, s, events[1:]...)
	wantResults(t, apply(t, s, events[:1]...), fleet.Duplicate)

	// 256 devices: 1,024 ids expected, 16 buckets of ~64.
	keys, ids := dedupeBuckets(t, s, "acme", day.UnixMilli()/dayMs, false)
	if keys != 16 || ids != 1024 {
		t.Fatalf("day 1: %d ids in %d buckets, want 1024 in 16", ids, keys)
	}
}

// dedupeBuckets counts the non-empty de-duplication buckets (of the first
// 64) of workspace ws on day and the ids they hold, and fails unless each
// has its expiry and, with listpack, is a listpack.
func dedupeBuckets(t *testing.T, s *Store, ws string, day int64, listpack bool) (keys, ids int64) {
	t.Helper()
	ctx := context.Background()
	for k := range 64 {
		key := fmt.Sprintf("%ssn:%d:%d", wsPrefix(ws), day, k)
		n, err := s.rdb.HLen(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			continue
		}
		keys++
		ids += n
		if listpack {
			if enc, err := s.rdb.ObjectEncoding(ctx, key).Result(); err != nil || enc != "listpack" {
				t.Fatalf("%s is %q (%v), want a listpack", key, enc, err)
			}
		}
		if ttl, err := s.rdb.TTL(ctx, key).Result(); err != nil || ttl <= 0 {
			t.Fatalf("%s has TTL %v (%v), want one", key, ttl, err)
		}
	}
	return keys, ids
}
