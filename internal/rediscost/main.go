// Command rediscost measures what fleetd's ingest costs Redis per event:
// the instructions redis-server executes (counted by callgrind, when
// redis-server runs under valgrind --tool=callgrind and --callgrind-pid
// names it) and the Redis commands it runs (INFO commandstats deltas). It
// is the driver of scripts/cost.sh (make cost); see the README,
// "Measuring Redis cost".
//
// A run registers a fleet (setup, not measured), then measures phases of
// the fixed-seed mix of mix.go, each with its requests sent one at a time
// so that each is exactly one Store.Apply call (one group commit of
// fleetd): single-event requests, then batches. With --steady it goes on
// to the fleet's second day (its de-duplication state sized from a first
// day of traffic) and measures the same phases there, from --day2-at
// (midday by default: a store may look at yesterday's marks only for
// events whose ts is early in the day).
//
// It drives the store only through redisstore's public API (Open, Apply,
// SetClock, Close) and the fleet types, never through key names or
// scripts, so it measures whatever data model the store has. Its own
// connection to Redis (serverConn) sends only server-level commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/redisstore"
)

const (
	dayMs     = 86400000
	setupSize = 1000 // events per Apply call of the setup and warm-ups
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "rediscost:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("usage")

type config struct {
	addr               string
	shape              string
	workspaces         int
	devices            int
	single             int
	batches, batchSize int
	steady             bool
	day2At             time.Duration
	sessionsPerDevice  float64
	livePerDevice      float64
	onlineFraction     float64
	seed               uint64
	callgrindPID       int
	callgrindDir       string
	floorAddr          string
	floorPID           int
	floorDir           string
	top                int
	results            string
	timeout            time.Duration
}

var shapes = map[string]fleetShape{"large": {20, 1000}, "small": {20, 100}}

// parseFlags parses the command line; --help prints the flags to stdout.
func parseFlags(args []string, stdout io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("rediscost", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.addr, "addr", "", "host:port of an empty redis-server (required)")
	fs.StringVar(&c.shape, "shape", "large", "fleet shape: large (20 workspaces × 1,000 devices) or small (20 × 100); names the phases")
	fs.IntVar(&c.workspaces, "workspaces", 0, "workspaces (0: the shape's)")
	fs.IntVar(&c.devices, "devices", 0, "devices per workspace (0: the shape's)")
	fs.IntVar(&c.single, "single", 2000, "events of the single-event phase (one request each)")
	fs.IntVar(&c.batches, "batches", 40, "requests of the batch phase")
	fs.IntVar(&c.batchSize, "batch-size", 100, "events per request of the batch phase")
	fs.BoolVar(&c.steady, "steady", false, "also measure both phases on the fleet's second day (steady-state de-duplication)")
	fs.DurationVar(&c.day2At, "day2-at", 12*time.Hour, "time of day (UTC) from which the second day's phases are measured; 0: straight after its warm-up (01:00 plus the warm-up's span)")
	fs.Float64Var(&c.sessionsPerDevice, "sessions-per-device", 0.6, "ended sessions per device in the setup")
	fs.Float64Var(&c.livePerDevice, "live-per-device", 0.05, "live sessions per device in the setup (the ones the mix ends)")
	fs.Float64Var(&c.onlineFraction, "online-fraction", 0.5, "devices online after the setup (the mix's flips keep about half online)")
	fs.Uint64Var(&c.seed, "seed", 1, "seed of the mix")
	fs.IntVar(&c.callgrindPID, "callgrind-pid", 0, "pid of the valgrind --tool=callgrind process running redis-server (0: count commands only)")
	fs.StringVar(&c.callgrindDir, "callgrind-dir", ".", "directory of its --callgrind-out-file dumps (callgrind.out.PID.N)")
	fs.StringVar(&c.floorAddr, "floor", "", "host:port of a second, empty redis-server: replay the commands the store ran there (through MONITOR of --addr, which must not run under callgrind) and report what they cost by themselves")
	fs.IntVar(&c.floorPID, "floor-callgrind-pid", 0, "pid of the valgrind --tool=callgrind process running the --floor redis-server (0: count commands only)")
	fs.StringVar(&c.floorDir, "floor-callgrind-dir", ".", "directory of its dumps")
	fs.IntVar(&c.top, "top", 15, "functions listed per phase, inclusive and self")
	fs.StringVar(&c.results, "results", "", "append one tab-separated line per phase to this file")
	fs.DurationVar(&c.timeout, "timeout", 2*time.Minute, "bound of each Redis call (valgrind is slow)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "usage: rediscost --addr HOST:PORT [flags]   (scripts/cost.sh runs it; see the README)")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			return c, err
		}
		return c, fmt.Errorf("%w: %v (see --help)", errUsage, err)
	}
	sh, ok := shapes[c.shape]
	switch {
	case fs.NArg() > 0:
		return c, fmt.Errorf("%w: unexpected argument %q (see --help)", errUsage, fs.Arg(0))
	case c.addr == "":
		return c, fmt.Errorf("%w: --addr is required (see --help)", errUsage)
	case !ok:
		return c, fmt.Errorf("%w: --shape must be large or small", errUsage)
	case c.single < 0 || c.batches < 0 || c.batchSize < 1 || c.workspaces < 0 || c.devices < 0 || c.top < 0:
		return c, fmt.Errorf("%w: counts must not be negative, --batch-size at least 1", errUsage)
	case c.day2At < 0 || c.day2At >= 24*time.Hour:
		return c, fmt.Errorf("%w: --day2-at must be a time of day, 0 to 23h59m", errUsage)
	case c.floorAddr != "" && c.callgrindPID != 0:
		return c, fmt.Errorf("%w: --floor watches --addr through MONITOR, which callgrind would count: run --addr without --callgrind-pid", errUsage)
	case c.floorAddr == "" && c.floorPID != 0:
		return c, fmt.Errorf("%w: --floor-callgrind-pid needs --floor", errUsage)
	}
	if c.workspaces == 0 {
		c.workspaces = sh.workspaces
	}
	if c.devices == 0 {
		c.devices = sh.devices
	}
	return c, nil
}

// driver runs the phases against one redis-server.
type driver struct {
	cfg   config
	out   io.Writer
	store *redisstore.Store
	srv   *serverConn
	cg    *callgrind   // nil: commands only
	rec   *recorder    // --floor: the store's commands, and
	fl    *floorServer // where they replay; both nil without --floor
	mix   *mix
	// now is the store's clock (Unix ms): just after the newest event
	// applied, and moved to the next day by nextDay.
	now int64
	// day is the start of the fleet's current day (Unix ms, UTC).
	day int64
	// dayIDs counts the delivery ids first seen on the current day.
	dayIDs int
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := parseFlags(args, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	srv, err := dialEmpty(cfg.addr)
	if err != nil {
		return err
	}
	defer srv.Close()
	// --floor: watch the store's commands from before it opens.
	var rec *recorder
	var fl *floorServer
	if cfg.floorAddr != "" {
		fc, err := dialEmpty(cfg.floorAddr)
		if err != nil {
			return fmt.Errorf("--floor: %w", err)
		}
		defer fc.Close()
		fl = &floorServer{conn: fc}
		if cfg.floorPID != 0 {
			fl.cg = &callgrind{pid: cfg.floorPID, dir: cfg.floorDir}
		}
		if rec, err = startRecorder(cfg.addr, srv.c.LocalAddr()); err != nil {
			return err
		}
		defer rec.Close()
	}
	store, err := redisstore.Open(ctx, redisstore.Config{URL: "redis://" + cfg.addr, Timeout: cfg.timeout, PoolSize: 1})
	if err != nil {
		return err
	}
	defer store.Close()
	d := &driver{cfg: cfg, out: stdout, store: store, srv: srv, rec: rec, fl: fl,
		mix: newMix(fleetShape{cfg.workspaces, cfg.devices}, cfg.seed)}
	if cfg.callgrindPID != 0 {
		d.cg = &callgrind{pid: cfg.callgrindPID, dir: cfg.callgrindDir}
	}
	store.SetClock(func() time.Time { return time.UnixMilli(d.now) })
	// The fleet's first day is today (UTC), from 01:00: near the real
	// clock, so that Redis expires nothing that the store sets to expire
	// at a time derived from the events.
	d.day = time.Now().UTC().Truncate(24*time.Hour).UnixMilli() + 3600000
	if err := d.header(); err != nil {
		return err
	}
	if err := d.setup(ctx); err != nil {
		return fmt.Errorf("setup: %w", err)
	}
	if err := d.phases(ctx, cfg.shape+"/"); err != nil {
		return err
	}
	if !cfg.steady {
		return nil
	}
	// Steady state: a day of traffic, then the next day's first half, so
	// that the de-duplication state of the measured phases is sized from a
	// previous day and half full, as at midday.
	if err := d.warm(ctx, 2*d.mix.shape.total()); err != nil {
		return fmt.Errorf("day-1 warm-up: %w", err)
	}
	day1 := d.dayIDs
	d.nextDay()
	if err := d.warm(ctx, day1/2); err != nil {
		return fmt.Errorf("day-2 warm-up: %w", err)
	}
	// The store may treat an event by its time of day (a delivery id can
	// only have first arrived yesterday if its ts is early today), so the
	// measured phases are moved to --day2-at: midday by default.
	if at := d.day - 3600000 + d.cfg.day2At.Milliseconds(); d.mix.ts < at {
		d.mix.ts, d.now = at, max(d.now, at)
	}
	fmt.Fprintf(d.out, "\nday 2: %d delivery ids on day 1, %d so far on day 2; measured from %s UTC\n",
		day1, d.dayIDs, time.UnixMilli(d.mix.ts).UTC().Format("15:04:05"))
	return d.phases(ctx, cfg.shape+"/day2-")
}

// dialEmpty connects to the redis-server at addr, which must hold no key:
// the figures are of a fresh fleet.
func dialEmpty(addr string) (*serverConn, error) {
	c, err := dialServer(addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	if n, err := c.do("DBSIZE"); err != nil || n != int64(0) {
		c.Close()
		return nil, fmt.Errorf("redis at %s must be empty (DBSIZE %v, %v): the figures are of a fresh fleet", addr, n, err)
	}
	return c, nil
}

func (d *driver) header() error {
	version, err := d.srv.info("redis_version")
	if err != nil {
		return err
	}
	var lim []string
	for _, p := range []string{"hash-max-listpack-entries", "zset-max-listpack-entries", "set-max-intset-entries", "hz"} {
		v, err := d.srv.config(p)
		if err != nil {
			return err
		}
		lim = append(lim, p+" "+v)
	}
	mode := "commands only (no --callgrind-pid)"
	if d.cg != nil {
		mode = fmt.Sprintf("callgrind pid %d", d.cg.pid)
	}
	fmt.Fprintf(d.out, "redis %s at %s (%s); %s\n", version, d.cfg.addr, strings.Join(lim, ", "), mode)
	fmt.Fprintf(d.out, "fleet %s: %d workspaces × %d devices, %.2f ended and %.2f live sessions per device, %.0f %% online, seed %d\n",
		d.cfg.shape, d.mix.shape.workspaces, d.mix.shape.devices, d.cfg.sessionsPerDevice, d.cfg.livePerDevice, 100*d.cfg.onlineFraction, d.cfg.seed)
	return nil
}

// setup registers the fleet an hour before the first day's 01:00, with the
// ended and live sessions of that hour and every device's presence (so
// that the online set is as large at the start of a phase as at its end).
// Every event has a delivery id, as the mix's do.
func (d *driver) setup(ctx context.Context) error {
	t0 := time.Now()
	d.now = d.day
	hour := int64(3600000)
	steps := [][]fleet.Event{
		d.mix.registrations(d.day - hour),
		d.mix.history(d.cfg.sessionsPerDevice, d.day-hour, d.day-hour/6),
		d.mix.live(d.cfg.livePerDevice, d.day-hour/6, d.day),
		d.mix.presence(d.cfg.onlineFraction, d.day-hour/12),
	}
	n := 0
	for _, events := range steps {
		for i := 0; i < len(events); i += setupSize {
			part := events[i:min(i+setupSize, len(events))]
			if _, err := d.apply(ctx, part, nil); err != nil {
				return err
			}
		}
		n += len(events)
	}
	d.mix.ts = d.day
	fmt.Fprintf(d.out, "setup: %d events (registrations, sessions, presence) in %.1f s, not measured\n", n, time.Since(t0).Seconds())
	return nil
}

// warm applies n events of the mix in large requests, not measured.
func (d *driver) warm(ctx context.Context, n int) error {
	t0 := time.Now()
	for done := 0; done < n; {
		k := min(setupSize, n-done)
		events, want := d.events(k)
		if _, err := d.apply(ctx, events, want); err != nil {
			return err
		}
		done += k
	}
	fmt.Fprintf(d.out, "warm-up: %d events in %.1f s, not measured\n", n, time.Since(t0).Seconds())
	return nil
}

// nextDay moves the fleet's clock to 01:00 of the next day.
func (d *driver) nextDay() {
	d.day += dayMs
	d.now, d.mix.ts, d.dayIDs = d.day, d.day, 0
}

func (d *driver) events(n int) ([]fleet.Event, []fleet.Result) {
	events := make([]fleet.Event, n)
	want := make([]fleet.Result, n)
	for i := range events {
		events[i], want[i] = d.mix.next()
	}
	return events, want
}

// tally counts results.
type tally [fleet.NumResults]int

// apply applies one request and checks every result against want (nil:
// all Accepted): a figure is only worth having if the work was done.
func (d *driver) apply(ctx context.Context, events []fleet.Event, want []fleet.Result) (tally, error) {
	var t tally
	for i := range events {
		d.now = max(d.now, events[i].TS+200)
	}
	res := make([]fleet.Result, len(events))
	if err := d.store.Apply(ctx, events, res); err != nil {
		return t, err
	}
	for i, r := range res {
		w := fleet.Accepted
		if want != nil {
			w = want[i]
		}
		if r != w {
			e := events[i]
			return t, fmt.Errorf("%s %s of device %s (id %s): %s, want %s", e.Type, e.SessionID, e.DeviceID, e.ID, r, w)
		}
		t[r]++
		if r == fleet.Accepted {
			d.dayIDs++
		}
	}
	return t, nil
}

// phases measures single-event requests, then batches.
func (d *driver) phases(ctx context.Context, prefix string) error {
	if d.cfg.single > 0 {
		if err := d.measure(ctx, prefix+"single", d.cfg.single, 1); err != nil {
			return err
		}
	}
	if d.cfg.batches > 0 {
		return d.measure(ctx, fmt.Sprintf("%sbatch%d", prefix, d.cfg.batchSize), d.cfg.batches*d.cfg.batchSize, d.cfg.batchSize)
	}
	return nil
}

// measure sends n events of the mix in requests of size events, one at a
// time, and reports what Redis did for them.
func (d *driver) measure(ctx context.Context, name string, n, size int) error {
	events, want := d.events(n)
	if d.rec != nil { // what came before the phase, unmeasured
		if err := d.floor(ctx, "", 0, 0); err != nil {
			return err
		}
	}
	calls0, err := d.srv.commandCalls()
	if err != nil {
		return err
	}
	if d.cg != nil {
		if err := d.cg.start(ctx); err != nil {
			return err
		}
	}
	t0 := time.Now()
	var t tally
	requests := 0
	for i := 0; i < n; i += size {
		j := min(i+size, n)
		got, err := d.apply(ctx, events[i:j], want[i:j])
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		for r := range t {
			t[r] += got[r]
		}
		requests++
	}
	elapsed := time.Since(t0)
	var prof profile
	var dump string
	if d.cg != nil {
		if dump, err = d.cg.stop(ctx, strings.ReplaceAll(name, "/", "-")); err != nil {
			return err
		}
		if prof, err = annotate(ctx, dump); err != nil {
			return err
		}
	}
	calls1, err := d.srv.commandCalls()
	if err != nil {
		return err
	}
	if err := d.report(name, n, requests, size, t, elapsed, calls0, calls1, prof, dump); err != nil {
		return err
	}
	if d.rec != nil {
		return d.floor(ctx, name, n, requests)
	}
	return nil
}

type cmdCount struct {
	name  string
	calls int64
}

func (d *driver) report(name string, n, requests, size int, t tally, elapsed time.Duration, calls0, calls1 map[string]int64, prof profile, dump string) error {
	w := d.out
	perEvent := func(x int64) float64 { return float64(x) / float64(n) }
	fmt.Fprintf(w, "\n== %s: %d events in %d requests of %d (%d accepted, %d duplicate), one at a time, %.1f s\n",
		name, n, requests, size, t[fleet.Accepted], t[fleet.Duplicate], elapsed.Seconds())
	fmt.Fprintf(w, "delivery ids of the day per workspace: %d at the start, %d at the end\n",
		(d.dayIDs-t[fleet.Accepted])/d.mix.shape.workspaces, d.dayIDs/d.mix.shape.workspaces)
	var cmds []cmdCount
	var total int64
	for c, v := range calls1 {
		if c == "info" { // this driver's own
			continue
		}
		if dv := v - calls0[c]; dv > 0 {
			cmds = append(cmds, cmdCount{c, dv})
			total += dv
		}
	}
	slices.SortFunc(cmds, func(a, b cmdCount) int {
		if a.calls != b.calls {
			return int(b.calls - a.calls)
		}
		return strings.Compare(a.name, b.name)
	})
	instr := "-"
	if d.cg != nil {
		instr = thousands(int64(perEvent(prof.total) + 0.5))
		fmt.Fprintf(w, "Redis instructions per event: %s (%s in all; serverCron left out)\n", instr, thousands(prof.total))
	}
	var parts []string
	for _, c := range cmds {
		parts = append(parts, fmt.Sprintf("%s %.2f", c.name, perEvent(c.calls)))
	}
	fmt.Fprintf(w, "Redis commands per event: %.2f (%s)\n", perEvent(total), strings.Join(parts, ", "))
	if d.cg != nil {
		d.topList(w, "inclusive", prof.inclusive, prof, n, true)
		d.topList(w, "self", prof.self, prof, n, false)
		fmt.Fprintf(w, "dump: %s\n", dump)
	}
	if d.rec != nil { // the pass that measured the store wrote its line
		return nil
	}
	return d.result(name, n, requests, instr, perEvent(total))
}

// result appends a phase's line to --results: name, events, requests,
// instructions and commands per event.
func (d *driver) result(name string, n, requests int, instr string, cmdsPerEvent float64) error {
	if d.cfg.results == "" {
		return nil
	}
	f, err := os.OpenFile(d.cfg.results, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%s\t%d\t%d\t%s\t%.2f\n", name, n, requests, instr, cmdsPerEvent)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// topList prints the first functions of a callgrind_annotate list, per
// event. In the inclusive list the frames that hold nearly everything
// (main, aeMain, aeProcessEvents…) say nothing and are left out, and a
// function called by the last one of the line before, at a cost within
// 0.5 % of it (a caller that passes through), joins that line:
// "call › evalShaCommand".
func (d *driver) topList(w io.Writer, kind string, fns []fnCost, p profile, n int, inclusive bool) {
	fmt.Fprintf(w, "top functions, %s (Redis instructions per event, share):\n", kind)
	var lines []fnCost
	for _, f := range fns {
		if inclusive && float64(f.ir) >= 0.99*float64(p.total) {
			continue
		}
		if k := len(lines) - 1; inclusive && k >= 0 && float64(f.ir) >= 0.995*float64(lines[k].ir) && p.calls[[2]string{lines[k].fn, f.fn}] {
			lines[k].name += " › " + f.name
			lines[k].fn = f.fn
			continue
		}
		if len(lines) == d.cfg.top {
			break
		}
		lines = append(lines, f)
	}
	for _, f := range lines {
		fmt.Fprintf(w, "  %10s %5.1f%%  %s\n", thousands(f.ir/int64(n)), 100*float64(f.ir)/float64(max(p.total, 1)), f.name)
	}
}

// thousands formats n with comma separators: 207,000.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
