package redisstore

import (
	"encoding/base64"
	"strings"

	"github.com/fleetd/fleetd/fleet"
)

// Cursors of the listings.

// Cursors are the base64url of the last item's sort key. They stay valid
// while items are added or removed: a page starts strictly after the key.
func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, "\x00")))
}

func decodeCursor(c string, n int) ([]string, error) {
	if c == "" {
		return make([]string, n), nil
	}
	b, err := base64.RawURLEncoding.DecodeString(c)
	parts := strings.Split(string(b), "\x00")
	if err != nil || len(parts) != n {
		return nil, fleet.Errorf(fleet.EINVALID, "cursor is malformed: pass next_cursor of the previous page unchanged")
	}
	for _, p := range parts {
		if !fleet.ValidID(p) && !validEmail(p) {
			return nil, fleet.Errorf(fleet.EINVALID, "cursor is malformed: pass next_cursor of the previous page unchanged")
		}
	}
	return parts, nil
}

// validEmail is a loose check used only to accept member cursors.
func validEmail(s string) bool { return len(s) <= 254 && strings.Count(s, "@") == 1 }

func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] >= 'A' && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
