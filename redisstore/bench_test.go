package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// redisCPU returns the Redis server's user+sys CPU seconds.
func redisCPU(tb testing.TB, s *Store) float64 {
	tb.Helper()
	info, err := s.rdb.Info(context.Background(), "cpu").Result()
	if err != nil {
		tb.Fatal(err)
	}
	var total float64
	for _, line := range strings.Split(info, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && (k == "used_cpu_user" || k == "used_cpu_sys") {
			f, _ := strconv.ParseFloat(v, 64)
			total += f
		}
	}
	return total
}

// benchApply applies batches of 100 events made by gen and reports Redis
// CPU per event, the figure that bounds ingest throughput on one Redis.
func benchApply(b *testing.B, perWorkspace bool, gen func(i int) fleet.Event) {
	s, _ := MustOpenSingle(b)
	s.cluster = perWorkspace // grouping only: the client stays a single-node one
	s.SetClock(time.Now)
	var regs []fleet.Event
	for d := range 1000 {
		regs = append(regs, fleet.Event{Type: fleet.EventDeviceRegistered, DeviceID: fmt.Sprintf("d%d", d), WorkspaceID: fmt.Sprintf("w%d", d%20), Name: "n", OS: "Linux", TS: time.Now().UnixMilli()})
	}
	if err := s.Apply(context.Background(), regs, make([]fleet.Result, len(regs))); err != nil {
		b.Fatal(err)
	}
	events := make([]fleet.Event, 100)
	res := make([]fleet.Result, 100)
	cpu0 := redisCPU(b, s)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for k := range events {
			events[k] = gen(n)
			n++
		}
		if err := s.Apply(context.Background(), events, res); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((redisCPU(b, s)-cpu0)*1e6/float64(n), "redis-µs/event")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/event")
}

func BenchmarkApplyOnline(b *testing.B) {
	ts := time.Now().Add(-time.Hour).UnixMilli()
	gen := func(i int) fleet.Event {
		return fleet.Event{Type: fleet.EventOnlineChanged, DeviceID: fmt.Sprintf("d%d", i%1000), Online: i%2 == 0, TS: ts + int64(i), ID: fmt.Sprintf("e%d", i), DurationSec: -1}
	}
	b.Run("one-call-per-commit", func(b *testing.B) { benchApply(b, false, gen) })
	// What a cluster must do (and what a single Redis did before): one
	// script call per workspace of the commit.
	b.Run("one-call-per-workspace", func(b *testing.B) { benchApply(b, true, gen) })
}

func BenchmarkApplySessions(b *testing.B) {
	ts := time.Now().Add(-time.Hour).UnixMilli()
	benchApply(b, false, func(i int) fleet.Event {
		e := fleet.Event{DeviceID: fmt.Sprintf("d%d", (i/2)%1000), SessionID: fmt.Sprintf("s%d", i/2), TS: ts + int64(i), ID: fmt.Sprintf("e%d", i), DurationSec: -1}
		if i%2 == 0 {
			e.Type = fleet.EventSessionStarted
		} else {
			e.Type, e.Status, e.DurationSec = fleet.EventSessionEnded, "success", 60
		}
		return e
	})
}

// usedMemory returns the Redis server's used_memory in bytes.
func usedMemory(tb testing.TB, s *Store) int64 {
	tb.Helper()
	info, err := s.rdb.Info(context.Background(), "memory").Result()
	if err != nil {
		tb.Fatal(err)
	}
	for _, line := range strings.Split(info, "\r\n") {
		if v, ok := strings.CutPrefix(line, "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	tb.Fatal("no used_memory in INFO memory")
	return 0
}

// BenchmarkDedupeMemory reports the Redis memory that de-duplication costs
// per delivery id: 200,000 ids (36-character UUID-like, as senders use)
// arrive on one day in one workspace (B/id-first-day: the workspace's
// first day, with no count to size its buckets from), then as many on the
// next day (B/id: steady state). The events are online changes of one
// device, which change no other memory.
func BenchmarkDedupeMemory(b *testing.B) {
	const perDay = 200000
	for b.Loop() {
		s, _ := MustOpenSingle(b)
		day1 := t0.Truncate(24 * time.Hour).Add(time.Hour)
		s.SetClock(func() time.Time { return day1 })
		apply(b, s, reg("d1", "acme", day1.Add(-time.Hour)))
		n := 0
		load := func(day time.Time) {
			events := make([]fleet.Event, 1000)
			res := make([]fleet.Result, len(events))
			for range perDay / len(events) {
				for k := range events {
					events[k] = online("d1", n%2 == 0, day, fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n))
					n++
				}
				if err := s.Apply(context.Background(), events, res); err != nil {
					b.Fatal(err)
				}
			}
		}
		first := usedMemory(b, s)
		load(day1)
		b.ReportMetric(float64(usedMemory(b, s)-first)/perDay, "B/id-first-day")
		day2 := day1.Add(24 * time.Hour)
		s.SetClock(func() time.Time { return day2 })
		before := usedMemory(b, s)
		load(day2)
		b.ReportMetric(float64(usedMemory(b, s)-before)/perDay, "B/id")
	}
}
