package redisstore

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestRegisterAndOnline(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	wantResults(t, apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)), reg("d2", "acme", t0)), fleet.Accepted, fleet.Accepted)
	if d := device(t, s, "acme", "d1"); d.Online || d.Name != "n-d1" || d.OS != "Linux" || !d.LastSeen.Equal(t0.Add(-time.Hour)) {
		t.Fatalf("new device = %+v, want offline with last_seen = registration ts", d)
	}
	wantResults(t, apply(t, s, online("d1", true, t0, "")), fleet.Accepted)
	st := stats(t, s, "acme")
	if st.Devices != 2 || st.Online != 1 {
		t.Fatalf("stats = %+v, want 2 devices, 1 online", st)
	}
	// A device of another workspace is not found there.
	if _, err := s.Device(ctx, "other", "d1"); fleet.ErrorCode(err) != fleet.ENOTFOUND {
		t.Fatalf("device in other workspace: err = %v, want not_found", err)
	}
}

func TestStaleOnlineChangesNothing(t *testing.T) {
	s, _ := MustOpen(t)
	apply(t, s, reg("d1", "acme", t0.Add(-time.Hour)))
	wantResults(t, apply(t, s, online("d1", true, t0, ""), online("d1", false, t0.Add(-time.Minute), "")), fleet.Accepted, fleet.Stale)
	d := device(t, s, "acme", "d1")
	if !d.Online || !d.LastSeen.Equal(t0) {
		t.Fatalf("device = %+v, want online, last_seen %v", d, t0)
	}
}

func TestUnknownTypeIgnored(t *testing.T) {
	s, _ := MustOpen(t)
	wantResults(t, apply(t, s, fleet.Event{Type: fleet.EventUnknown}), fleet.Ignored)
}

// snapshotAll is every key with its serialized value (DUMP), to show
// that a refused call changed nothing.
func snapshotAll(tb testing.TB, s *Store) map[string]string {
	tb.Helper()
	out := map[string]string{}
	for _, k := range keysMatching(tb, s, "*") {
		v, err := s.rdb.Dump(context.Background(), k).Result()
		if err != nil {
			tb.Fatal(err)
		}
		out[k] = v
	}
	return out
}

// Every writing script checks all its arguments before its first write: a
// malformed event after good ones fails the call with nothing written.
func TestScriptsCheckBeforeWriting(t *testing.T) {
	s, _ := MustOpen(t)
	ctx := context.Background()
	apply(t, s, reg("d1", "a", t0.Add(-time.Hour)))
	now := s.clock()
	good := []any{wsPrefix("a"), int(fleet.EventOnlineChanged), "", ms(t0), "d1", "", "1", "", strconv.FormatInt(ms(t0), 36)}
	for name, c := range map[string]*call{
		"apply, bad ts": {script: applyScript, keys: []string{wsDevKey("a")},
			args: append(append([]any{now, int64(86400000)}, good...), wsPrefix("a"), int(fleet.EventOnlineChanged), "", "not-a-ts", "d1", "", "0", "", "x")},
		"apply, durationSec out of range": {script: applyScript, keys: []string{wsDevKey("a")},
			args: append(append([]any{now, int64(86400000)}, good...), wsPrefix("a"), int(fleet.EventSessionEnded), "", ms(t0), "d1", "s1", "success", "100000000000000000", strconv.FormatInt(ms(t0), 36))},
		"keep, bad ts": {script: keepScript, keys: []string{idxKey(bucketOf("k1"))},
			args: []any{now, 10, bucketPrefix(bucketOf("k1")), int(fleet.EventOnlineChanged), "", ms(t0), "k1", "", "1", "", bucketPrefix(bucketOf("k1")), int(fleet.EventOnlineChanged), "", "x", "k1", "", "1", ""}},
		"place, bad placement": {script: placeScript, keys: []string{idxKey(bucketOf("p1"))},
			args: []any{bucketPrefix(bucketOf("p1")), "p1", 1, "1000+a", bucketPrefix(bucketOf("p1")), "p1", 2, "1000+a", "1000*b"}},
		"sync, bad registration ts": {script: syncScript, keys: []string{wsDevKey("a")},
			args: []any{now, int64(86400000), int64(86400000), "d9", "1000+a", "1000", `{"n":"n","o":"o"}`, "n", "o", "", "d9", "1000+a", "x", `{}`, "", "", ""}},
	} {
		t.Run(name, func(t *testing.T) {
			before := snapshotAll(t, s)
			err := s.exec(ctx, []*call{c})
			if err == nil {
				t.Fatal("the call succeeded")
			}
			if after := snapshotAll(t, s); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("a refused call changed the data:\nbefore %v\nafter  %v", before, after)
			}
		})
	}
}
