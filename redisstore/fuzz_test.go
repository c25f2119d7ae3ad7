package redisstore

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/fleetd/fleetd/fleet"
)

// FuzzCursor feeds arbitrary strings to decodeCursor, as a client may send
// any ?cursor=, and checks the contract of the store's cursors:
//   - anything malformed is a *fleet.Error with code EINVALID, never a panic
//     and never another code;
//   - an accepted cursor yields exactly n parts, each an id or an email
//     (the only things the listings put in a cursor), and encoding those
//     parts again gives a cursor that decodes to the same parts;
//   - the empty cursor is the first page: n empty parts;
//   - the other way round, a cursor made by encodeCursor from parts that
//     are ids or member emails decodes to those parts, so every next_cursor
//     a listing hands out is accepted back.
//
// The fuzzer varies both the raw cursor c and the parts a, b of the round
// trip; n of 1 (devices, members) and 2 (sessions: at, id) are the arities
// the listings use.
func FuzzCursor(f *testing.F) {
	// The hostile seeds are in testdata/fuzz/FuzzCursor.
	f.Add("", "dev-00049", "1782631955000")
	f.Add(encodeCursor("1782631955000", "s-1"), "owner@acme.com", "s-1")
	f.Fuzz(func(t *testing.T, c, a, b string) {
		for _, n := range []int{1, 2} {
			parts, err := decodeCursor(c, n)
			if err != nil {
				var fe *fleet.Error
				if !errors.As(err, &fe) || fe.Code != fleet.EINVALID {
					t.Fatalf("decodeCursor(%q, %d): error %v is not a fleet EINVALID error", c, n, err)
				}
				if parts != nil {
					t.Fatalf("decodeCursor(%q, %d): parts %q along with an error", c, n, parts)
				}
				continue
			}
			if len(parts) != n {
				t.Fatalf("decodeCursor(%q, %d) = %d parts %q", c, n, len(parts), parts)
			}
			if c == "" {
				for _, p := range parts {
					if p != "" {
						t.Fatalf("the empty cursor decodes to %q, want %d empty parts", parts, n)
					}
				}
				continue
			}
			for _, p := range parts {
				if !cursorPart(p) {
					t.Fatalf("decodeCursor(%q, %d) accepted part %q: neither an id nor an email", c, n, p)
				}
			}
			again, err := decodeCursor(encodeCursor(parts...), n)
			if err != nil || !slices.Equal(again, parts) {
				t.Fatalf("re-encoding the parts %q of %q decodes to %q, %v", parts, c, again, err)
			}
		}

		// The round trip of the cursors the listings hand out.
		for _, parts := range [][]string{{a}, {a, b}} {
			ok := true
			for _, p := range parts {
				ok = ok && cursorPart(p) && !strings.Contains(p, "\x00")
			}
			if !ok {
				continue
			}
			enc := encodeCursor(parts...)
			if strings.ContainsAny(enc, "=+/\n") {
				t.Fatalf("encodeCursor(%q) = %q is not raw URL-safe base64", parts, enc)
			}
			got, err := decodeCursor(enc, len(parts))
			if err != nil || !slices.Equal(got, parts) {
				t.Fatalf("decodeCursor(encodeCursor(%q)) = %q, %v", parts, got, err)
			}
		}
	})
}

// cursorPart reports whether p may stand in a cursor: a device or session
// id, a session score (digits, an id too) or a member email.
func cursorPart(p string) bool {
	return fleet.ValidID(p) || len(p) <= 254 && strings.Count(p, "@") == 1
}
