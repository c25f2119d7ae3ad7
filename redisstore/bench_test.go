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
