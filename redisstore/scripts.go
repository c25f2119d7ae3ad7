package redisstore

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/fleetd/fleetd/fleet"
	"github.com/redis/go-redis/v9"
)

// Result codes of the scripts, per event. The first three are fleet.Result
// values; the others tell Go where an event must go instead.
const (
	rAccepted  = int64(fleet.Accepted)
	rDuplicate = int64(fleet.Duplicate)
	rStale     = int64(fleet.Stale)
	rNotHere   = 9  // nothing written: the event's home is not this workspace
	rMoved     = 10 // the session lives elsewhere now: its content waits in a tombstone here
	// Flags added to a code.
	fMulti     = 16 // the device has moved or was deleted: the session may have copies elsewhere
	fElsewhere = 32 // applied at a home that is not the device's workspace now
	codeMask   = 15
)

// Bounds the scripts check again, in case Go was wrong.
const (
	maxDurationSec = 31622400 // 366 days
	pendingTTL     = pendingTTLDays * dayMs
	dedupeTTLSec   = 3 * 86400
)

//go:embed lua/*.lua
var luaFiles embed.FS

// prelude defines, for every script, the constants shared with Go, so the
// two cannot drift.
func prelude() string {
	var b strings.Builder
	fmt.Fprintf(&b, "local R_ACCEPTED, R_DUPLICATE, R_STALE, R_NOTHERE, R_MOVED = %d, %d, %d, %d, %d\n",
		rAccepted, rDuplicate, rStale, rNotHere, rMoved)
	fmt.Fprintf(&b, "local F_MULTI, F_ELSEWHERE = %d, %d\n", fMulti, fElsewhere)
	fmt.Fprintf(&b, "local T_ONLINE, T_STARTED, T_ENDED = %d, %d, %d\n",
		fleet.EventOnlineChanged, fleet.EventSessionStarted, fleet.EventSessionEnded)
	fmt.Fprintf(&b, "local T_ONLINE_S, T_STARTED_S, T_ENDED_S = '%d', '%d', '%d'\n",
		fleet.EventOnlineChanged, fleet.EventSessionStarted, fleet.EventSessionEnded)
	fmt.Fprintf(&b, "local HISTORY_MAX, DAY_MS, DEDUPE_TTL, PENDING_TTL_MS, MAX_DURATION = %d, %d, %d, %d, %d\n",
		historyMax, dayMs, dedupeTTLSec, pendingTTL, maxDurationSec)
	// and as text, for command arguments (Redis formats a Lua number
	// argument with printf)
	fmt.Fprintf(&b, "local DEDUPE_TTL_S, PENDING_TTL_MS_S = '%d', '%d'\n", dedupeTTLSec, pendingTTL)
	for _, kc := range keyConstants {
		fmt.Fprintf(&b, "local %s = %q\n", kc[0], kc[1])
	}
	b.WriteString("local STATUS_LABELS = {")
	for _, l := range fleet.StatusLabels[:len(fleet.StatusLabels)-1] {
		fmt.Fprintf(&b, "[%q] = true, ", l)
	}
	b.WriteString("}\n")
	return b.String()
}

func luaFile(name string) string {
	b, err := luaFiles.ReadFile("lua/" + name + ".lua")
	if err != nil {
		panic("redisstore: no script " + name)
	}
	return string(b)
}

// scriptStart begins every script's body: the globals lib.lua reads
// through locals.
const scriptStart = "rcall, tonumber, floor, find, sub, byte, format, gmatch, match = " +
	"redis.call, _G.tonumber, math.floor, string.find, string.sub, string.byte, string.format, string.gmatch, string.match"

// scriptFiles are the files of each script, after the prelude and lib.
var scriptFiles = map[*redis.Script][]string{}

// text is Lua assembled from parts, knowing where each line came from, so
// that a line number Redis or luacheck reports names its file.
type text struct {
	b     strings.Builder
	lines int
	spans spans
}

// span is a part of assembled Lua: the lines from start (1-based) on that
// come from file, from its line first on.
type span struct {
	file         string
	start, first int
}

type spans []span

// addFiles adds the named files of lua/.
func (t *text) addFiles(files []string) {
	for _, f := range files {
		t.add("lua/"+f+".lua", luaFile(f))
	}
}

func (t *text) add(file, src string) {
	if !strings.HasSuffix(src, "\n") {
		src += "\n"
	}
	t.spans = append(t.spans, span{file: file, start: t.lines + 1, first: 1})
	t.b.WriteString(src)
	t.lines += strings.Count(src, "\n")
}

// locate turns line n of the assembled text into a file and its line.
func (ss spans) locate(n int) (string, int) {
	for i := len(ss) - 1; i >= 0; i-- {
		if n >= ss[i].start {
			return ss[i].file, ss[i].first + n - ss[i].start
		}
	}
	return "?", n
}

// sharedFiles come after the prelude in every script, and once in the
// Functions library: what the scripts share.
var sharedFiles = []string{"lib", "dedupe"}

// scriptText assembles a script for EVALSHA: the prelude, the shared
// files, the start of a body, its files.
func scriptText(files []string) *text {
	t := &text{}
	t.add("prelude (scripts.go)", prelude())
	t.addFiles(sharedFiles)
	t.add("scripts.go (scriptStart)", scriptStart)
	t.addFiles(files)
	return t
}

// scriptSource is the text of sc as EVALSHA runs it, with its spans.
func scriptSource(sc *redis.Script) (string, spans) {
	t := scriptText(scriptFiles[sc])
	return t.b.String(), t.spans
}

// script builds a script from the prelude, the shared library and the
// named files, in order: the text run by EVALSHA where Redis has no
// Functions (miniredis, the embedded mode), and one function of the
// Functions library (library) elsewhere.
func script(files ...string) *redis.Script {
	sc := redis.NewScript(scriptText(files).b.String())
	scriptFiles[sc] = files
	return sc
}

// The scripts. Each file under lua/ says what it takes and returns.
var (
	applyScript     = script("apply")
	keepScript      = script("keep")
	stashScript     = script("stash")
	placeScript     = script("place")
	unpendScript    = script("unpend")
	unkeepScript    = script("unkeep")
	syncScript      = script("sync")
	adoptScript     = script("adopt")
	mergeScript     = script("merge")
	tombScript      = script("tomb")
	settleScript    = script("settle")
	sweepScript     = script("sweep")
	forgetScript    = script("forget")
	admitScript     = script("admit")
	unreplayScript  = script("unreplay")
	devicesScript   = script("devices")
	sessionsScript  = script("sessions")
	usageScript     = script("usage")
	unbindScript    = script("unbind")
	rotateScript    = script("rotate")
	addMemberScript = script("add_member")
)

// scriptNames names every script, for Observe and as its function's name;
// TestEveryScriptHasAName keeps it in step with allScripts.
var scriptNames = map[*redis.Script]string{
	applyScript: "apply", keepScript: "keep", stashScript: "stash", placeScript: "place", unpendScript: "unpend",
	unkeepScript: "unkeep", syncScript: "sync", adoptScript: "adopt", mergeScript: "merge", tombScript: "tomb", settleScript: "settle",
	sweepScript: "sweep", forgetScript: "forget", admitScript: "admit", unreplayScript: "unreplay", devicesScript: "devices", sessionsScript: "sessions",
	usageScript: "usage", unbindScript: "unbind", rotateScript: "rotate",
	addMemberScript: "add_member",
}

var allScripts = []*redis.Script{applyScript, keepScript, stashScript, placeScript, unpendScript, unkeepScript, syncScript, adoptScript, mergeScript,
	tombScript, settleScript, sweepScript, forgetScript, admitScript, unreplayScript, devicesScript, sessionsScript, usageScript, unbindScript, rotateScript, addMemberScript}

// The Functions library (Redis 7): the prelude and lib run once, when the
// library loads, and each script is a function of it, so a call pays for
// its own work only, not for making the shared functions again (most of
// what a one-event commit cost). Its name carries a digest of its text,
// so fleetd versions with different scripts, during a rolling upgrade,
// each call their own.
var (
	libraryName   string
	librarySource string
	librarySpans  spans
	functionName  = map[*redis.Script]string{}
	scriptByFunc  = map[string]string{}
)

func init() {
	names := make([]*redis.Script, len(allScripts))
	copy(names, allScripts)
	slices.SortFunc(names, func(a, b *redis.Script) int { return strings.Compare(scriptNames[a], scriptNames[b]) })
	t := &text{}
	t.add("scripts.go (library)", "#!lua name=LIBRARY") // the name, a digest of the rest, is set below
	t.add("prelude (scripts.go)", prelude())
	t.addFiles(sharedFiles)
	for _, sc := range names {
		t.add("scripts.go (library)", fmt.Sprintf("local function fn_%s(KEYS, ARGV)\n%s", scriptNames[sc], scriptStart))
		t.addFiles(scriptFiles[sc])
		t.add("scripts.go (library)", "end")
	}
	body := t.b.String()
	sum := sha256.Sum256([]byte(body))
	libraryName = "fleetd_" + hex.EncodeToString(sum[:6])
	var reg strings.Builder
	for _, sc := range names {
		fn := libraryName + "_" + scriptNames[sc]
		functionName[sc] = fn
		scriptByFunc[fn] = scriptNames[sc]
		fmt.Fprintf(&reg, "redis.register_function('%s', fn_%s)\n", fn, scriptNames[sc])
	}
	t.add("scripts.go (library)", reg.String())
	librarySource = strings.Replace(t.b.String(), "LIBRARY", libraryName, 1)
	librarySpans = t.spans
}

// scriptLine matches the place of a Lua error in Redis's answer.
var scriptLine = regexp.MustCompile(`user_(script|function):(\d+)`)

// locateScriptError names the file and line of a Lua error in err's text
// (Redis reports a line of the assembled text).
func locateScriptError(sc *redis.Script, functions bool, err error) error {
	m := scriptLine.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	n, _ := strconv.Atoi(m[2])
	ss := librarySpans
	if !functions {
		_, ss = scriptSource(sc)
	}
	file, line := ss.locate(n)
	return fmt.Errorf("%w (at %s:%d)", err, file, line)
}
