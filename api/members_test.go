package api

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestMembers(t *testing.T) {
	e := MustEnv(t, envOptions{now: t0})
	key, _ := e.MustKey(t, "acme", false)
	// A member added out of band (fleetd members add) is listed too.
	if err := e.store.AddMember(context.Background(), "acme", fleet.Member{Email: "boss@acme.com", Role: "owner", Status: "active", InvitedAt: t0.Add(-time.Hour)}); err != nil {
		t.Fatal(err)
	}

	invite := func(t *testing.T, body string) *response {
		t.Helper()
		return e.Post(t, routeInvite, routeInvite, key, []byte(body))
	}

	t.Run("invite", func(t *testing.T) {
		r := invite(t, `{"email":"Dev@Acme.com","role":"member"}`)
		want := `{"email":"dev@acme.com","role":"member","status":"invited","invited_at":"` + rfc(t0) + `"}`
		if r.Status != 201 || string(r.Body) != want {
			t.Fatalf("got %d %s\nwant %s", r.Status, r.Body, want)
		}
	})

	t.Run("list", func(t *testing.T) {
		var l memberList
		r := e.Get(t, routeMembers, routeMembers, key)
		r.JSON(t, &l)
		want := []member{
			{"boss@acme.com", "owner", "active", rfc(t0.Add(-time.Hour))},
			{"dev@acme.com", "member", "invited", rfc(t0)},
		}
		if r.Status != 200 || fmt.Sprint(l.Items) != fmt.Sprint(want) || l.NextCursor != nil {
			t.Fatalf("got %d %s", r.Status, r.Body)
		}
	})

	bad := map[string]struct {
		body   string
		status int
		name   string
	}{
		"already a member, other case": {`{"email":"DEV@acme.com","role":"admin"}`, 409, "conflict"},
		"malformed json":               {`{"email":`, 400, "invalid_request"},
		"not an object":                {`["a@b.c"]`, 400, "invalid_request"},
		"empty body":                   {``, 400, "invalid_request"},
		"wrong type":                   {`{"email":42,"role":"member"}`, 400, "invalid_request"},
		"no email":                     {`{"role":"member"}`, 400, "invalid_request"},
		"no role":                      {`{"email":"x@acme.com"}`, 400, "invalid_request"},
		"unknown role":                 {`{"email":"x@acme.com","role":"god"}`, 400, "invalid_request"},
		"role is case-sensitive":       {`{"email":"x@acme.com","role":"Owner"}`, 400, "invalid_request"},
		"display name":                 {`{"email":"X <x@acme.com>","role":"member"}`, 400, "invalid_request"},
		"angle brackets":               {`{"email":"<x@acme.com>","role":"member"}`, 400, "invalid_request"},
		"no at":                        {`{"email":"x.acme.com","role":"member"}`, 400, "invalid_request"},
		"two ats":                      {`{"email":"\"x@y\"@acme.com","role":"member"}`, 400, "invalid_request"},
		"no domain":                    {`{"email":"x@","role":"member"}`, 400, "invalid_request"},
		"no local part":                {`{"email":"@acme.com","role":"member"}`, 400, "invalid_request"},
		"spaces":                       {`{"email":" x@acme.com","role":"member"}`, 400, "invalid_request"},
		"too long":                     {`{"email":"` + strings.Repeat("x", 250) + `@acme.com","role":"member"}`, 400, "invalid_request"},
	}
	for name, tc := range bad {
		t.Run(name, func(t *testing.T) {
			var r *response
			if tc.body == "" {
				r = e.Post(t, routeInvite, routeInvite, key, nil)
			} else {
				r = invite(t, tc.body)
			}
			wantError(t, r, tc.status, tc.name)
		})
	}

	t.Run("pages", func(t *testing.T) {
		for i := range 9 {
			if r := invite(t, fmt.Sprintf(`{"email":"p%d@acme.com","role":"admin"}`, i)); r.Status != 201 {
				t.Fatalf("%d %s", r.Status, r.Body)
			}
		}
		seen := map[string]bool{}
		p := query(routeMembers, "limit", "4")
		pages := 0
		for {
			var l memberList
			r := e.Get(t, p, routeMembers, key)
			r.JSON(t, &l)
			pages++
			for _, m := range l.Items {
				if seen[m.Email] {
					t.Fatalf("%s twice", m.Email)
				}
				seen[m.Email] = true
			}
			if l.NextCursor == nil {
				break
			}
			if len(l.Items) != 4 {
				t.Fatalf("short page %d before the last", len(l.Items))
			}
			p = query(routeMembers, "limit", "4", "cursor", *l.NextCursor)
		}
		if len(seen) != 11 || pages != 3 {
			t.Fatalf("%d members in %d pages", len(seen), pages)
		}
	})

	t.Run("members are per workspace", func(t *testing.T) {
		other, _ := e.MustKey(t, "other", false)
		var l memberList
		e.Get(t, routeMembers, routeMembers, other).JSON(t, &l)
		if len(l.Items) != 0 {
			t.Fatalf("got %+v", l.Items)
		}
		if r := e.Post(t, routeInvite, routeInvite, other, []byte(`{"email":"dev@acme.com","role":"owner"}`)); r.Status != 201 {
			t.Fatalf("same email in another workspace: %d %s", r.Status, r.Body)
		}
	})
}

// TestPageParams: limit and cursor are checked the same way on every list.
func TestPageParams(t *testing.T) {
	e := MustEnv(t, envOptions{})
	key, _ := e.MustKey(t, "acme", true)
	var evs []ev
	for i := range 3 {
		evs = append(evs, registered(fmt.Sprintf("d%d", i), "acme", "n", "Linux", time.Now().Add(-time.Minute)))
	}
	e.MustSend(t, evs...)
	for _, route := range []string{routeDevices, routeSess, routeMembers} {
		for _, args := range [][]string{
			{"limit", "0"}, {"limit", "501"}, {"limit", "abc"}, {"limit", "-1"}, {"limit", ""},
			{"limit", "1.5"}, {"limit", "99999999999999999999"}, {"limit", " 5"},
			{"cursor", "!!!"}, {"cursor", "YSBi"}, {"cursor", strings.Repeat("A", 2000)},
		} {
			t.Run(route+"?"+strings.Join(args, "="), func(t *testing.T) {
				r := e.Get(t, query(route, args...), route, key)
				eb := wantError(t, r, 400, "invalid_request")
				if args[0] == "limit" && !strings.Contains(eb.Message, "500") {
					t.Errorf("unhelpful message %q", eb.Message)
				}
			})
		}
		for _, limit := range []string{"1", "500", "007"} {
			if r := e.Get(t, query(route, "limit", limit), route, key); r.Status != 200 {
				t.Errorf("%s limit=%s: %d %s", route, limit, r.Status, r.Body)
			}
		}
	}
	t.Run("online must be a boolean", func(t *testing.T) {
		for _, v := range []string{"yes", "1", "TRUE", ""} {
			wantError(t, e.Get(t, query(routeDevices, "online", v), routeDevices, key), 400, "invalid_request")
		}
	})
	t.Run("limit 1 pages one at a time", func(t *testing.T) {
		var l deviceList
		e.Get(t, query(routeDevices, "limit", "1"), routeDevices, key).JSON(t, &l)
		if len(l.Items) != 1 || l.NextCursor == nil {
			t.Fatalf("got %+v", l)
		}
	})
}
