package redisstore

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/fleetd/fleetd/fleet"
)

// TestPreludeMatchesGo: the scripts' constants are Go's, so the two cannot
// drift: every result code, flag, event type, key suffix and hash field
// the prelude defines has the value of its Go constant.
func TestPreludeMatchesGo(t *testing.T) {
	p := prelude()
	want := map[string]string{
		"R_ACCEPTED": fmt.Sprint(rAccepted), "R_DUPLICATE": fmt.Sprint(rDuplicate), "R_STALE": fmt.Sprint(rStale),
		"R_NOTHERE": fmt.Sprint(rNotHere), "R_MOVED": fmt.Sprint(rMoved), "F_MULTI": fmt.Sprint(fMulti), "F_ELSEWHERE": fmt.Sprint(fElsewhere),
		"T_ONLINE": fmt.Sprint(int(fleet.EventOnlineChanged)), "T_STARTED": fmt.Sprint(int(fleet.EventSessionStarted)),
		"T_ENDED": fmt.Sprint(int(fleet.EventSessionEnded)), "HISTORY_MAX": fmt.Sprint(historyMax), "DAY_MS": fmt.Sprint(dayMs),
	}
	for _, kc := range keyConstants {
		want[kc[0]] = fmt.Sprintf("%q", kc[1])
	}
	for name, v := range want {
		re := regexp.MustCompile(`local ([A-Z_, ]*\b` + name + `\b[A-Z_, ]*) = (.*)`)
		m := re.FindStringSubmatch(p)
		if m == nil {
			t.Errorf("the prelude does not define %s", name)
			continue
		}
		names, vals := strings.Split(m[1], ", "), strings.Split(m[2], ", ")
		for i, n := range names {
			if n == name && (i >= len(vals) || vals[i] != v) {
				t.Errorf("%s = %v in the prelude, %s in Go", name, vals, v)
			}
		}
	}
}

// TestLuaSpellsNoKey: the scripts build key names and hash fields only
// from the prelude's constants (keys.go), never from literals.
func TestLuaSpellsNoKey(t *testing.T) {
	files, _ := filepath.Glob("lua/*.lua")
	lit := regexp.MustCompile(`(\bP|\bB|\.B) \.\. '`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(strings.TrimSpace(line), "--") {
				continue
			}
			if lit.MatchString(line) {
				t.Errorf("%s:%d spells a key: %s", f, i+1, strings.TrimSpace(line))
			}
		}
	}
}

// TestLuaLint runs luacheck (Debian's lua-check, installed by
// scripts/ensure-deps.sh) over every script as Redis runs it (prelude,
// lib, files), and reports what it finds at the line of the file it is in.
func TestLuaLint(t *testing.T) {
	bin, err := exec.LookPath("luacheck")
	if err != nil {
		t.Fatal("luacheck is not installed: run scripts/ensure-deps.sh (Debian: apt-get install lua-check)")
	}
	dir := t.TempDir()
	for _, sc := range allScripts {
		name := scriptNames[sc]
		src, spans := scriptSource(sc)
		path := filepath.Join(dir, name+".lua")
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, path, "--no-color", "--codes", "--formatter", "plain", "--std", "lua51",
			"--no-max-line-length", "--globals", "redis", "cjson", "KEYS", "ARGV", "unpack", "_G").CombinedOutput()
		if err == nil {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			// path:LINE:COL: message
			rest := strings.TrimPrefix(line, path+":")
			var n, col int
			var msg string
			if _, err := fmt.Sscanf(rest, "%d:%d:", &n, &col); err != nil {
				t.Errorf("%s: %s", name, line)
				continue
			}
			if i := strings.Index(rest, ": "); i >= 0 {
				msg = rest[i+2:]
			}
			file, at := spans.locate(n)
			// The prelude and the shared files define more than any one
			// script uses.
			if !strings.HasPrefix(file, "lua/") || slices.Contains(sharedFiles, strings.TrimSuffix(strings.TrimPrefix(file, "lua/"), ".lua")) {
				if strings.HasPrefix(msg, "(W211)") || strings.HasPrefix(msg, "(W231)") {
					continue
				}
			}
			t.Errorf("%s:%d:%d: %s (in script %s)", file, at, col, msg, name)
		}
	}
}
