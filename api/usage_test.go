package api

import (
	"testing"
	"time"
)

// TestUsage: sessions ended on both sides of the February/March 2026
// boundary, read over whole months, whole days and partial days. A session
// belongs to the period in which it ended.
func TestUsage(t *testing.T) {
	e := MustEnv(t, envOptions{now: t0}) // 2026-03-10T12:00:00Z
	key, _ := e.MustKey(t, "acme", true)
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	e.MustSend(t,
		registered("d1", "acme", "one", "Linux", at("2026-01-01T00:00:00Z")),
		registered("d2", "acme", "two", "Linux", at("2026-01-01T00:00:00Z")),
		registered("d3", "acme", "three", "Linux", at("2026-01-01T00:00:00Z")),
		registered("d4", "acme", "four", "Linux", at("2026-01-01T00:00:00Z")),
		registered("d5", "acme", "five", "Linux", at("2026-01-01T00:00:00Z")),
		registered("x1", "other", "theirs", "Linux", at("2026-01-01T00:00:00Z")),
		endedEv("d1", "a", "success", 600, at("2026-02-27T10:00:00Z")),
		endedEv("d2", "b", "success", 90, at("2026-02-28T23:59:30Z")),
		endedEv("d1", "c", "success", 120, at("2026-03-01T00:00:00Z")),
		endedEv("d3", "d", "failed", 45, at("2026-03-01T00:00:30Z")),
		endedEv("d1", "e", "success", 3600, at("2026-03-05T08:00:00Z")),
		startedEv("d4", "live", t0.Add(-10*time.Minute)),
		endedEv("x1", "x", "success", 99999, at("2026-03-02T00:00:00Z")),
	)

	tests := map[string]struct {
		args []string
		want usage
	}{
		"default is the current month, live devices included": {nil,
			usage{62, 3, 5, "2026-03-01T00:00:00Z", "2026-04-01T00:00:00Z", 3765}},
		"previous month, no live devices": {[]string{"from", "2026-02-01T00:00:00Z", "to", "2026-03-01T00:00:00Z"},
			usage{11, 2, 5, "2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z", 690}},
		"minutes across the boundary, to exclusive": {[]string{"from", "2026-02-28T23:59:00Z", "to", "2026-03-01T00:00:30Z"},
			usage{3, 2, 5, "2026-02-28T23:59:00Z", "2026-03-01T00:00:30Z", 210}},
		"partial days at both ends": {[]string{"from", "2026-02-28T12:00:00Z", "to", "2026-03-05T09:00:00Z"},
			usage{64, 3, 5, "2026-02-28T12:00:00Z", "2026-03-05T09:00:00Z", 3855}},
		"whole days": {[]string{"from", "2026-02-27T00:00:00Z", "to", "2026-03-02T00:00:00Z"},
			usage{14, 3, 5, "2026-02-27T00:00:00Z", "2026-03-02T00:00:00Z", 855}},
		"partial end day only": {[]string{"from", "2026-03-05T00:00:00Z", "to", "2026-03-05T08:00:00Z"},
			usage{0, 0, 5, "2026-03-05T00:00:00Z", "2026-03-05T08:00:00Z", 0}},
		"from inclusive": {[]string{"from", "2026-03-05T08:00:00Z", "to", "2026-03-05T08:00:01Z"},
			usage{60, 1, 5, "2026-03-05T08:00:00Z", "2026-03-05T08:00:01Z", 3600}},
		"fractional from": {[]string{"from", "2026-03-01T00:00:00.5Z", "to", "2026-03-01T00:01:00Z"},
			usage{0, 1, 5, "2026-03-01T00:00:00.5Z", "2026-03-01T00:01:00Z", 45}},
		"offset": {[]string{"from", "2026-03-01T01:00:00+01:00", "to", "2026-03-01T00:00:31Z"},
			usage{2, 2, 5, "2026-03-01T00:00:00Z", "2026-03-01T00:00:31Z", 165}},
		"only from: to is the end of the current month": {[]string{"from", "2026-02-28T00:00:00Z"},
			usage{64, 4, 5, "2026-02-28T00:00:00Z", "2026-04-01T00:00:00Z", 3855}},
		"only to: from is the start of the current month": {[]string{"to", "2026-03-01T00:00:31Z"},
			usage{2, 2, 5, "2026-03-01T00:00:00Z", "2026-03-01T00:00:31Z", 165}},
		"a whole year": {[]string{"from", "2025-04-01T00:00:00Z", "to", "2026-04-01T00:00:00Z"},
			usage{74, 4, 5, "2025-04-01T00:00:00Z", "2026-04-01T00:00:00Z", 4455}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := e.Get(t, query(routeUsage, tc.args...), routeUsage, key)
			var u usage
			r.JSON(t, &u)
			if r.Status != 200 || u != tc.want {
				t.Fatalf("got %d %s\nwant %+v", r.Status, r.Body, tc.want)
			}
		})
	}

	t.Run("unencoded plus in the offset", func(t *testing.T) {
		r := e.Get(t, routeUsage+"?from=2026-03-01T01:00:00+01:00&to=2026-03-01T00:00:31Z", routeUsage, key)
		var u usage
		r.JSON(t, &u)
		if r.Status != 200 || u.SessionSeconds != 165 {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})

	bad := map[string][]string{
		"from unparsable":      {"from", "yesterday"},
		"to unparsable":        {"to", "2026-03-01"},
		"numeric from":         {"from", "1772323200000"},
		"from equals to":       {"from", "2026-03-01T00:00:00Z", "to", "2026-03-01T00:00:00Z"},
		"from after to":        {"from", "2026-03-02T00:00:00Z", "to", "2026-03-01T00:00:00Z"},
		"to before the month":  {"to", "2026-02-01T00:00:00Z"},
		"more than 366 days":   {"from", "2024-01-01T00:00:00Z", "to", "2026-01-01T00:00:00Z"},
		"no time zone":         {"from", "2026-03-01T00:00:00"},
		"out of range month":   {"from", "2026-13-01T00:00:00Z"},
		"trailing garbage":     {"from", "2026-03-01T00:00:00Zjunk"},
		"from far in the past": {"from", "0001-01-01T00:00:00Z"},
	}
	for name, args := range bad {
		t.Run(name, func(t *testing.T) {
			wantError(t, e.Get(t, query(routeUsage, args...), routeUsage, key), 400, "invalid_request")
		})
	}
}
