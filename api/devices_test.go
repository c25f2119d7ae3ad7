package api

import (
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// t0 is the fixed "now" of the tests that need exact times.
var t0 = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

const (
	routeDevices = "/api/v1/devices"
	routeDevice  = "/api/v1/devices/{id}"
	routeUnbind  = "/api/v1/devices/{id}/unbind"
	routeRotate  = "/api/v1/devices/{id}/secret:rotate"
	routeSess    = "/api/v1/sessions"
	routeUsage   = "/api/v1/usage"
	routeMembers = "/api/v1/members"
	routeInvite  = "/api/v1/members:invite"
)

func TestDevices(t *testing.T) {
	e := MustEnv(t, envOptions{now: t0})
	key, _ := e.MustKey(t, "acme", false)
	bind := registered("d3", "acme", "mac-3", "macOS", t0.Add(-30*time.Minute))
	bind["userId"] = "u-42"
	e.MustSend(t,
		registered("d1", "acme", "qz-win-105", "Windows", t0.Add(-time.Hour)),
		registered("d2", "acme", "lin \"quoted\"\n", "Linux", t0.Add(-time.Hour)),
		bind,
		registered("x1", "other", "theirs", "Windows", t0.Add(-time.Hour)),
		onlineEv("d1", true, t0.Add(-10*time.Minute)),
		onlineEv("d3", true, t0.Add(-5*time.Minute)),
	)

	ids := func(l deviceList) string {
		var s []string
		for _, d := range l.Items {
			s = append(s, d.ID)
		}
		return strings.Join(s, ",")
	}
	lists := map[string]struct {
		path string
		want string
	}{
		"all":                {routeDevices, "d1,d2,d3"},
		"online":             {query(routeDevices, "online", "true"), "d1,d3"},
		"offline":            {query(routeDevices, "online", "false"), "d2"},
		"os any case":        {query(routeDevices, "os", "WINDOWS"), "d1"},
		"os and online":      {query(routeDevices, "os", "macos", "online", "true"), "d3"},
		"os matches nothing": {query(routeDevices, "os", "Plan 9"), ""},
		"unknown params":     {query(routeDevices, "color", "blue", "limit", "50"), "d1,d2,d3"},
	}
	for name, tc := range lists {
		t.Run(name, func(t *testing.T) {
			var l deviceList
			r := e.Get(t, tc.path, routeDevices, key)
			if r.Status != 200 {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
			r.JSON(t, &l)
			if got := ids(l); got != tc.want || l.NextCursor != nil {
				t.Fatalf("got %q next %v, want %q and null", got, l.NextCursor, tc.want)
			}
		})
	}

	t.Run("listed fields", func(t *testing.T) {
		r := e.Get(t, routeDevices, routeDevices, key)
		want := `{"items":[` +
			`{"id":"d1","name":"qz-win-105","os":"Windows","online":true,"last_seen":"` + rfc(t0.Add(-10*time.Minute)) + `"},` +
			`{"id":"d2","name":"lin \"quoted\"\n","os":"Linux","online":false,"last_seen":"` + rfc(t0.Add(-time.Hour)) + `"},` +
			`{"id":"d3","name":"mac-3","os":"macOS","online":true,"last_seen":"` + rfc(t0.Add(-5*time.Minute)) + `"}` +
			`],"next_cursor":null}`
		if string(r.Body) != want {
			t.Fatalf("got  %s\nwant %s", r.Body, want)
		}
	})

	t.Run("single device", func(t *testing.T) {
		r := e.Get(t, "/api/v1/devices/d3", routeDevice, key)
		want := `{"id":"d3","name":"mac-3","os":"macOS","online":true,"last_seen":"` + rfc(t0.Add(-5*time.Minute)) + `","user_id":"u-42","workspace_id":"acme"}`
		if r.Status != 200 || string(r.Body) != want {
			t.Fatalf("got %d %s\nwant %s", r.Status, r.Body, want)
		}
		r = e.Get(t, "/api/v1/devices/d1", routeDevice, key)
		var d device
		r.JSON(t, &d)
		if d.UserID != nil || !strings.Contains(string(r.Body), `"user_id":null`) {
			t.Fatalf("unbound device: %s", r.Body)
		}
	})

	t.Run("percent-encoded id", func(t *testing.T) {
		e.MustSend(t, registered("a:b@c", "acme", "odd", "Linux", t0.Add(-time.Hour)))
		r := e.Get(t, "/api/v1/devices/a%3Ab%40c", routeDevice, key)
		var d device
		r.JSON(t, &d)
		if r.Status != 200 || d.ID != "a:b@c" {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})

	t.Run("other workspace is not found like a missing device", func(t *testing.T) {
		theirs := e.Get(t, "/api/v1/devices/x1", routeDevice, key)
		missing := e.Get(t, "/api/v1/devices/x2", routeDevice, key)
		wantError(t, theirs, 404, "not_found")
		wantError(t, missing, 404, "not_found")
		if strings.ReplaceAll(string(theirs.Body), "x1", "ID") != strings.ReplaceAll(string(missing.Body), "x2", "ID") {
			t.Fatalf("bodies differ beyond the id:\n%s\n%s", theirs.Body, missing.Body)
		}
		for _, route := range []string{routeUnbind, routeRotate} {
			p := strings.Replace(route, "{id}", "x1", 1)
			wantError(t, e.Post(t, p, route, key, nil), 404, "not_found")
		}
		// Nor does the other workspace's listing leak into ours.
		other, _ := e.MustKey(t, "other", false)
		var l deviceList
		e.Get(t, routeDevices, routeDevices, other).JSON(t, &l)
		if ids(l) != "x1" {
			t.Fatalf("other workspace lists %q", ids(l))
		}
	})

	t.Run("invalid path id", func(t *testing.T) {
		for _, p := range []string{"/api/v1/devices/" + strings.Repeat("a", 129), "/api/v1/devices/a%20b", "/api/v1/devices/%FF"} {
			wantError(t, e.Get(t, p, routeDevice, key), 404, "not_found")
		}
	})

	t.Run("unbind", func(t *testing.T) {
		r := e.Post(t, "/api/v1/devices/d3/unbind", routeUnbind, key, nil)
		want := `{"id":"d3","name":"mac-3","os":"macOS","online":true,"last_seen":"` + rfc(t0.Add(-5*time.Minute)) + `","user_id":null,"workspace_id":"acme"}`
		if r.Status != 200 || string(r.Body) != want {
			t.Fatalf("got %d %s\nwant %s", r.Status, r.Body, want)
		}
		var d device
		e.Get(t, "/api/v1/devices/d3", routeDevice, key).JSON(t, &d)
		if d.UserID != nil {
			t.Fatalf("still bound: %+v", d)
		}
		// Unbinding again is harmless.
		if r := e.Post(t, "/api/v1/devices/d3/unbind", routeUnbind, key, nil); r.Status != 200 {
			t.Fatalf("second unbind: %d %s", r.Status, r.Body)
		}
	})

	t.Run("rotate secret", func(t *testing.T) {
		r := e.Post(t, "/api/v1/devices/d1/secret:rotate", routeRotate, key, nil)
		var rot struct {
			ID        string `json:"id"`
			Secret    string `json:"secret"`
			RotatedAt string `json:"rotated_at"`
		}
		r.JSON(t, &rot)
		if r.Status != 200 || rot.ID != "d1" || rot.RotatedAt != rfc(t0) || !regexp.MustCompile(`^ds_[A-Za-z0-9_-]{43}$`).MatchString(rot.Secret) {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
		if r.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("a secret without Cache-Control: no-store")
		}
		r2 := e.Post(t, "/api/v1/devices/d1/secret:rotate", routeRotate, key, nil)
		var rot2 struct{ Secret string }
		r2.JSON(t, &rot2)
		if rot2.Secret == rot.Secret {
			t.Fatal("two rotations gave the same secret")
		}
		// Offline until an online event newer than rotated_at.
		var d device
		e.Get(t, "/api/v1/devices/d1", routeDevice, key).JSON(t, &d)
		if d.Online {
			t.Fatal("online right after rotation")
		}
		e.MustSend(t, onlineEv("d1", true, t0))
		e.Get(t, "/api/v1/devices/d1", routeDevice, key).JSON(t, &d)
		if d.Online {
			t.Fatal("an online event at rotated_at brought the device back")
		}
		e.MustSend(t, onlineEv("d1", true, t0.Add(time.Second)))
		e.Get(t, "/api/v1/devices/d1", routeDevice, key).JSON(t, &d)
		if !d.Online {
			t.Fatal("an online event after rotated_at did not bring the device back")
		}
	})
}

// TestDevicesPagination walks every page while devices keep registering:
// each device that existed before the walk is seen exactly once, no id
// twice, and only the last page is short.
func TestDevicesPagination(t *testing.T) {
	e := MustEnv(t, envOptions{})
	key, _ := e.MustKey(t, "acme", true)
	const before = 300
	var evs []ev
	pre := map[string]bool{}
	for i := range before {
		id := fmt.Sprintf("dev-%03d", i*3) // leaves gaps for the newcomers
		pre[id] = true
		evs = append(evs, registered(id, "acme", "n"+id, "Linux", time.Now().Add(-time.Minute)))
	}
	e.MustSend(t, evs...)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var added atomic.Int64
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			// Newcomers land before, inside and after the pages walked.
			id := fmt.Sprintf("dev-%03d", (i*7)%(before*3)/3*3+1+i%2)
			if err := e.Send(registered(id, "acme", "new", "Linux", time.Now())); err != nil {
				t.Error(err)
				return
			}
			added.Add(1)
		}
	})

	seen := map[string]int{}
	cursor := ""
	pages := 0
	for {
		p := query(routeDevices, "limit", "7")
		if cursor != "" {
			p = query(routeDevices, "limit", "7", "cursor", cursor)
		}
		r := e.Get(t, p, routeDevices, key)
		if r.Status != 200 {
			t.Fatalf("page %d: %d %s", pages, r.Status, r.Body)
		}
		var l deviceList
		r.JSON(t, &l)
		pages++
		for _, d := range l.Items {
			seen[d.ID]++
		}
		if l.NextCursor == nil {
			break
		}
		if len(l.Items) != 7 {
			t.Fatalf("page %d has %d items but is not the last", pages, len(l.Items))
		}
		cursor = *l.NextCursor
		time.Sleep(time.Millisecond) // let the writer interleave
	}
	close(stop)
	wg.Wait()
	for id, n := range seen {
		if n != 1 {
			t.Errorf("%s seen %d times", id, n)
		}
	}
	for id := range pre {
		if seen[id] != 1 {
			t.Errorf("pre-existing %s seen %d times", id, seen[id])
		}
	}
	if added.Load() == 0 {
		t.Fatal("no device registered during the walk")
	}
	t.Logf("%d pages, %d ids, %d registrations during the walk", pages, len(seen), added.Load())
}
