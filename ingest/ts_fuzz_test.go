package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

// tsFuzzNow is the decoder's "now" in FuzzDecodeTS.
var tsFuzzNow = time.Date(2026, 6, 28, 7, 30, 0, 0, time.UTC)

// jsonInteger is a JSON number without fraction or exponent.
var jsonInteger = regexp.MustCompile(`^-?(0|[1-9][0-9]*)$`)

// FuzzDecodeTS puts arbitrary bytes where an event's ts goes and checks
// the decoder against the contract of SPEC §3, with encoding/json and an
// RFC 3339 grammar of its own as the reference:
//   - a JSON string in strict RFC 3339 (upper-case T and Z, seconds 00-59)
//     is accepted, and ts is that instant in Unix milliseconds;
//   - a JSON string that time.Parse refuses is rejected; the few forms
//     time.Parse allows beyond RFC 3339 (a one-digit hour, a comma before
//     the fraction, a +24:00 offset) may go either way;
//   - a JSON number is accepted iff it is a non-negative integer that fits
//     in int64 (no fraction, no exponent), and ts is that number: a numeric
//     string is not a number;
//   - null is the same as no ts: now;
//   - anything else (true, an object, an array) is rejected;
//   - a ts more than 1 h after now is rejected whatever its form;
//   - every rejection is a *fleet.Error with code EINVALID, and names the
//     event when the value is well-formed JSON;
//   - whatever raw is, a body that is not valid JSON is never accepted.
//
// The same value is also tried as the second event of a batch, whose
// rejection must name event 1.
func FuzzDecodeTS(f *testing.F) {
	for _, s := range []string{`"2026-06-28T07:32:35Z"`, `1782631955000`, `null`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ref := tsReference(raw)
		for i, tmpl := range []struct{ pre, post string }{
			{`{"type":"device.online.changed","qdDeviceId":"d1","online":true,"ts":`, `}`},
			{`[{"type":"device.deleted","qdDeviceId":"d0"},{"type":"session.started","qdDeviceId":"d1","sessionId":"s1","ts":`, `}]`},
		} {
			body := []byte(tmpl.pre + string(raw) + tmpl.post)
			orig := string(body)
			valid := json.Valid(body)
			evs, err := Decode(body, nil, tsFuzzNow, 1000)
			if err != nil {
				var fe *fleet.Error
				if !errors.As(err, &fe) || fe.Code != fleet.EINVALID {
					t.Fatalf("%q: error %v is not a fleet EINVALID error", orig, err)
				}
				if ref.outcome == tsAccept {
					t.Fatalf("%q rejected (%v), want ts %d", orig, err, ref.ts)
				}
				if ref.outcome != tsUnknown && !strings.HasPrefix(fe.Message, "event "+strconv.Itoa(i)+": ") {
					t.Fatalf("%q: message %q does not name event %d", orig, fe.Message, i)
				}
				continue
			}
			if !valid {
				t.Fatalf("%q is not valid JSON but was accepted: %+v", orig, evs)
			}
			if ref.outcome == tsUnknown {
				continue // raw is not one JSON value: it may add fields of its own
			}
			if len(evs) != i+1 {
				t.Fatalf("%q decoded to %d events", orig, len(evs))
			}
			e := evs[i]
			if e.TS > tsFuzzNow.UnixMilli()+int64(time.Hour/time.Millisecond) {
				t.Fatalf("%q accepted a ts %d more than 1 h in the future", orig, e.TS)
			}
			switch ref.outcome {
			case tsReject:
				t.Fatalf("%q accepted with ts %d, want a rejection", orig, e.TS)
			case tsAccept:
				if e.TS != ref.ts {
					t.Fatalf("%q: ts = %d, want %d", orig, e.TS, ref.ts)
				}
			}
		}
	})
}

// Outcomes of tsReference.
const (
	tsUnknown = iota // raw is not a single JSON value
	tsAccept         // must be accepted with ts
	tsReject         // must be rejected
	tsEither         // time.Parse is more lenient than RFC 3339 here
)

type tsRef struct {
	outcome int
	ts      int64
}

// rfc3339 is the grammar of RFC 3339 §5.6 with upper-case T and Z.
var rfc3339 = regexp.MustCompile(`^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?(Z|([+-])([0-9]{2}):([0-9]{2}))$`)

// tsReference says what the decoder must do with raw as the value of ts.
func tsReference(raw []byte) tsRef {
	trimmed := bytes.Trim(raw, " \t\r\n")
	if !json.Valid(trimmed) {
		return tsRef{outcome: tsUnknown}
	}
	nowMs := tsFuzzNow.UnixMilli()
	limit := nowMs + int64(time.Hour/time.Millisecond)
	check := func(ts int64) tsRef {
		if ts > limit {
			return tsRef{outcome: tsReject}
		}
		return tsRef{outcome: tsAccept, ts: ts}
	}
	switch trimmed[0] {
	case 'n':
		return tsRef{outcome: tsAccept, ts: nowMs}
	case '"':
		var s string
		if json.Unmarshal(trimmed, &s) != nil {
			return tsRef{outcome: tsReject}
		}
		if ts, ok := parseRFC3339(s); ok {
			return check(ts)
		}
		if tm, err := time.Parse(time.RFC3339Nano, s); err != nil || tm.UnixMilli() > limit {
			return tsRef{outcome: tsReject}
		}
		return tsRef{outcome: tsEither}
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if !jsonInteger.Match(trimmed) {
			return tsRef{outcome: tsReject}
		}
		v, err := strconv.ParseInt(string(trimmed), 10, 64)
		if err != nil || v < 0 {
			return tsRef{outcome: tsReject}
		}
		return check(v)
	}
	return tsRef{outcome: tsReject}
}

// parseRFC3339 reads s by the RFC 3339 grammar and field ranges (without
// leap seconds, which Go's time cannot represent) and returns the instant
// in Unix milliseconds.
func parseRFC3339(s string) (int64, bool) {
	m := rfc3339.FindStringSubmatch(s)
	if m == nil {
		return 0, false
	}
	n := func(i int) int { v, _ := strconv.Atoi(m[i]); return v }
	year, month, day, hour, minute, sec := n(1), n(2), n(3), n(4), n(5), n(6)
	if month < 1 || month > 12 || day < 1 || hour > 23 || minute > 59 || sec > 59 {
		return 0, false
	}
	if day > time.Date(year, time.Month(month)+1, 0, 0, 0, 0, 0, time.UTC).Day() {
		return 0, false
	}
	ns := 0
	if frac := strings.TrimPrefix(m[7], "."); frac != "" {
		frac = (frac + "000000000")[:9]
		ns, _ = strconv.Atoi(frac)
	}
	offset := 0
	if m[8] != "Z" {
		oh, om := n(10), n(11)
		if oh > 23 || om > 59 {
			return 0, false
		}
		offset = (oh*60 + om) * 60
		if m[9] == "-" {
			offset = -offset
		}
	}
	utc := time.Date(year, time.Month(month), day, hour, minute, sec, ns, time.UTC)
	return utc.Add(-time.Duration(offset) * time.Second).UnixMilli(), true
}
