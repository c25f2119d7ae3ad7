package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The floor (--floor): what the commands of fleetd's data model cost
// Redis by themselves, whatever computes them. The driver watches the
// store's server through MONITOR and keeps every command the store's
// scripts ran (and any other command of the store that is not a script
// call), and replays them, in order and pipelined, to a second, empty
// redis-server: everything before a phase unmeasured, then the phase's
// commands with that server's callgrind counting. A script, or a client
// doing the scripts' work, can cost no less than that replay; the gap
// between a phase's figure and its floor is what the scripts themselves
// cost.
//
// The store's server must not run under callgrind in this mode: MONITOR
// makes it format every command, which would be counted. cost.sh runs the
// floor as a second pass, on a plain redis-server.

// notReplayed are the commands of the store's connections that are not
// the data model's: script calls (their commands are replayed instead) and
// connection housekeeping.
var notReplayed = map[string]bool{
	"fcall": true, "fcall_ro": true, "eval": true, "eval_ro": true, "evalsha": true, "evalsha_ro": true,
	"function": true, "script": true, "hello": true, "client": true, "ping": true, "select": true,
	"readonly": true, "auth": true, "info": true, "dbsize": true, "config": true, "echo": true,
}

// recorder reads a MONITOR stream of the store's server.
type recorder struct {
	mon  *serverConn
	self string // the driver's own connection (serverConn) as MONITOR names it
	seq  int
	rec  recorded // since the last take
}

// recorded is what the store sent in a stretch of the run.
type recorded struct {
	cmds  [][]string // the data model's commands, the scripts' own included
	calls [][]string // its FCALLs
	loads [][]string // its FUNCTION LOADs
}

// startRecorder opens a MONITOR connection to addr; self is the local
// address of the driver's own connection, whose commands are not the
// store's.
func startRecorder(addr string, self net.Addr) (*recorder, error) {
	mon, err := dialServer(addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	mon.r = bufio.NewReaderSize(mon.c, 1<<20)
	if v, err := mon.do("MONITOR"); err != nil || v != "OK" {
		mon.Close()
		return nil, fmt.Errorf("MONITOR: %v %v", v, err)
	}
	return &recorder{mon: mon, self: self.String()}, nil
}

func (r *recorder) Close() error { return r.mon.Close() }

// take returns the commands of the store up to now: it sends a mark
// through the driver's connection srv and reads the stream up to it.
func (r *recorder) take(srv *serverConn) (recorded, error) {
	r.seq++
	mark := "fleetd-cost-mark-" + strconv.Itoa(r.seq)
	if v, err := srv.do("ECHO", mark); err != nil || v != mark {
		return recorded{}, fmt.Errorf("ECHO: %v %v", v, err)
	}
	if err := r.mon.c.SetReadDeadline(time.Now().Add(2 * time.Minute)); err != nil {
		return recorded{}, err
	}
	for {
		line, err := r.mon.r.ReadString('\n')
		if err != nil {
			return recorded{}, fmt.Errorf("MONITOR stream: %w", err)
		}
		client, args, err := parseMonitor(strings.TrimSuffix(line, "\r\n"))
		if err != nil {
			return recorded{}, err
		}
		if len(args) == 0 {
			continue
		}
		name := strings.ToLower(args[0])
		switch {
		case client == r.self:
			if len(args) == 2 && name == "echo" && args[1] == mark {
				out := r.rec
				r.rec = recorded{}
				return out, nil
			}
		case client == "lua" || !notReplayed[name]:
			r.rec.cmds = append(r.rec.cmds, args)
		case name == "fcall":
			r.rec.calls = append(r.rec.calls, args)
		case name == "function" && len(args) > 1 && strings.EqualFold(args[1], "load"):
			r.rec.loads = append(r.rec.loads, args)
		}
	}
}

// parseMonitor splits a MONITOR line, +TS [DB CLIENT] "ARG" "ARG"…, into
// the client ("lua" for a script's commands, else its address) and the
// arguments (unquoted: MONITOR escapes them as C strings, which Go's
// string literals read the same).
func parseMonitor(line string) (string, []string, error) {
	bad := func() (string, []string, error) { return "", nil, fmt.Errorf("unexpected MONITOR line %.120q", line) }
	if line == "+OK" {
		return "", nil, nil
	}
	head, rest, ok := strings.Cut(line, "] ")
	_, client, ok2 := strings.Cut(head, " [")
	if !ok || !ok2 || !strings.HasPrefix(line, "+") {
		return bad()
	}
	if _, c, ok := strings.Cut(client, " "); ok { // "DB CLIENT"
		client = c
	}
	var args []string
	for rest != "" {
		if rest[0] != '"' {
			return bad()
		}
		end := 1
		for end < len(rest) && rest[end] != '"' {
			if rest[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(rest) {
			return bad()
		}
		a, err := strconv.Unquote(rest[:end+1])
		if err != nil {
			return bad()
		}
		args = append(args, a)
		rest = strings.TrimPrefix(rest[end+1:], " ")
	}
	return client, args, nil
}

// floorServer is the second redis-server the recorded commands replay to.
// It loads the store's Functions library too, and bareLib beside it, so
// that a phase's FCALLs can be timed against a function that does
// nothing, in the same Lua state: what the call itself costs Redis.
type floorServer struct {
	conn *serverConn
	cg   *callgrind // nil: no count
}

const (
	bareLib = "#!lua name=fleetdcost\nredis.register_function('fleetdcost_bare', function(KEYS, ARGV) return {} end)"
	bareFn  = "fleetdcost_bare"
)

// replay sends cmds pipelined, a chunk at a time, and reads every reply;
// an error reply fails the replay (it would not be the same state), and
// the connection is not used after that.
func (f *floorServer) replay(cmds [][]string) error {
	const chunk = 512
	w := bufio.NewWriterSize(f.conn.c, 1<<16)
	for i := 0; i < len(cmds); i += chunk {
		part := cmds[i:min(i+chunk, len(cmds))]
		if err := f.conn.c.SetDeadline(time.Now().Add(2 * time.Minute)); err != nil {
			return err
		}
		for _, args := range part {
			fmt.Fprintf(w, "*%d\r\n", len(args))
			for _, a := range args {
				fmt.Fprintf(w, "$%d\r\n%s\r\n", len(a), a)
			}
		}
		if err := w.Flush(); err != nil {
			return err
		}
		for k := range part {
			if _, err := f.conn.read(); err != nil {
				return fmt.Errorf("replayed %.200s: %w", strings.Join(part[k], " "), err)
			}
		}
	}
	return nil
}

// floor replays what the store did since the last call: measured (and
// reported as phase name, of n events in requests) when name is not "".
func (d *driver) floor(ctx context.Context, name string, n, requests int) error {
	rec, err := d.rec.take(d.srv)
	if err != nil {
		return err
	}
	if len(rec.loads) > 0 {
		loads := append(rec.loads, []string{"FUNCTION", "LOAD", "REPLACE", bareLib})
		if err := d.fl.replay(loads); err != nil {
			return err
		}
	}
	if name == "" {
		return d.fl.replay(rec.cmds)
	}
	perEvent := float64(len(rec.cmds)) / float64(n)
	fmt.Fprintf(d.out, "\n== %s, plain commands: the same %d commands (%.2f per event), pipelined to an empty redis-server that ran all before them, no scripts\n",
		name, len(rec.cmds), perEvent)
	instr, err := d.floorMeasure(ctx, name+" plain", n, func() error { return d.fl.replay(rec.cmds) })
	if err != nil {
		return err
	}
	if err := d.result(name+" plain", n, requests, instr, perEvent); err != nil {
		return err
	}
	// The phase's calls, to a function that does nothing.
	bare := make([][]string, len(rec.calls))
	fns := map[string]int{}
	for i, c := range rec.calls {
		bare[i] = append([]string{"FCALL", bareFn}, c[2:]...)
		fns[c[1]]++
	}
	var byFn []string
	for f, k := range fns {
		byFn = append(byFn, fmt.Sprintf("%s %d", f, k))
	}
	slices.Sort(byFn)
	fmt.Fprintf(d.out, "\n== %s, bare calls: its %d FCALLs (%s) with their keys and arguments, to a function that does nothing and returns an empty array\n",
		name, len(bare), strings.Join(byFn, ", "))
	instr, err = d.floorMeasure(ctx, name+" bare", n, func() error { return d.fl.replay(bare) })
	if err != nil {
		return err
	}
	return d.result(name+" bare calls", n, requests, instr, float64(len(bare))/float64(n))
}

// floorMeasure runs replay on the floor server, counted by its callgrind
// when it has one, and returns the instructions per event ("-": none).
func (d *driver) floorMeasure(ctx context.Context, name string, n int, replay func() error) (string, error) {
	cg := d.fl.cg
	if cg != nil {
		if err := cg.start(ctx); err != nil {
			return "", err
		}
	}
	if err := replay(); err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	if cg == nil {
		return "-", nil
	}
	dump, err := cg.stop(ctx, strings.ReplaceAll(strings.ReplaceAll(name, "/", "-"), " ", "-"))
	if err != nil {
		return "", err
	}
	prof, err := annotate(ctx, dump)
	if err != nil {
		return "", err
	}
	instr := thousands(int64(float64(prof.total)/float64(n) + 0.5))
	fmt.Fprintf(d.out, "Redis instructions per event: %s (%s in all; serverCron left out)\n", instr, thousands(prof.total))
	d.topList(d.out, "inclusive", prof.inclusive, prof, n, true)
	fmt.Fprintf(d.out, "dump: %s\n", dump)
	return instr, nil
}
