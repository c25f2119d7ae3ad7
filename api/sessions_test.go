package api

import (
	"strings"
	"testing"
	"time"
)

func TestSessions(t *testing.T) {
	e := MustEnv(t, envOptions{now: t0})
	key, _ := e.MustKey(t, "acme", true)
	e.MustSend(t,
		registered("d1", "acme", "one", "Linux", t0.Add(-72*time.Hour)),
		registered("d2", "acme", "two", "Linux", t0.Add(-72*time.Hour)),
		registered("x1", "other", "theirs", "Linux", t0.Add(-72*time.Hour)),
		// s1: started and ended.
		startedEv("d1", "s1", t0.Add(-2*time.Hour)),
		endedEv("d1", "s1", "success", 120, t0.Add(-2*time.Hour+120*time.Second)),
		// s2: the end alone; at is its end minus its duration.
		endedEv("d2", "s2", "failed", 300, t0.Add(-time.Hour)),
		// s3, s4: live.
		startedEv("d1", "s3", t0.Add(-90*time.Second)),
		startedEv("d2", "s4", t0.Add(-30*time.Minute)),
		// s5: its end never came, past the live-session bound.
		startedEv("d1", "s5", t0.Add(-48*time.Hour)),
		// Another workspace's session never shows.
		startedEv("x1", "sx", t0.Add(-time.Minute)),
	)
	s1 := session{"d1", "success", 120, rfc(t0.Add(-2 * time.Hour))}
	s2 := session{"d2", "failed", 300, rfc(t0.Add(-time.Hour - 300*time.Second))}
	s3 := session{"d1", "live", 90, rfc(t0.Add(-90 * time.Second))}
	s4 := session{"d2", "live", 1800, rfc(t0.Add(-30 * time.Minute))}
	s5 := session{"d1", "abandoned", 0, rfc(t0.Add(-48 * time.Hour))}

	tests := map[string]struct {
		args []string
		want []session
	}{
		"all, newest first":     {nil, []session{s3, s4, s2, s1, s5}},
		"one device":            {[]string{"device_id", "d1"}, []session{s3, s1, s5}},
		"live":                  {[]string{"status", "live"}, []session{s3, s4}},
		"ended status":          {[]string{"status", "success"}, []session{s1}},
		"device and status":     {[]string{"device_id", "d2", "status", "failed"}, []session{s2}},
		"unknown device":        {[]string{"device_id", "nope"}, nil},
		"other workspace":       {[]string{"device_id", "x1"}, nil},
		"status matches none":   {[]string{"status", "weird"}, nil},
		"unknown param ignored": {[]string{"sort", "asc"}, []session{s3, s4, s2, s1, s5}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := e.Get(t, query(routeSess, tc.args...), routeSess, key)
			var l sessionList
			r.JSON(t, &l)
			if r.Status != 200 || l.NextCursor != nil || !equalSessions(l.Items, tc.want) {
				t.Fatalf("got %d %s\nwant %+v", r.Status, r.Body, tc.want)
			}
			if len(tc.want) == 0 && !strings.HasPrefix(string(r.Body), `{"items":[],`) {
				t.Fatalf("empty list is not []: %s", r.Body)
			}
		})
	}

	t.Run("pages", func(t *testing.T) {
		var got []session
		var pages []int
		p := query(routeSess, "limit", "2")
		for {
			var l sessionList
			e.Get(t, p, routeSess, key).JSON(t, &l)
			got = append(got, l.Items...)
			pages = append(pages, len(l.Items))
			if l.NextCursor == nil {
				break
			}
			p = query(routeSess, "limit", "2", "cursor", *l.NextCursor)
		}
		if !equalSessions(got, []session{s3, s4, s2, s1, s5}) || len(pages) != 3 {
			t.Fatalf("pages %v: %+v", pages, got)
		}
	})

	t.Run("live duration keeps growing", func(t *testing.T) {
		e.clock.Advance(time.Minute)
		defer e.clock.Advance(-time.Minute)
		var l sessionList
		e.Get(t, query(routeSess, "status", "live", "device_id", "d1"), routeSess, key).JSON(t, &l)
		if len(l.Items) != 1 || l.Items[0].DurationSec != 150 {
			t.Fatalf("got %+v", l.Items)
		}
	})

	t.Run("ended live session", func(t *testing.T) {
		e.MustSend(t, ev{"type": "session.ended", "qdDeviceId": "d2", "sessionId": "s4", "status": "success", "ts": rfc(t0)})
		var l sessionList
		e.Get(t, query(routeSess, "device_id", "d2"), routeSess, key).JSON(t, &l)
		want := []session{{"d2", "success", 1800, rfc(t0.Add(-30 * time.Minute))}, s2}
		if !equalSessions(l.Items, want) {
			t.Fatalf("got %+v", l.Items)
		}
	})

	t.Run("bad filters", func(t *testing.T) {
		for _, args := range [][]string{
			{"device_id", "a b"},
			{"device_id", strings.Repeat("d", 129)},
			{"status", strings.Repeat("s", 257)},
		} {
			wantError(t, e.Get(t, query(routeSess, args...), routeSess, key), 400, "invalid_request")
		}
	})
}

func equalSessions(a, b []session) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
