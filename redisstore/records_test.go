package redisstore

import (
	"context"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
	"pgregory.net/rapid"
)

func genSession(t *rapid.T, label string) sessionRecord {
	s := sessionRecord{Device: "d1", GivenDur: -1}
	if rapid.Bool().Draw(t, label+"start") {
		s.Start, s.HasStart = int64(rapid.IntRange(-2, 9).Draw(t, label+"st"))*1000, true
	}
	if !s.HasStart || rapid.Bool().Draw(t, label+"end") {
		s.End, s.HasEnd = int64(rapid.IntRange(-2, 9).Draw(t, label+"en"))*1000, true
		s.Status = rapid.SampledFrom([]string{"success", "failed", "odd,status"}).Draw(t, label+"status")
		if rapid.Bool().Draw(t, label+"gd") {
			s.GivenDur = int64(rapid.IntRange(0, 9).Draw(t, label+"dur"))
		}
	}
	if rapid.Bool().Draw(t, label+"written") {
		s.Written, s.hasWritten = 1782631800000, true
	}
	return s
}

// TestSessionGoMatchesLua: Go joins the copies of a session (reunite.go)
// as the scripts do (lib.lua: sjoin), and both read and write the record
// the same way, tombstones included.
func TestSessionGoMatchesLua(t *testing.T) {
	s, _ := MustOpenSingle(t)
	ctx := context.Background()
	join := redis.NewScript(prelude() + luaFile("lib") + "\n" + scriptStart + `
local a, b = sget(ARGV[1]), sget(ARGV[2])
return {sput(sjoin(a, b)), sput(a), fmt(sat(sjoin(a, b)))}`)
	rapid.Check(t, func(rt *rapid.T) {
		a, b := genSession(rt, "a"), genSession(rt, "b")
		raw := a.String()
		if rapid.Bool().Draw(rt, "tomb") {
			raw = "~w1," + raw
		}
		back, ok := parseSession(raw)
		if !ok || back.String() != a.String() || back.Tomb != (raw[0] == '~') {
			rt.Fatalf("parseSession(%q) = %+v, %v", raw, back, ok)
		}
		got, err := join.Run(ctx, s.rdb, []string{"k"}, raw, b.String()).StringSlice()
		if err != nil {
			rt.Fatal(err)
		}
		// Lua keeps the write time of what arrives (b); Go the later one.
		want := a.join(b)
		if b.hasWritten {
			want.Written, want.hasWritten = b.Written, true
		} else {
			want.Written, want.hasWritten = a.Written, a.hasWritten
		}
		if got[0] != want.String() {
			rt.Fatalf("join of %q and %q: Lua %q, Go %q", raw, b.String(), got[0], want.String())
		}
		if got[1] != a.String() {
			rt.Fatalf("Lua writes %q back as %q", a.String(), got[1])
		}
		if got[2] != strconv.FormatInt(want.at(), 10) {
			rt.Fatalf("at of %q: Lua %s, Go %d", want.String(), got[2], want.at())
		}
	})
}

// TestBase36MatchesGo: the device record's times are base 36, written by
// Go (strconv) and by Lua (b36s) and read by both.
func TestBase36MatchesGo(t *testing.T) {
	s, _ := MustOpenSingle(t)
	sc := redis.NewScript(prelude() + luaFile("lib") + "\n" + scriptStart + `
local out = {}
for i = 1, #ARGV do out[#out + 1] = b36s(tonumber(ARGV[i])) .. ' ' .. fmt(b36n(ARGV[i + 0] and b36s(tonumber(ARGV[i])))) end
return out`)
	nums := []int64{0, 1, 35, 36, 1782631800000, 253402300799999, -1, -62135596800000}
	args := make([]any, len(nums))
	for i, n := range nums {
		args[i] = n
	}
	got, err := sc.Run(context.Background(), s.rdb, []string{"k"}, args...).StringSlice()
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nums {
		if want := strconv.FormatInt(n, 36) + " " + strconv.FormatInt(n, 10); got[i] != want {
			t.Errorf("%d: Lua %q, Go %q", n, got[i], want)
		}
	}
}
