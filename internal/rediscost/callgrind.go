package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// callgrind drives the valgrind --tool=callgrind process that redis-server
// runs under: instrumentation on only while a phase is measured, one dump
// per phase (callgrind_control talks to it through vgdb).
type callgrind struct {
	pid int
	dir string // where its --callgrind-out-file dumps go
}

func (c *callgrind) control(ctx context.Context, args ...string) error {
	args = append(args, strconv.Itoa(c.pid))
	out, err := exec.CommandContext(ctx, "callgrind_control", args...).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("OK")) {
		return fmt.Errorf("callgrind_control %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// start switches instrumentation on and zeroes the counters.
func (c *callgrind) start(ctx context.Context) error {
	if err := c.control(ctx, "--instr=on"); err != nil {
		return err
	}
	return c.control(ctx, "--zero")
}

// stop dumps the counters of the phase and switches instrumentation off;
// it returns the dump's file.
func (c *callgrind) stop(ctx context.Context, name string) (string, error) {
	before, err := c.dumps()
	if err != nil {
		return "", err
	}
	if err := c.control(ctx, "--dump="+name); err != nil {
		return "", err
	}
	if err := c.control(ctx, "--instr=off"); err != nil {
		return "", err
	}
	after, err := c.dumps()
	if err != nil {
		return "", err
	}
	for _, f := range after {
		if !slices.Contains(before, f) {
			return f, nil
		}
	}
	return "", fmt.Errorf("callgrind: no new dump in %s after phase %s", c.dir, name)
}

// dumps lists the numbered dumps (callgrind.out.PID.N) in the directory.
func (c *callgrind) dumps() ([]string, error) {
	all, err := filepath.Glob(filepath.Join(c.dir, "callgrind.out.*.*"))
	if err != nil {
		return nil, err
	}
	return all, nil
}

// fnCost is one line of callgrind_annotate: a function and its Ir.
type fnCost struct {
	ir   int64
	name string // as shown: with its library, if not Redis's
	fn   string // as in the dump
}

// profile is what callgrind_annotate says about one dump.
type profile struct {
	total     int64
	inclusive []fnCost
	self      []fnCost
	// calls holds caller → callee for every call in the dump.
	calls map[[2]string]bool
}

var annotateLine = regexp.MustCompile(`^\s*([0-9,]+) \(\s*[0-9.]+%\)\s+(.+)$`)

// annotate runs callgrind_annotate on a dump, inclusive and self.
func annotate(ctx context.Context, file string) (profile, error) {
	var p profile
	for _, inclusive := range []bool{true, false} {
		args := []string{"--auto=no", "--threshold=100", "--inclusive=" + map[bool]string{true: "yes", false: "no"}[inclusive], file}
		out, err := exec.CommandContext(ctx, "callgrind_annotate", args...).Output()
		if err != nil {
			return p, fmt.Errorf("callgrind_annotate %s: %w", strings.Join(args, " "), err)
		}
		total, fns := parseAnnotate(out)
		p.total = total
		if inclusive {
			p.inclusive = fns
		} else {
			p.self = fns
		}
	}
	var err error
	p.calls, err = callGraph(file)
	return p, err
}

// callGraph reads which function calls which from a dump: its fn= and
// cfn= lines, with callgrind's name compression ("(id) name" the first
// time, "(id)" after).
func callGraph(file string) (map[[2]string]bool, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	names := map[string]string{}
	name := func(v string) string {
		if !strings.HasPrefix(v, "(") {
			return v
		}
		id, n, ok := strings.Cut(v, ") ")
		if !ok {
			return names[v]
		}
		names[id+")"] = n
		return n
	}
	calls := map[[2]string]bool{}
	caller := ""
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "fn="); ok {
			caller = name(v)
		} else if v, ok := strings.CutPrefix(line, "cfn="); ok {
			calls[[2]string{caller, name(v)}] = true
		}
	}
	return calls, nil
}

// parseAnnotate reads the PROGRAM TOTALS and the per-function lines of
// callgrind_annotate's output, in its order (most Ir first).
func parseAnnotate(out []byte) (int64, []fnCost) {
	var total int64
	var fns []fnCost
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		m := annotateLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		ir, err := strconv.ParseInt(strings.ReplaceAll(m[1], ",", ""), 10, 64)
		if err != nil {
			continue
		}
		if strings.HasPrefix(m[2], "PROGRAM TOTALS") {
			total = ir
			continue
		}
		fns = append(fns, fnCost{ir: ir, name: shortName(m[2]), fn: dumpName(m[2])})
	}
	return total, fns
}

// dumpName returns the function of "file:function [object]".
func dumpName(s string) string {
	if m := objName.FindStringSubmatch(s); m != nil {
		s = m[1]
	}
	if _, fn, ok := strings.Cut(s, ":"); ok {
		return fn
	}
	return s
}

var objName = regexp.MustCompile(`^(.*?) \[(.*)\]$`)

// shortName turns "file:function [object]" into "function", with the
// object's base name when it is a library, and an address without the
// zero padding when the object has no symbol for it.
func shortName(s string) string {
	obj := ""
	if m := objName.FindStringSubmatch(s); m != nil {
		s, obj = m[1], filepath.Base(m[2])
	}
	if _, fn, ok := strings.Cut(s, ":"); ok {
		s = fn
	}
	if hex, ok := strings.CutPrefix(s, "0x"); ok {
		if n, err := strconv.ParseUint(hex, 16, 64); err == nil {
			s = fmt.Sprintf("0x%x", n)
		}
	}
	if obj != "" && !strings.HasPrefix(obj, "redis-") {
		s += " [" + strings.SplitN(obj, ".so", 2)[0] + "]"
	}
	return s
}
