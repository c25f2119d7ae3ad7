package redisstore

import (
	"context"
	"sort"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"pgregory.net/rapid"
)

// genPlacements draws a placement history: up to 6 registrations and
// deletes in 3 workspaces on a small grid of ts (ties happen).
func genPlacements(t *rapid.T) history {
	n := rapid.IntRange(0, 6).Draw(t, "placements")
	seen := map[string]bool{}
	var h history
	for range n {
		p := placement{ts: int64(rapid.IntRange(-2, 6).Draw(t, "ts")) * 1000}
		if rapid.IntRange(0, 3).Draw(t, "kind") == 0 {
			p.del = true
		} else {
			p.ws = rapid.SampledFrom([]string{"w0", "w1", "w-2"}).Draw(t, "ws")
		}
		if !seen[p.String()] {
			seen[p.String()] = true
			h = append(h, p)
		}
	}
	sort.Slice(h, func(i, j int) bool {
		a, b := h[i], h[j]
		if a.ts != b.ts {
			return a.ts < b.ts
		}
		if a.del != b.del {
			return !a.del
		}
		return a.ws < b.ws
	})
	return h
}

func (h history) String() string {
	parts := make([]string, len(h))
	for i, p := range h {
		parts[i] = p.String()
	}
	return strings.Join(parts, "/")
}

// TestHistoryGoMatchesLua: Go routes events by a history (placement.go)
// and the scripts check them by it (lib.lua): both must name the same
// home at every time and the same workspace now, and Lua's union of two
// histories must be Go's.
func TestHistoryGoMatchesLua(t *testing.T) {
	s, _ := MustOpenSingle(t)
	ctx := context.Background()
	homes := redis.NewScript(prelude() + luaFile("lib") + "\n" + scriptStart + `
local hl = hparse(ARGV[1])
local out = {howner(hl) or ''}
for i = 2, #ARGV do out[#out + 1] = hhome(hl, tonumber(ARGV[i])) or '' end
return out`)
	union := redis.NewScript(prelude() + luaFile("lib") + "\n" + scriptStart + `
return hstr(hunion(hparse(ARGV[1]), hparse(ARGV[2])))`)
	rapid.Check(t, func(rt *rapid.T) {
		h := genPlacements(rt)
		raw := h.String()
		parsed, ok := parseHistory(raw)
		if !ok || parsed.String() != raw {
			rt.Fatalf("parseHistory(%q) = %v, %v", raw, parsed, ok)
		}
		args := []any{raw}
		var times []int64
		for ts := int64(-3000); ts <= 7000; ts += 500 {
			times = append(times, ts)
			args = append(args, ts)
		}
		got, err := homes.Run(ctx, s.rdb, []string{"k"}, args...).StringSlice()
		if err != nil {
			rt.Fatal(err)
		}
		if got[0] != h.owner() {
			rt.Fatalf("history %s: Lua owner %q, Go %q", raw, got[0], h.owner())
		}
		for i, ts := range times {
			if got[i+1] != h.home(ts) {
				rt.Fatalf("history %s at %d: Lua home %q, Go %q", raw, ts, got[i+1], h.home(ts))
			}
		}
		// The union of two halves is the whole, in order.
		k := rapid.IntRange(0, len(h)).Draw(rt, "cut")
		a, b := append(history(nil), h[:k]...), append(history(nil), h[k:]...)
		if u, err := union.Run(ctx, s.rdb, []string{"k"}, b.String(), a.String()).Text(); err != nil || u != raw {
			rt.Fatalf("union of %s and %s = %q, %v; want %s", b, a, u, err, raw)
		}
	})
}

func TestParseHistoryRefusesMalformed(t *testing.T) {
	for _, raw := range []string{"x", "12", "12+", "12-w", "+w", "1+w//2-"} {
		if h, ok := parseHistory(raw); ok {
			t.Errorf("parseHistory(%q) = %v, want refused", raw, h)
		}
	}
	if h, ok := parseHistory("-5+w-1/3-"); !ok || h.home(-5)+"|"+h.owner() != "w-1|" {
		t.Errorf("parseHistory of a negative ts and a dashed id: %v %v", h, ok)
	}
}
