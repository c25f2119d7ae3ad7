package api

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// Regression tests for the bugs the fuzz targets of fuzz_test.go found,
// each with the smallest input that showed it.

// TestFuzzFoundOnlineEmptyDependsOnPosition: ?online= (present, empty)
// was a 400 or no filter at all depending on how many parameters came
// before it: listDevices tested args.Peek("online") != nil, and fasthttp
// returns nil or an empty slice for an empty value depending on its
// argument slice's growth (the 4th argument gets nil). The same value must
// get the same answer wherever it stands.
func TestFuzzFoundOnlineEmptyDependsOnPosition(t *testing.T) {
	fs := newFuzzServer(t)
	alone := fs.do("GET", "/api/v1/devices?online=", nil)
	fourth := fs.do("GET", "/api/v1/devices?limit=10&os=Linux&cursor=abc&online=", nil)
	if alone.status != fourth.status {
		t.Fatalf("?online= answers %d alone but %d as the 4th parameter (%s)", alone.status, fourth.status, fourth.body)
	}
}

// TestFuzzFoundTextParamCountsBytes: status and os filters were refused
// above 256 bytes, while the webhook stores name, os and status of up to
// 256 characters (ingest.maxTextLen counts runes): a session status of
// 200 'é' (400 bytes) was accepted by the webhook and could then never be
// filtered on.
func TestFuzzFoundTextParamCountsBytes(t *testing.T) {
	fs := newFuzzServer(t)
	v := strings.Repeat("é", 200)
	if n := utf8.RuneCountInString(v); n > maxTextParam {
		t.Fatalf("test value has %d characters", n)
	}
	for _, uri := range []string{"/api/v1/sessions?status=" + url.QueryEscape(v), "/api/v1/devices?os=" + url.QueryEscape(v)} {
		if r := fs.do("GET", uri, nil); r.status != 200 {
			t.Errorf("a filter of 200 characters (400 bytes) answers %d %s, want 200", r.status, r.body)
		}
	}
}

// TestFuzzFoundInviteEmailLongerAfterLowering: normalizeEmail checked the
// 254-byte limit before lower-casing, and some upper-case letters have
// longer lower-case forms (U+023A Ⱥ, 2 bytes → U+2C65 ⱥ, 3 bytes). A
// 245-byte address was accepted and stored as 365 bytes: above maxEmailLen,
// and above what the store's member cursors accept (redisstore validEmail:
// at most 254 bytes), so once such a member ended a page, the next_cursor
// of GET /api/v1/members was refused as malformed (400) and the listing
// could not go on.
func TestFuzzFoundInviteEmailLongerAfterLowering(t *testing.T) {
	fs := newFuzzServer(t)
	email := strings.Repeat("Ⱥ", 120) + "@x.co"
	body, _ := json.Marshal(map[string]string{"email": email, "role": "member"})
	r := fs.do("POST", "/api/v1/members:invite", body)
	if r.status != 201 {
		return // refused: fine
	}
	if got := r.calls[0].member.Email; len(got) > maxEmailLen {
		t.Fatalf("a %d-byte address was stored as %d bytes, above the %d-byte limit", len(email), len(got), maxEmailLen)
	}
}

// TestFuzzFoundUsageEchoOutsideRFC3339Years: a usage period whose bounds,
// in UTC, fell before year 0000 or after 9999 was accepted, and the reply
// echoed them as "-0001-12-31T23:00:00Z" or "10000-01-01T00:30:00Z", which
// are not RFC 3339 (SPEC §4: from, to in RFC 3339) and which ?from=/?to=
// then refused.
func TestFuzzFoundUsageEchoOutsideRFC3339Years(t *testing.T) {
	fs := newFuzzServer(t)
	for _, q := range []url.Values{
		{"from": {"0000-01-01T00:00:00+01:00"}, "to": {"0000-01-02T00:00:00Z"}},
		{"from": {"9999-12-31T00:00:00Z"}, "to": {"9999-12-31T23:30:00-01:00"}},
	} {
		r := fs.do("GET", "/api/v1/usage?"+q.Encode(), nil)
		if r.status == 400 {
			continue // refused: fine
		}
		var u struct{ From, To string }
		json.Unmarshal(r.body, &u)
		back := fs.do("GET", "/api/v1/usage?"+url.Values{"from": {u.From}, "to": {u.To}}.Encode(), nil)
		if back.status != 200 {
			t.Errorf("%s: the reply echoes from %q to %q, and sending them back answers %d %s", q.Encode(), u.From, u.To, back.status, back.body)
		}
	}
}
