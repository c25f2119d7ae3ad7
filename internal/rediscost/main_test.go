package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fleetd/fleetd/internal/redistest"
)

// TestRunFewEvents runs the driver end to end on a plain redis-server (no
// valgrind) with a tiny fleet, so that make cost cannot rot: every phase
// is reported, every result checked, and the commands counted.
func TestRunFewEvents(t *testing.T) {
	srv := redistest.Start(t)
	results := filepath.Join(t.TempDir(), "results.tsv")
	var out bytes.Buffer
	args := []string{"--addr", srv.Addr, "--shape", "small", "--workspaces", "2", "--devices", "10",
		"--single", "20", "--batches", "3", "--batch-size", "10", "--steady", "--results", results}
	if err := run(context.Background(), args, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	b, err := os.ReadFile(results)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"small/single", "small/batch10", "small/day2-single", "small/day2-batch10"}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != len(want) {
		t.Fatalf("results:\n%s\nwant %d lines", b, len(want))
	}
	for i, line := range lines {
		f := strings.Split(line, "\t")
		if len(f) != 5 || f[0] != want[i] || f[3] != "-" {
			t.Fatalf("result line %q: want phase %s and no instruction count (no callgrind)", line, want[i])
		}
		// At least the script call and the device read of each event.
		if perEvent, err := strconv.ParseFloat(f[4], 64); err != nil || perEvent < 1 {
			t.Errorf("%s: commands per event %q, want at least 1", f[0], f[4])
		}
	}
	for _, s := range []string{"== small/single: 20 events in 20 requests of 1", "== small/day2-batch10: 30 events in 3 requests of 10", "Redis commands per event: ",
		"so far on day 2; measured from 12:00:00 UTC"} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("output lacks %q:\n%s", s, out.String())
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
