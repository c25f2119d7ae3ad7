package redisstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fleetd/fleetd/fleet"
)

// Filtered session listings read their own indexes (sessionSource: the
// device's sessions, the sessions without an end, an ended-status label),
// and device listings filter within a scan budget, so every property run
// also checks them against the unfiltered listings, which differsFromModel
// compares with the model: for every filter, paged two at a time, a
// listing must be exactly the unfiltered listing's items that match, in
// the same order (sessions newest at first).

// filtersDiffer returns the first filtered listing of ws that is not the
// unfiltered listing filtered, "" for none.
func filtersDiffer(tb testing.TB, s *Store, ws string) string {
	all := listAll(tb, s, ws, fleet.SessionFilter{}, 5)
	for i := 1; i < len(all); i++ {
		if all[i].At.After(all[i-1].At) {
			return fmt.Sprintf("%s: sessions not newest first: %s before %s", ws, all[i-1].ID, all[i].ID)
		}
	}
	statuses := []string{fleet.StatusLive, fleet.StatusAbandoned, "timeout", "no such status"}
	devices := []string{"no-such-device"}
	for _, x := range all {
		if !slices.Contains(statuses, x.Status) {
			statuses = append(statuses, x.Status)
		}
		if !slices.Contains(devices, x.DeviceID) {
			devices = append(devices, x.DeviceID)
		}
	}
	var filters []fleet.SessionFilter
	for _, st := range statuses {
		filters = append(filters, fleet.SessionFilter{Status: st})
	}
	for _, d := range devices {
		filters = append(filters, fleet.SessionFilter{DeviceID: d})
		for _, st := range statuses[:3] {
			filters = append(filters, fleet.SessionFilter{DeviceID: d, Status: st})
		}
	}
	for _, x := range all {
		filters = append(filters, fleet.SessionFilter{DeviceID: x.DeviceID, Status: x.Status})
	}
	for _, f := range filters {
		var want []string
		for _, x := range all {
			if (f.DeviceID == "" || x.DeviceID == f.DeviceID) && (f.Status == "" || x.Status == f.Status) {
				want = append(want, listed(x))
			}
		}
		var got []string
		for _, x := range listAll(tb, s, ws, f, 2) {
			got = append(got, listed(x))
		}
		if !slices.Equal(got, want) {
			return fmt.Sprintf("%s: sessions with device_id=%q status=%q:\n got  %s\n want %s", ws, f.DeviceID, f.Status,
				strings.Join(got, "; "), strings.Join(want, "; "))
		}
	}
	return ""
}

// deviceFiltersDiffer is filtersDiffer for the device listing of ws.
func deviceFiltersDiffer(tb testing.TB, s *Store, ws string) string {
	list := func(f fleet.DeviceFilter, limit int) []string {
		var out []string
		for cursor := ""; ; {
			p, err := s.ListDevices(context.Background(), ws, f, cursor, limit)
			if err != nil {
				tb.Fatal(err)
			}
			if p.Next != "" && len(p.Items) != limit {
				tb.Fatalf("%s %+v: a page of %d with a next cursor", ws, f, len(p.Items))
			}
			for _, d := range p.Items {
				out = append(out, fmt.Sprintf("%s os=%s online=%v", d.ID, d.OS, d.Online))
			}
			if cursor = p.Next; cursor == "" {
				return out
			}
		}
	}
	all := list(fleet.DeviceFilter{}, 5)
	on, off := true, false
	for _, online := range []*bool{nil, &on, &off} {
		for _, os := range []string{"", "linux", "Windows", "WINDOWS", "BeOS"} {
			f := fleet.DeviceFilter{Online: online, OS: os}
			var want []string
			for _, d := range all {
				ok := online == nil || strings.HasSuffix(d, fmt.Sprintf("online=%v", *online))
				if os != "" {
					_, rest, _ := strings.Cut(d, " os=")
					dos, _, _ := strings.Cut(rest, " online=")
					ok = ok && strings.EqualFold(dos, os)
				}
				if ok {
					want = append(want, d)
				}
			}
			if got := list(f, 2); !slices.Equal(got, want) {
				return fmt.Sprintf("%s: devices with %+v:\n got  %s\n want %s", ws, f, strings.Join(got, "; "), strings.Join(want, "; "))
			}
		}
	}
	return ""
}

// listAll pages through a listing, limit sessions a page.
func listAll(tb testing.TB, s *Store, ws string, f fleet.SessionFilter, limit int) []fleet.Session {
	var out []fleet.Session
	for cursor := ""; ; {
		p, err := s.ListSessions(context.Background(), ws, f, cursor, limit)
		if err != nil {
			tb.Fatal(err)
		}
		if p.Next != "" && len(p.Items) != limit {
			tb.Fatalf("%s %+v: a page of %d with a next cursor", ws, f, len(p.Items))
		}
		out = append(out, p.Items...)
		if cursor = p.Next; cursor == "" {
			return out
		}
	}
}

func listed(x fleet.Session) string {
	return sessionKey(x.ID, x.DeviceID, x.Status, x.DurationSec, x.At.UnixMilli())
}
