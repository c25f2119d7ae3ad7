package redisstore

import (
	"embed"
	"fmt"
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

// script builds a script from the prelude, the shared library and the
// named files, in order.
func script(names ...string) *redis.Script {
	src := prelude() + luaFile("lib")
	for _, n := range names {
		src += "\n" + luaFile(n)
	}
	return redis.NewScript(src)
}

// The scripts. Each file under lua/ says what it takes and returns.
var (
	applyScript     = script("dedupe", "apply")
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
	devicesScript   = script("devices")
	sessionsScript  = script("sessions")
	usageScript     = script("usage")
	unbindScript    = script("unbind")
	rotateScript    = script("rotate")
	addMemberScript = script("add_member")
)

var allScripts = []*redis.Script{applyScript, keepScript, stashScript, placeScript, unpendScript, unkeepScript, syncScript, adoptScript, mergeScript,
	tombScript, settleScript, sweepScript, forgetScript, admitScript, devicesScript, sessionsScript, usageScript, unbindScript, rotateScript, addMemberScript}
