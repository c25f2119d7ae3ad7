package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/fleetd/fleetd/internal/redistest"
)

// runTiny runs the driver on a tiny fleet with the extra flags, and
// returns its output and its result lines, after checking that they are
// of the phases named (in order) and carry no instruction count (no
// callgrind).
func runTiny(t *testing.T, addr string, phases []string, extra ...string) (string, [][]string) {
	t.Helper()
	results := filepath.Join(t.TempDir(), "results.tsv")
	var out bytes.Buffer
	args := append([]string{"--addr", addr, "--shape", "small", "--workspaces", "2", "--devices", "10",
		"--single", "20", "--batches", "3", "--batch-size", "10", "--steady", "--results", results}, extra...)
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(phases) {
		t.Fatalf("results:\n%s\nwant %d lines", b, len(phases))
	}
	var fields [][]string
	for i, line := range lines {
		f := strings.Split(line, "\t")
		if len(f) != 5 || f[0] != phases[i] || f[3] != "-" {
			t.Fatalf("result line %q: want phase %s and no instruction count (no callgrind)", line, phases[i])
		}
		fields = append(fields, f)
	}
	return out.String(), fields
}

// TestRunFewEvents runs the driver end to end on a plain redis-server (no
// valgrind) with a tiny fleet, so that make cost cannot rot: every phase
// is reported, every result checked, and the commands counted.
func TestRunFewEvents(t *testing.T) {
	srv := redistest.Start(t)
	out, results := runTiny(t, srv.Addr, []string{"small/single", "small/batch10", "small/day2-single", "small/day2-batch10"})
	for _, f := range results {
		// At least the script call and the device read of each event.
		if perEvent, err := strconv.ParseFloat(f[4], 64); err != nil || perEvent < 1 {
			t.Errorf("%s: commands per event %q, want at least 1", f[0], f[4])
		}
	}
	for _, s := range []string{"== small/single: 20 events in 20 requests of 1", "== small/day2-batch10: 30 events in 3 requests of 10", "Redis commands per event: ",
		"so far on day 2; measured from 12:00:00 UTC"} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

// TestDay2AtIsATimeOfDay: --day2-at outside [0, 24h) is a usage error.
func TestDay2AtIsATimeOfDay(t *testing.T) {
	for _, v := range []string{"-1h", "24h", "30h"} {
		_, err := parseFlags([]string{"--addr", "x:1", "--day2-at", v}, &bytes.Buffer{})
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--day2-at") {
			t.Errorf("--day2-at %s: %v, want a usage error naming the flag", v, err)
		}
	}
	c, err := parseFlags([]string{"--addr", "x:1", "--day2-at", "0"}, &bytes.Buffer{})
	if err != nil || c.day2At != 0 {
		t.Errorf("--day2-at 0: %v, %v; want accepted", c.day2At, err)
	}
}

// TestRunRefusesUsedServer: figures are only of a fresh fleet.
func TestRunRefusesUsedServer(t *testing.T) {
	srv := redistest.Start(t)
	args := []string{"--addr", srv.Addr, "--workspaces", "1", "--devices", "2", "--single", "1", "--batches", "0"}
	if err := run(context.Background(), args, &bytes.Buffer{}); err != nil {
		t.Fatalf("first run: %v", err)
	}
	err := run(context.Background(), args, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "must be empty") {
		t.Fatalf("second run on the same server: %v, want a refusal", err)
	}
}

// TestParseAnnotate reads callgrind_annotate's output as valgrind 3.19
// prints it.
func TestParseAnnotate(t *testing.T) {
	out := `--------------------------------------------------------------------------------
Profile data file 'callgrind.out.21409.1' (creator: callgrind-3.19.0)
--------------------------------------------------------------------------------
Ir                  
--------------------------------------------------------------------------------
19,346,723 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
16,805,509 (86.86%)  ???:evalCommand [/usr/bin/redis-check-rdb]
 5,060,204 (26.16%)  ./debug/./debug/sprintf_chk.c:__sprintf_chk [/usr/lib/x86_64-linux-gnu/libc.so.6]
   260,640 ( 1.35%)  ???:0x00000000000933a0 [/usr/lib/x86_64-linux-gnu/libjemalloc.so.2]
    16,787 ( 0.09%)  ???:0x00000000001583e0 [/usr/bin/redis-check-rdb]
`
	total, fns := parseAnnotate([]byte(out))
	if total != 19346723 {
		t.Errorf("total %d", total)
	}
	want := []fnCost{{16805509, "evalCommand", "evalCommand"}, {5060204, "__sprintf_chk [libc]", "__sprintf_chk"},
		{260640, "0x933a0 [libjemalloc]", "0x00000000000933a0"}, {16787, "0x1583e0", "0x00000000001583e0"}}
	if len(fns) != len(want) {
		t.Fatalf("functions %v, want %v", fns, want)
	}
	for i := range want {
		if fns[i] != want[i] {
			t.Errorf("function %d: %v, want %v", i, fns[i], want[i])
		}
	}
}

// TestTopListChains: a caller that passes through joins its callee's line
// in the inclusive list; two functions of about the same cost that do not
// call each other stay on lines of their own.
func TestTopListChains(t *testing.T) {
	dump := filepath.Join(t.TempDir(), "callgrind.out.1.1")
	if err := os.WriteFile(dump, []byte("fn=(1) main\ncfn=(2) call\ncalls=1 0\n0 10\nfn=(2)\ncfn=(3) evalCommand\ncalls=1 0\nfn=(3)\ncfn=(4) match\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	calls, err := callGraph(dump)
	if err != nil {
		t.Fatal(err)
	}
	p := profile{total: 1000, calls: calls}
	fns := []fnCost{{1000, "main", "main"}, {900, "call", "call"}, {899, "evalCommand", "evalCommand"}, {200, "match", "match"}, {199, "other", "other"}}
	var out bytes.Buffer
	d := &driver{cfg: config{top: 10}}
	d.topList(&out, "inclusive", fns, p, 1, true)
	want := "top functions, inclusive (Redis instructions per event, share):\n" +
		"         900  90.0%  call › evalCommand\n" +
		"         200  20.0%  match\n" +
		"         199  19.9%  other\n"
	if out.String() != want {
		t.Errorf("got\n%s\nwant\n%s", out.String(), want)
	}
}

// TestRunFloor: --floor replays what the store ran to a second server,
// which ends with the very state the store left (same keys, types,
// contents and expiries), and reports each phase's replay and its calls.
func TestRunFloor(t *testing.T) {
	srv, fl := redistest.Start(t), redistest.Start(t)
	out, results := runTiny(t, srv.Addr, []string{"small/single plain", "small/single bare calls", "small/batch10 plain", "small/batch10 bare calls",
		"small/day2-single plain", "small/day2-single bare calls", "small/day2-batch10 plain", "small/day2-batch10 bare calls"},
		"--floor", fl.Addr)
	for _, f := range results {
		perEvent, err := strconv.ParseFloat(f[4], 64)
		if strings.HasSuffix(f[0], "bare calls") {
			want := 0.1 // one call a request (and the store's background calls)
			if strings.Contains(f[0], "single") {
				want = 1
			}
			if err != nil || perEvent < want {
				t.Errorf("%s: calls per event %q, want at least %.2f", f[0], f[4], want)
			}
		} else if err != nil || perEvent < 1 {
			t.Errorf("%s: replayed commands per event %q, want at least 1 (the device read)", f[0], f[4])
		}
	}
	if !strings.Contains(out, "== small/batch10, plain commands: the same ") ||
		!strings.Contains(out, "== small/batch10, bare calls: its 3 FCALLs (") {
		t.Errorf("output lacks the floor's reports:\n%s", out)
	}
	a, z := snapshot(t, srv.Addr), snapshot(t, fl.Addr)
	if len(a) < 10 {
		t.Fatalf("store's server holds %d keys", len(a))
	}
	for k, v := range a {
		w, ok := z[k]
		// (a relative expiry set by the replay starts a little later)
		if !ok || w.text != v.text || (w.ttl < 0) != (v.ttl < 0) || (w.ttl-v.ttl).Abs() > 10*time.Second {
			t.Errorf("key %s: store's server %q (ttl %v), floor %q (ttl %v)", k, v.text, v.ttl, w.text, w.ttl)
		}
	}
	for k := range z {
		if _, ok := a[k]; !ok {
			t.Errorf("key %s only on the floor", k)
		}
	}
}

// TestParseMonitor reads MONITOR lines as Redis 7 writes them.
func TestParseMonitor(t *testing.T) {
	client, args, err := parseMonitor(`+1796196318.664641 [0 lua] "HSETNX" "fl:{w:ws-14}:sn:20789:4" "\x17\xc9\x84I\"\\\n" ""`)
	if err != nil || client != "lua" || len(args) != 4 || args[2] != "\x17\xc9\x84I\"\\\n" || args[3] != "" {
		t.Errorf("got %q %q %v", client, args, err)
	}
	client, args, err = parseMonitor(`+1796196311.357345 [0 127.0.0.1:36282] "INFO" "server"`)
	if err != nil || client != "127.0.0.1:36282" || len(args) != 2 {
		t.Errorf("got %q %q %v", client, args, err)
	}
	for _, bad := range []string{`+1 [0 lua] "HGET`, `-ERR x`, `+1 [0 lua] HGET`} {
		if _, _, err := parseMonitor(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestFloorRefusesCallgrindOnStore: MONITOR would be counted.
func TestFloorRefusesCallgrindOnStore(t *testing.T) {
	_, err := parseFlags([]string{"--addr", "x:1", "--floor", "y:2", "--callgrind-pid", "7"}, &bytes.Buffer{})
	if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "MONITOR") {
		t.Errorf("got %v, want a usage error", err)
	}
}

type keyState struct {
	text string        // type and content, in a canonical order
	ttl  time.Duration // negative: none
}

// snapshot reads every key of a server.
func snapshot(t *testing.T, addr string) map[string]keyState {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]keyState{}
	for _, k := range keys {
		typ := c.Type(ctx, k).Val()
		var v any
		switch typ {
		case "string":
			v = c.Get(ctx, k).Val()
		case "hash":
			v = c.HGetAll(ctx, k).Val() // a map: %v prints it sorted
		case "zset":
			v = c.ZRangeWithScores(ctx, k, 0, -1).Val()
		case "set":
			m := c.SMembers(ctx, k).Val()
			slices.Sort(m)
			v = m
		default:
			t.Fatalf("key %s of type %s", k, typ)
		}
		out[k] = keyState{fmt.Sprintf("%s %v", typ, v), c.PTTL(ctx, k).Val()}
	}
	return out
}
