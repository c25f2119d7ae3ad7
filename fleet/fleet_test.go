package fleet

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestValidID(t *testing.T) {
	tests := map[string]struct {
		id   string
		want bool
	}{
		"device id":          {"295758162", true},
		"every allowed kind": {"aZ09._:@-", true},
		"one character":      {"x", true},
		"128 characters":     {strings.Repeat("a", 128), true},
		"empty":              {"", false},
		"129 characters":     {strings.Repeat("a", 129), false},
		"space":              {"a b", false},
		"slash":              {"a/b", false},
		"brace (hash tag)":   {"a{b}", false},
		"star (pattern)":     {"a*", false},
		"newline":            {"a\n", false},
		"non-ASCII letter":   {"gerät", false},
		"NUL":                {"a\x00", false},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ValidID(tc.id); got != tc.want {
				t.Fatalf("ValidID(%q) = %v, want %v", tc.id, got, tc.want)
			}
		})
	}
}

// TestValidIDBytes: every byte outside [A-Za-z0-9._:@-] is refused, every
// byte inside accepted.
func TestValidIDBytes(t *testing.T) {
	for c := range 256 {
		b := byte(c)
		want := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("._:@-", b) >= 0
		if got := ValidID(string([]byte{b})); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", b, got, want)
		}
	}
}

func TestParseEventType(t *testing.T) {
	tests := map[string]EventType{
		"device.registered":     EventDeviceRegistered,
		"device.online.changed": EventOnlineChanged,
		"device.deleted":        EventDeviceDeleted,
		"session.started":       EventSessionStarted,
		"session.ended":         EventSessionEnded,
		// QuickDesk's own event is not a type of the main webhook.
		"device.secret.rotated": EventUnknown,
		"unknown":               EventUnknown,
		"":                      EventUnknown,
		"Device.Registered":     EventUnknown,
		"session.ended ":        EventUnknown,
	}
	checkTable(t, "ParseEventType", func(in string) EventType { return ParseEventType([]byte(in)) }, tests)
}

// TestEventTypeNames: String and ParseEventType agree on every type of
// the main webhook, and every type has a name.
func TestEventTypeNames(t *testing.T) {
	for ty := EventDeviceRegistered; ty <= EventSessionEnded; ty++ {
		if got := ParseEventType([]byte(ty.String())); got != ty {
			t.Errorf("ParseEventType(%q) = %v, want %v", ty.String(), got, ty)
		}
	}
	seen := map[string]bool{}
	for ty := range EventType(NumEventTypes) {
		name := ty.String()
		if name == "" || seen[name] {
			t.Errorf("type %d has the name %q, empty or shared", ty, name)
		}
		seen[name] = true
	}
	if got := EventType(NumEventTypes).String(); got != "unknown" {
		t.Errorf("a type out of range is %q, want unknown", got)
	}
	if EventSecretRotated.String() != "device.secret.rotated" {
		t.Errorf("EventSecretRotated is %q", EventSecretRotated.String())
	}
}

func TestResultNames(t *testing.T) {
	want := []string{"accepted", "duplicate", "stale", "ignored", "invalid"}
	if int(NumResults) != len(want) {
		t.Fatalf("NumResults = %d, want %d", NumResults, len(want))
	}
	for r := range NumResults {
		if r.String() != want[r] {
			t.Errorf("Result %d is %q, want %q", r, r.String(), want[r])
		}
	}
}

func TestStatusLabel(t *testing.T) {
	tests := map[string]string{
		"success":   "success",
		"failed":    "failed",
		"timeout":   "timeout",
		"cancelled": "cancelled",
		"error":     "error",
		// Anything else is folded, so senders cannot grow the counts.
		"other":        StatusOther,
		"":             StatusOther,
		"Success":      StatusOther,
		"live":         StatusOther,
		"abandoned":    StatusOther,
		"made-up-text": StatusOther,
	}
	checkTable(t, "StatusLabel", StatusLabel, tests)
	// Every label folds to itself: the label set is closed.
	for _, l := range StatusLabels {
		if got := StatusLabel(l); got != l {
			t.Errorf("StatusLabel(%q) = %q", l, got)
		}
	}
}

func TestSessionMinutes(t *testing.T) {
	for secs, want := range map[int64]int64{0: 0, 59: 0, 60: 1, 119: 1, 74400: 1240} {
		if got := (Usage{SessionSeconds: secs}).SessionMinutes(); got != want {
			t.Errorf("SessionMinutes of %d s = %d, want %d", secs, got, want)
		}
	}
}

func TestErrors(t *testing.T) {
	notFound := Errorf(ENOTFOUND, "device %q not found", "d1")
	tests := map[string]struct {
		err           error
		code, message string
	}{
		"nil":          {nil, "", ""},
		"fleet error":  {notFound, ENOTFOUND, `device "d1" not found`},
		"wrapped":      {fmt.Errorf("redisstore: read: %w", notFound), ENOTFOUND, `device "d1" not found`},
		"joined":       {errors.Join(errors.New("dial tcp"), Errorf(EUNAVAILABLE, "down")), EUNAVAILABLE, "down"},
		"plain error":  {errors.New("WRONGTYPE Operation against a key"), EINTERNAL, "internal error"},
		"wrapped once": {fmt.Errorf("x: %w", errors.New("secret detail")), EINTERNAL, "internal error"},
		"message quoting another": {
			Errorf(ECONFLICT, "outer: %v", Errorf(ENOTFOUND, "inner")), ECONFLICT, "outer: fleet: not_found: inner",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ErrorCode(tc.err); got != tc.code {
				t.Errorf("ErrorCode = %q, want %q", got, tc.code)
			}
			if got := ErrorMessage(tc.err); got != tc.message {
				t.Errorf("ErrorMessage = %q, want %q", got, tc.message)
			}
		})
	}
	if got := notFound.Error(); got != `fleet: not_found: device "d1" not found` {
		t.Errorf("Error() = %q", got)
	}
	var e *Error
	if !errors.As(fmt.Errorf("wrap: %w", notFound), &e) || e != notFound {
		t.Error("errors.As does not find the *Error through a wrap")
	}
}

// checkTable runs f, named name, over a table of inputs and the outputs
// wanted, a subtest each.
func checkTable[T comparable](t *testing.T, name string, f func(string) T, tests map[string]T) {
	t.Helper()
	for in, want := range tests {
		t.Run(fmt.Sprintf("%q", in), func(t *testing.T) {
			if got := f(in); got != want {
				t.Fatalf("%s(%q) = %v, want %v", name, in, got, want)
			}
		})
	}
}
