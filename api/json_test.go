package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/fleetd/fleetd/fleet"
	"github.com/valyala/fasthttp"
)

func TestAppendString(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"plain":        {"qz-win-105", `"qz-win-105"`},
		"empty":        {"", `""`},
		"quote":        {`a"b`, `"a\"b"`},
		"backslash":    {`a\b`, `"a\\b"`},
		"newline":      {"a\nb\r\t", `"a\nb\r\t"`},
		"control":      {"\x00\x1f", `"\u0000\u001f"`},
		"utf8":         {"Gerät ü 日本", `"Gerät ü 日本"`},
		"invalid utf8": {"a\xffb", `"a\ufffdb"`},
		"truncated":    {"\xe6\x97", `"\ufffd\ufffd"`},
		"separators":   {"a\u2028b\u2029", `"a\u2028b\u2029"`},
		"html stays":   {"<a&b>", `"<a&b>"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := string(appendString(nil, tc.in)); got != tc.want {
				t.Fatalf("got %s, want %s", got, tc.want)
			}
		})
	}
}

// FuzzAppendString: whatever the store holds, the reply is valid JSON
// that decodes to the same text as encoding/json would produce.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a", `"\`, "\x00\x7f\x80", "日本\u2028", "a\xffb", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		if !json.Valid(b) {
			t.Fatalf("invalid JSON %q for %q", b, s)
		}
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		want := strings.ToValidUTF8(s, "\ufffd")
		if utf8.ValidString(s) && got != s {
			t.Fatalf("round trip %q -> %q", s, got)
		}
		ref, _ := json.Marshal(s)
		var refGot string
		json.Unmarshal(ref, &refGot)
		if got != refGot {
			t.Fatalf("%q decodes to %q, encoding/json gives %q (%q)", s, got, refGot, want)
		}
	})
}

// fakeReader serves fixed pages, for measuring the handlers alone.
type fakeReader struct {
	fleet.Reader
	devices fleet.Page[fleet.Device]
	usage   fleet.Usage
}

func (f *fakeReader) ListDevices(context.Context, string, fleet.DeviceFilter, string, int) (fleet.Page[fleet.Device], error) {
	return f.devices, nil
}

func (f *fakeReader) Usage(_ context.Context, _ string, from, to time.Time) (fleet.Usage, error) {
	u := f.usage
	u.From, u.To = from, to
	return u, nil
}

func fakeServer(tb testing.TB) (*Server, string) {
	tb.Helper()
	r := &fakeReader{usage: fleet.Usage{SessionSeconds: 74400, ActiveDevices: 8, Devices: 23}}
	for i := range 50 {
		r.devices.Items = append(r.devices.Items, fleet.Device{ID: fmt.Sprintf("dev-%05d", i), Name: "qz-win-105", OS: "Windows", Online: i%2 == 0, LastSeen: t0})
	}
	r.devices.Next = "ZGV2LTAwMDQ5"
	keys := &fakeKeys{get: func([]byte) (fleet.APIKey, error) { return fleet.APIKey{ID: "k", Workspace: "acme"}, nil }}
	return MustNew(tb, Config{Reader: r, Keys: keys, Now: func() time.Time { return t0 }}), "sk_live_" + strings.Repeat("A", 40)
}

// TestAllocs is an allocation budget for the hot read paths (without the
// store and without Prometheus, whose label lookups are the metrics
// package's business): it fails when a change adds per-request garbage.
func TestAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	s, key := fakeServer(t)
	h := s.Handler()
	tests := map[string]struct {
		uri    string
		budget float64
	}{
		// The timeout context of the store call is the only garbage.
		"devices page": {"/api/v1/devices?limit=50", 4},
		"usage":        {"/api/v1/usage", 4},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			ctx.Request.SetRequestURI(tc.uri)
			ctx.Request.Header.Set("x-api-key", key)
			h(&ctx)
			if ctx.Response.StatusCode() != 200 || !json.Valid(ctx.Response.Body()) {
				t.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
			n := testing.AllocsPerRun(200, func() { h(&ctx) })
			t.Logf("%s: %.1f allocs per request", name, n)
			if n > tc.budget {
				t.Fatalf("%.1f allocs per request, budget %.0f", n, tc.budget)
			}
		})
	}
}
