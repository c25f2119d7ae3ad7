package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

// The fuzz targets of this file drive the real handlers (router, API key
// check, parameter and body parsing, error bodies) in process, over a
// recording fake store: what the handler hands to the store is exactly what
// the test compares with the contract of SPEC §4.

// fuzzT0 is the clock of the fuzzed server: 2026-06-28T07:30:00.250Z (the
// milliseconds show that defaults do not keep them).
var fuzzT0 = time.Date(2026, 6, 28, 7, 30, 0, 250e6, time.UTC)

// fuzzKey is the API key every fuzzed request carries; fuzzKeys resolves
// any key to workspace "acme".
const fuzzKey = "sk_live_fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzz"

type fuzzKeys struct{ fleet.KeyStore }

func (fuzzKeys) KeyByHash(context.Context, []byte) (fleet.APIKey, error) {
	return fleet.APIKey{ID: "key_fuzz", Workspace: "acme"}, nil
}

func (fuzzKeys) TouchKey(context.Context, string, time.Time) error { return nil }

// fuzzCall is what a handler handed to the store.
type fuzzCall struct {
	method   string
	ws       string
	devices  fleet.DeviceFilter
	sessions fleet.SessionFilter
	cursor   string
	limit    int
	from, to time.Time
	member   fleet.Member
}

// fuzzReader records the calls of the handlers and answers empty pages;
// AddMember refuses an email it has seen, as the store does.
type fuzzReader struct {
	fleet.Reader
	mu      sync.Mutex
	calls   []fuzzCall
	members map[string]bool
}

func (r *fuzzReader) record(c fuzzCall) {
	r.mu.Lock()
	r.calls = append(r.calls, c)
	r.mu.Unlock()
}

// take returns the calls since the last take.
func (r *fuzzReader) take() []fuzzCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := r.calls
	r.calls = nil
	return c
}

func (r *fuzzReader) ListDevices(_ context.Context, ws string, f fleet.DeviceFilter, cursor string, limit int) (fleet.Page[fleet.Device], error) {
	r.record(fuzzCall{method: "ListDevices", ws: ws, devices: f, cursor: cursor, limit: limit})
	return fleet.Page[fleet.Device]{}, nil
}

func (r *fuzzReader) ListSessions(_ context.Context, ws string, f fleet.SessionFilter, cursor string, limit int) (fleet.Page[fleet.Session], error) {
	r.record(fuzzCall{method: "ListSessions", ws: ws, sessions: f, cursor: cursor, limit: limit})
	return fleet.Page[fleet.Session]{}, nil
}

func (r *fuzzReader) ListMembers(_ context.Context, ws string, cursor string, limit int) (fleet.Page[fleet.Member], error) {
	r.record(fuzzCall{method: "ListMembers", ws: ws, cursor: cursor, limit: limit})
	return fleet.Page[fleet.Member]{}, nil
}

func (r *fuzzReader) Usage(_ context.Context, ws string, from, to time.Time) (fleet.Usage, error) {
	r.record(fuzzCall{method: "Usage", ws: ws, from: from, to: to})
	return fleet.Usage{From: from, To: to, SessionSeconds: 61, ActiveDevices: 1, Devices: 2}, nil
}

func (r *fuzzReader) AddMember(_ context.Context, ws string, m fleet.Member) error {
	r.record(fuzzCall{method: "AddMember", ws: ws, member: m})
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.members[m.Email] {
		return fleet.Errorf(fleet.ECONFLICT, "%s is already a member", m.Email)
	}
	r.members[m.Email] = true
	return nil
}

// fuzzServer is a Server over a fuzzReader, answering in process.
type fuzzServer struct {
	h fasthttp.RequestHandler
	r *fuzzReader
}

func newFuzzServer(tb testing.TB) *fuzzServer {
	tb.Helper()
	r := &fuzzReader{members: map[string]bool{}}
	s, err := New(Config{
		Reader: r, Keys: fuzzKeys{}, Log: slog.New(slog.DiscardHandler),
		WebhookSecrets: []string{"fuzz-webhook-secret"},
		Now:            func() time.Time { return fuzzT0 },
	})
	if err != nil {
		tb.Fatal(err)
	}
	return &fuzzServer{h: s.Handler(), r: r}
}

// fuzzReply is one answer of the fuzzed server.
type fuzzReply struct {
	status int
	body   []byte
	calls  []fuzzCall
}

func (fs *fuzzServer) do(method, uri string, body []byte) fuzzReply {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	ctx.Request.Header.Set("x-api-key", fuzzKey)
	ctx.Request.SetBody(body)
	fs.h(&ctx)
	return fuzzReply{status: ctx.Response.StatusCode(), body: append([]byte(nil), ctx.Response.Body()...), calls: fs.r.take()}
}

// wantInvalid checks a 400 invalid_request error body that reached no store.
func (r fuzzReply) wantInvalid(t *testing.T, what string) {
	t.Helper()
	r.wantError(t, 400, "invalid_request", what)
	if len(r.calls) != 0 {
		t.Fatalf("%s: 400, yet the store was called: %+v", what, r.calls)
	}
}

func (r fuzzReply) wantError(t *testing.T, status int, name, what string) {
	t.Helper()
	var e struct {
		Error   string `json:"error"`
		Status  int    `json:"status"`
		Message string `json:"message"`
	}
	if r.status != status || json.Unmarshal(r.body, &e) != nil || e.Error != name || e.Status != status || e.Message == "" {
		t.Fatalf("%s: got %d %s, want %d %s", what, r.status, r.body, status, name)
	}
}

// wantCall checks a 200 whose single store call is method.
func (r fuzzReply) wantCall(t *testing.T, method, what string) fuzzCall {
	t.Helper()
	if r.status != 200 || !json.Valid(r.body) {
		t.Fatalf("%s: got %d %s, want 200", what, r.status, r.body)
	}
	if len(r.calls) != 1 || r.calls[0].method != method || r.calls[0].ws != "acme" {
		t.Fatalf("%s: store calls %+v, want one %s of workspace acme", what, r.calls, method)
	}
	return r.calls[0]
}

// Presence bits of FuzzQueryParams: which parameters the query carries.
const (
	qLimit = 1 << iota
	qOnline
	qCursor
	qDeviceID
	qStatus
	qOS
)

// FuzzQueryParams sends GET /api/v1/devices, /sessions and /members with
// arbitrary limit, online, cursor, device_id, status and os (each present
// or not, as its bit in present says; present but empty too), URL-encoded
// as a client would, and checks what reaches the store against SPEC §4:
//   - limit absent → 50; present → 200 only for a whole number in
//     [1, 500] written in decimal digits, and the store gets that number;
//     anything else is 400 invalid_request and reaches no store;
//   - cursor is opaque here: passed unchanged (the store alone judges it),
//     400 only when longer than 1024 bytes;
//   - online is true or false, else 400 (an empty value too, as for
//     limit); absent means no filter;
//   - device_id is an id (fleet.ValidID) or 400;
//   - status and os are valid UTF-8 of at most 256 characters or 400;
//   - every answer is a 200 with JSON or the JSON error body.
func FuzzQueryParams(f *testing.F) {
	f.Add("50", "true", "ZGV2LTAwMDQ5", "dev:1@x", "success", "Windows", uint8(0xff))
	f.Add("", "", "", "", "", "", uint8(0))
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, limit, online, cursor, deviceID, status, os string, present uint8) {
		q := url.Values{}
		for _, p := range []struct {
			bit         uint8
			name, value string
		}{{qLimit, "limit", limit}, {qOnline, "online", online}, {qCursor, "cursor", cursor}, {qDeviceID, "device_id", deviceID}, {qStatus, "status", status}, {qOS, "os", os}} {
			if present&p.bit != 0 {
				q.Set(p.name, p.value)
			}
		}
		has := func(bit uint8, v string) bool { return present&bit != 0 && v != "" }
		// given is the filter value the store must get: v, or "" for none.
		given := func(bit uint8, v string) string {
			if has(bit, v) {
				return v
			}
			return ""
		}

		// The page parameters, common to every listing.
		wantLimit, limitOK, limitEither := 50, true, false
		if present&qLimit != 0 {
			n, err := strconv.Atoi(limit)
			digits := limit != "" && strings.Trim(limit, "0123456789") == ""
			limitOK = digits && err == nil && n >= 1 && n <= 500
			wantLimit = n
			// More than 9 digits ("0000000050") is refused without being
			// read; a number of the range needs at most 3.
			limitEither = limitOK && len(limit) > 9
		}
		wantCursor := given(qCursor, cursor)
		cursorOK := len(wantCursor) <= 1024
		pageOK := limitOK && cursorOK

		check := func(path string, ok bool, method string, more func(c fuzzCall)) {
			t.Helper()
			uri := path + "?" + q.Encode()
			r := fs.do("GET", uri, nil)
			if limitEither && r.status == 400 {
				r.wantInvalid(t, uri)
				return
			}
			if !ok || !pageOK {
				r.wantInvalid(t, uri)
				return
			}
			c := r.wantCall(t, method, uri)
			if c.limit != wantLimit || c.cursor != wantCursor {
				t.Fatalf("%s: store got limit %d cursor %q, want %d %q", uri, c.limit, c.cursor, wantLimit, wantCursor)
			}
			if more != nil {
				more(c)
			}
		}

		// GET /api/v1/devices: online and os.
		onlineOK := present&qOnline == 0 || online == "true" || online == "false"
		check("/api/v1/devices", onlineOK && textParamOK(present&qOS != 0, os), "ListDevices", func(c fuzzCall) {
			switch {
			case has(qOnline, online):
				if c.devices.Online == nil || *c.devices.Online != (online == "true") {
					t.Fatalf("online=%q: store got filter %v", online, c.devices.Online)
				}
			case c.devices.Online != nil:
				t.Fatalf("no online value, yet the store got online=%v", *c.devices.Online)
			}
			if want := given(qOS, os); c.devices.OS != want {
				t.Fatalf("os=%q: store got %q", os, c.devices.OS)
			}
		})

		// GET /api/v1/sessions: device_id and status.
		devOK := !has(qDeviceID, deviceID) || fleet.ValidID(deviceID)
		check("/api/v1/sessions", devOK && textParamOK(present&qStatus != 0, status), "ListSessions", func(c fuzzCall) {
			if want := given(qDeviceID, deviceID); c.sessions.DeviceID != want {
				t.Fatalf("device_id=%q: store got %q", deviceID, c.sessions.DeviceID)
			}
			if want := given(qStatus, status); c.sessions.Status != want {
				t.Fatalf("status=%q: store got %q", status, c.sessions.Status)
			}
		})

		// GET /api/v1/members: the page parameters alone.
		check("/api/v1/members", true, "ListMembers", nil)
	})
}

// textParamOK says whether a status or os value must be accepted: absent,
// empty, or at most 256 characters (not bytes) of valid UTF-8, as the
// webhook stores them.
func textParamOK(present bool, v string) bool {
	return !present || v == "" || utf8.ValidString(v) && utf8.RuneCountInString(v) <= maxTextParam
}

// FuzzUsagePeriod sends GET /api/v1/usage with arbitrary from and to (each
// present or not, by bit 0 and 1 of present) and checks SPEC §4:
//   - a bound is an RFC 3339 time (time.Parse's reading of it) whose UTC
//     year is 0000-9999; a space where the offset's sign goes is read as
//     '+' (what an unencoded "+02:00" becomes); anything else is 400
//     invalid_request;
//   - a missing or empty bound is the current calendar month's, UTC;
//   - from ≥ to (at the store's millisecond precision) or a period of more
//     than 366 days is 400; otherwise the store gets exactly [from, to),
//     truncated to milliseconds, in UTC;
//   - the reply echoes from and to in RFC 3339, and sending the echoed
//     bounds back gives the same period (the round trip a client paging
//     through months relies on).
func FuzzUsagePeriod(f *testing.F) {
	f.Add("2026-06-01T00:00:00Z", "2026-07-01T00:00:00Z", uint8(3))
	f.Add("", "", uint8(0))
	fs := newFuzzServer(f)
	monthStart := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, from, to string, present uint8) {
		q := url.Values{}
		wantFrom, wantTo := monthStart, monthStart.AddDate(0, 1, 0)
		ok := true
		for _, b := range []struct {
			bit  uint8
			name string
			v    string
			dst  *time.Time
		}{{1, "from", from, &wantFrom}, {2, "to", to, &wantTo}} {
			if present&b.bit == 0 {
				continue
			}
			q.Set(b.name, b.v)
			if b.v == "" {
				continue
			}
			tm, err := parseBoundRef(b.v)
			if err != nil {
				ok = false
				continue
			}
			*b.dst = tm
		}
		ok = ok && wantFrom.Before(wantTo) && wantTo.Sub(wantFrom) <= 366*24*time.Hour
		uri := "/api/v1/usage?" + q.Encode()
		r := fs.do("GET", uri, nil)
		if !ok {
			r.wantInvalid(t, uri)
			return
		}
		c := r.wantCall(t, "Usage", uri)
		if !c.from.Equal(wantFrom) || !c.to.Equal(wantTo) || c.from.Location() != time.UTC || c.to.Location() != time.UTC {
			t.Fatalf("%s: store got [%v, %v), want [%v, %v) in UTC", uri, c.from, c.to, wantFrom, wantTo)
		}
		var u struct {
			From, To       string
			SessionMinutes *int64 `json:"session_minutes"`
			SessionSeconds *int64 `json:"session_seconds"`
			ActiveDevices  *int64 `json:"active_devices"`
			Devices        *int64 `json:"devices"`
		}
		if err := json.Unmarshal(r.body, &u); err != nil || u.SessionMinutes == nil || *u.SessionMinutes != 1 || u.SessionSeconds == nil || u.ActiveDevices == nil || u.Devices == nil {
			t.Fatalf("%s: reply %s (%v)", uri, r.body, err)
		}
		echoFrom, err1 := time.Parse(time.RFC3339, u.From)
		echoTo, err2 := time.Parse(time.RFC3339, u.To)
		if err1 != nil || err2 != nil || !echoFrom.Equal(wantFrom) || !echoTo.Equal(wantTo) {
			t.Fatalf("%s: reply echoes from %q to %q, want %v %v", uri, u.From, u.To, wantFrom, wantTo)
		}
		back := "/api/v1/usage?" + url.Values{"from": {u.From}, "to": {u.To}}.Encode()
		c2 := fs.do("GET", back, nil).wantCall(t, "Usage", back)
		if !c2.from.Equal(wantFrom) || !c2.to.Equal(wantTo) {
			t.Fatalf("%s: the echoed bounds give [%v, %v), want [%v, %v)", back, c2.from, c2.to, wantFrom, wantTo)
		}
	})
}

// parseBoundRef is the documented reading of a usage bound. A bound whose
// UTC year is outside 0000-9999 is refused: the reply could not echo it in
// RFC 3339 (four-digit years).
func parseBoundRef(v string) (time.Time, error) {
	tm, err := time.Parse(time.RFC3339, v)
	if err != nil && len(v) > 19 {
		// "2026-06-01T00:00:00 02:00": the '+' of the offset, unencoded.
		if i := strings.LastIndexByte(v, ' '); i >= 19 {
			tm, err = time.Parse(time.RFC3339, v[:i]+"+"+v[i+1:])
		}
	}
	if y := tm.UTC().Year(); err == nil && (y < 0 || y > 9999) {
		err = errors.New("year outside 0000-9999 in UTC")
	}
	return tm.UTC().Truncate(time.Millisecond), err
}

// plainEmail is an address every invitation must accept: ASCII dot-atoms
// on both sides of one '@'.
var plainEmail = regexp.MustCompile(`^[A-Za-z0-9_%+-]+(\.[A-Za-z0-9_%+-]+)*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*$`)

// FuzzInviteBody posts arbitrary bodies to POST /api/v1/members:invite and
// checks SPEC §4 with encoding/json as the reference reader of the body:
//   - a body that is not a JSON object of strings is 400 invalid_request;
//   - role must be exactly owner, admin or member, else 400;
//   - a plain address (ASCII dot-atoms around one '@', at most 254 bytes)
//     is accepted; an empty one, one longer than 254 bytes once
//     lower-cased, without exactly one '@', with '@' at an end, with
//     spaces, quotes, angle brackets, control characters or invalid UTF-8
//     is 400; what lies between follows net/mail;
//   - an accepted invitation is 201 with the member (status invited,
//     invited_at now at whole seconds), stored under the lower-cased email,
//     which still is at most 254 bytes with one '@' (so the store's member
//     cursors can carry it);
//   - inviting the same address again, in other ASCII case, is 409
//     conflict: emails compare case-insensitively.
func FuzzInviteBody(f *testing.F) {
	f.Add([]byte(`{"email":"Dev@Acme.com","role":"admin"}`))
	f.Add([]byte(`{}`))
	fs := newFuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		fs.r.mu.Lock()
		clear(fs.r.members)
		fs.r.mu.Unlock()
		const uri = "/api/v1/members:invite"
		r := fs.do("POST", uri, body)
		var req struct{ Email, Role string }
		if err := json.Unmarshal(body, &req); err != nil {
			r.wantInvalid(t, string(body))
			return
		}
		roleOK := req.Role == fleet.RoleOwner || req.Role == fleet.RoleAdmin || req.Role == fleet.RoleMember
		mustAccept := len(req.Email) <= maxEmailLen && plainEmail.MatchString(req.Email)
		at := strings.IndexByte(req.Email, '@')
		mustRefuse := req.Email == "" || len(strings.ToLower(req.Email)) > maxEmailLen || strings.Count(req.Email, "@") != 1 ||
			at == 0 || at == len(req.Email)-1 || !utf8.ValidString(req.Email) ||
			strings.ContainsFunc(req.Email, func(r rune) bool { return r < 0x20 || r == 0x7f || strings.ContainsRune(" \"<>", r) })
		if !roleOK || mustRefuse {
			r.wantInvalid(t, string(body))
			return
		}
		if r.status == 400 && !mustAccept {
			r.wantInvalid(t, string(body))
			return
		}
		if r.status != 201 || len(r.calls) != 1 || r.calls[0].method != "AddMember" || r.calls[0].ws != "acme" {
			t.Fatalf("%q: got %d %s, store calls %+v; want 201 and one AddMember", body, r.status, r.body, r.calls)
		}
		m := r.calls[0].member
		if m.Email != strings.ToLower(req.Email) || m.Role != req.Role || m.Status != fleet.MemberInvited || !m.InvitedAt.Equal(fuzzT0.Truncate(time.Second)) {
			t.Fatalf("%q: stored %+v", body, m)
		}
		if len(m.Email) > maxEmailLen || strings.Count(m.Email, "@") != 1 || !utf8.ValidString(m.Email) {
			t.Fatalf("%q: stored email %q (%d bytes) is not one the store's member cursors accept", body, m.Email, len(m.Email))
		}
		var got struct {
			Email     string `json:"email"`
			Role      string `json:"role"`
			Status    string `json:"status"`
			InvitedAt string `json:"invited_at"`
		}
		if err := json.Unmarshal(r.body, &got); err != nil || got.Email != m.Email || got.Role != m.Role ||
			got.Status != "invited" || got.InvitedAt != "2026-06-28T07:30:00Z" {
			t.Fatalf("%q: reply %s (%v), stored %+v", body, r.body, err, m)
		}

		again, _ := json.Marshal(map[string]string{"email": swapASCIICase(req.Email), "role": req.Role})
		fs.do("POST", uri, again).wantError(t, 409, "conflict", string(again))
	})
}

// swapASCIICase swaps the case of ASCII letters only: Unicode case mapping
// is not a round trip (ı → I → i).
func swapASCIICase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		case c >= 'A' && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}
