// Package ingest decodes and validates webhook bodies and feeds the events,
// through a bounded queue, to a group-commit batcher that applies them to the
// store in as few round trips as it can.
package ingest

import (
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/fleetd/fleetd/fleet"
)

// Limits of the decoder.
const (
	maxTextLen   = 256 // characters of name, os, status
	maxDepth     = 32  // nesting of values the decoder skips
	futureSkewMs = int64(time.Hour / time.Millisecond)
	// MaxDurationSec bounds durationSec: 366 days (SPEC §3).
	MaxDurationSec = 31622400
	maxFieldCount  = 64 // fields per event object
)

// Decode parses a webhook body (one event object or an array of them) into
// dst and validates every event. body is modified in place (strings are
// unescaped into it) and the returned events' strings point into it, so the
// caller must own body and keep it unchanged while the events are in use.
//
// Any error is a *fleet.Error with code EINVALID whose message names the
// offending event's index; nothing of a rejected body is to be applied.
func Decode(body []byte, dst []fleet.Event, now time.Time, maxBatch int) ([]fleet.Event, error) {
	d := decoder{buf: body, nowMs: now.UnixMilli(), index: -1}
	dst = dst[:0]
	d.ws()
	if d.pos >= len(d.buf) {
		return dst, d.fail("body is empty: send one event object or a JSON array of events")
	}
	switch d.buf[d.pos] {
	case '{':
		d.index = 0
		var e fleet.Event
		if err := d.event(&e); err != nil {
			return dst, err
		}
		dst = append(dst, e)
	case '[':
		d.pos++
		d.ws()
		if d.peek() == ']' {
			d.pos++
			break
		}
		for {
			d.index = len(dst)
			if d.index >= maxBatch {
				return dst, fleet.Errorf(fleet.EINVALID, "batch has more than %d events: split it into smaller requests", maxBatch)
			}
			d.ws()
			if d.peek() != '{' {
				return dst, d.fail("expected an event object")
			}
			dst = append(dst, fleet.Event{})
			if err := d.event(&dst[len(dst)-1]); err != nil {
				return dst, err
			}
			d.ws()
			c := d.peek()
			d.pos++
			if c == ']' {
				break
			}
			if c != ',' {
				d.index = -1
				return dst, d.fail("expected ',' or ']' in the event array")
			}
		}
	default:
		return dst, d.fail("body must be a JSON object or an array of objects")
	}
	d.index = -1
	d.ws()
	if d.pos != len(d.buf) {
		return dst, d.fail("unexpected data after the JSON value")
	}
	return dst, nil
}

type decoder struct {
	buf   []byte
	pos   int
	nowMs int64
	index int // event index for messages; -1 outside any event
}

func (d *decoder) fail(msg string) error {
	if d.index >= 0 {
		return fleet.Errorf(fleet.EINVALID, "event %d: %s", d.index, msg)
	}
	return fleet.Errorf(fleet.EINVALID, "%s (at byte %d)", msg, d.pos)
}

func (d *decoder) peek() byte {
	if d.pos < len(d.buf) {
		return d.buf[d.pos]
	}
	return 0
}

func (d *decoder) ws() {
	for d.pos < len(d.buf) {
		switch d.buf[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

// Field presence bits.
const (
	fType = 1 << iota
	fID
	fTS
	fDevice
	fWorkspace
	fName
	fOS
	fUser
	fSession
	fStatus
	fOnline
	fDuration
)

var fieldNames = map[string]int{
	"type": fType, "id": fID, "ts": fTS, "qdDeviceId": fDevice, "workspaceId": fWorkspace,
	"name": fName, "os": fOS, "userId": fUser, "sessionId": fSession, "status": fStatus,
	"online": fOnline, "durationSec": fDuration,
}

// required fields per event type.
var required = [fleet.NumEventTypes]int{
	fleet.EventDeviceRegistered: fDevice | fWorkspace | fName | fOS,
	fleet.EventOnlineChanged:    fDevice | fOnline,
	fleet.EventDeviceDeleted:    fDevice,
	fleet.EventSessionStarted:   fDevice | fSession,
	fleet.EventSessionEnded:     fDevice | fSession | fStatus,
}

var requiredOrder = []struct {
	bit  int
	name string
}{{fDevice, "qdDeviceId"}, {fWorkspace, "workspaceId"}, {fName, "name"}, {fOS, "os"}, {fSession, "sessionId"}, {fStatus, "status"}, {fOnline, "online"}}

// event decodes one object into e and validates it.
func (d *decoder) event(e *fleet.Event) error {
	d.pos++ // '{'
	e.DurationSec = -1
	e.TS = d.nowMs
	seen := 0
	var typeName []byte
	var typeSeen bool
	var fieldErr error
	d.ws()
	if d.peek() == '}' {
		d.pos++
		return d.fail("type is required")
	}
	for n := 0; ; n++ {
		if n == maxFieldCount {
			return d.fail("too many fields")
		}
		key, err := d.fieldName()
		if err != nil {
			return err
		}
		bit := fieldNames[key]
		if bit != 0 && d.peek() == 'n' { // null: the same as absent
			if err := d.literal("null"); err != nil {
				return err
			}
			seen &^= bit
			if bit == fType {
				typeSeen = false
			}
		} else if bit == 0 {
			if err := d.skip(0); err != nil {
				return err
			}
		} else {
			// A wrong field is reported only once the type is known: an
			// event of an unknown type is ignored whatever its fields.
			if ferr := d.field(e, bit, &typeName); ferr != nil {
				if _, isSyntax := ferr.(syntaxError); isSyntax {
					return ferr.(syntaxError).err
				}
				if fieldErr == nil {
					fieldErr = ferr
				}
			}
			if bit == fType {
				typeSeen = true
			}
			seen |= bit
		}
		d.ws()
		c := d.peek()
		d.pos++
		if c == '}' {
			break
		}
		if c != ',' {
			return d.fail("expected ',' or '}' in an event object")
		}
	}
	if !typeSeen {
		return d.fail("type is required")
	}
	if typeName == nil {
		return fieldErr // type was not a string
	}
	e.Type = fleet.ParseEventType(typeName)
	if e.Type == fleet.EventUnknown {
		*e = fleet.Event{Type: fleet.EventUnknown}
		return nil
	}
	if fieldErr != nil {
		return fieldErr
	}
	for _, f := range requiredOrder {
		if required[e.Type]&f.bit != 0 && seen&f.bit == 0 {
			return d.fail(f.name + " is required for " + e.Type.String())
		}
	}
	if e.TS > d.nowMs+futureSkewMs {
		return d.fail("ts is more than 1 hour in the future")
	}
	return nil
}

// fieldName reads an object's `"name":` with the white space around it and
// returns the name, which aliases the body (valid while the body is).
func (d *decoder) fieldName() (string, error) {
	d.ws()
	if d.peek() != '"' {
		return "", d.fail("expected a field name")
	}
	key, err := d.str()
	if err != nil {
		return "", err
	}
	d.ws()
	if d.peek() != ':' {
		return "", d.fail("expected ':' after a field name")
	}
	d.pos++
	d.ws()
	return unsafe.String(unsafe.SliceData(key), len(key)), nil
}

// syntaxError is malformed JSON: the body cannot be read on, whatever
// the event's type.
type syntaxError struct{ err error }

func (e syntaxError) Error() string { return e.err.Error() }

// field decodes the value of a known field into e. A value of the wrong
// kind is skipped and returned as a plain error; malformed JSON is returned
// as a syntaxError.
func (d *decoder) field(e *fleet.Event, bit int, typeName *[]byte) error {
	wrong := func(msg string) error {
		if err := d.skip(0); err != nil {
			return syntaxError{err}
		}
		return d.fail(msg)
	}
	syn := func(err error) error {
		if err != nil {
			return syntaxError{err}
		}
		return nil
	}
	switch bit {
	case fType:
		if d.peek() != '"' {
			return wrong("type must be a string")
		}
		b, err := d.str()
		*typeName = b
		return syn(err)
	case fOnline:
		switch d.peek() {
		case 't':
			e.Online = true
			return syn(d.literal("true"))
		case 'f':
			e.Online = false
			return syn(d.literal("false"))
		}
		return wrong("online must be true or false")
	case fDuration:
		if c := d.peek(); c != '-' && (c < '0' || c > '9') {
			return wrong("durationSec must be a non-negative integer of seconds")
		}
		v, ok, err := d.integer()
		if err != nil {
			return syntaxError{err}
		}
		if !ok || v < 0 || v > MaxDurationSec {
			return d.fail("durationSec must be a non-negative integer of seconds, at most 31622400 (366 days)")
		}
		e.DurationSec = v
		return nil
	case fTS:
		if c := d.peek(); c != '"' && c != '-' && (c < '0' || c > '9') {
			return wrong("ts must be an RFC 3339 time string or an integer of Unix milliseconds")
		}
		return d.ts(e)
	}
	if d.peek() != '"' {
		return wrong(fieldName(bit) + " must be a string")
	}
	b, err := d.str()
	if err != nil {
		return syntaxError{err}
	}
	s := unsafe.String(unsafe.SliceData(b), len(b))
	switch bit {
	case fID, fDevice, fWorkspace, fUser, fSession:
		if !fleet.ValidID(s) {
			return d.fail(fieldName(bit) + " must be 1-128 characters of [A-Za-z0-9._:@-]")
		}
	default:
		if utf8.RuneCountInString(s) > maxTextLen {
			return d.fail(fieldName(bit) + " must be at most 256 characters")
		}
	}
	switch bit {
	case fID:
		e.ID = s
	case fDevice:
		e.DeviceID = s
	case fWorkspace:
		e.WorkspaceID = s
	case fUser:
		e.UserID = s
	case fSession:
		e.SessionID = s
	case fName:
		e.Name = s
	case fOS:
		e.OS = s
	case fStatus:
		e.Status = s
	}
	return nil
}

func fieldName(bit int) string {
	for k, v := range fieldNames {
		if v == bit {
			return k
		}
	}
	return "field"
}

func (d *decoder) literal(lit string) error {
	if len(d.buf)-d.pos < len(lit) || string(d.buf[d.pos:d.pos+len(lit)]) != lit {
		return d.fail("invalid JSON literal")
	}
	d.pos += len(lit)
	return nil
}

// ts decodes an RFC 3339 string or an integer of Unix milliseconds.
func (d *decoder) ts(e *fleet.Event) error {
	if d.peek() == '"' {
		b, err := d.str()
		if err != nil {
			return err
		}
		t, err := time.Parse(time.RFC3339Nano, string(b))
		if err != nil {
			return d.fail("ts must be an RFC 3339 time string or an integer of Unix milliseconds")
		}
		e.TS = t.UnixMilli()
		return nil
	}
	v, ok, err := d.integer()
	if err != nil {
		return err
	}
	if !ok || v < 0 {
		return d.fail("ts must be an RFC 3339 time string or an integer of Unix milliseconds")
	}
	e.TS = v
	return nil
}

// integer reads a JSON number; ok is false when it is not an integer that
// fits in int64 (a fraction, an exponent, too many digits).
func (d *decoder) integer() (v int64, ok bool, err error) {
	start := d.pos
	if d.peek() == '-' {
		d.pos++
	}
	digits := d.pos
	for d.pos < len(d.buf) && d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9' {
		d.pos++
	}
	if d.pos == digits {
		return 0, false, d.fail("expected a number")
	}
	if d.buf[digits] == '0' && d.pos-digits > 1 {
		return 0, false, d.fail("invalid number: leading zero")
	}
	frac := false
	if d.peek() == '.' || d.peek() == 'e' || d.peek() == 'E' {
		frac = true
		if err := d.skipNumberTail(); err != nil {
			return 0, false, err
		}
	}
	if frac {
		return 0, false, nil
	}
	v, perr := strconv.ParseInt(string(d.buf[start:d.pos]), 10, 64)
	return v, perr == nil, nil
}

func (d *decoder) skipNumberTail() error {
	if d.peek() == '.' {
		d.pos++
		s := d.pos
		for d.pos < len(d.buf) && d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9' {
			d.pos++
		}
		if s == d.pos {
			return d.fail("invalid number")
		}
	}
	if c := d.peek(); c == 'e' || c == 'E' {
		d.pos++
		if c := d.peek(); c == '+' || c == '-' {
			d.pos++
		}
		s := d.pos
		for d.pos < len(d.buf) && d.buf[d.pos] >= '0' && d.buf[d.pos] <= '9' {
			d.pos++
		}
		if s == d.pos {
			return d.fail("invalid number")
		}
	}
	return nil
}

// str reads a JSON string starting at '"' and returns its unescaped bytes,
// written in place over the body (unescaping never grows a string). It
// rejects invalid UTF-8 and control characters.
func (d *decoder) str() ([]byte, error) {
	d.pos++ // opening quote
	start := d.pos
	w := d.pos
	for {
		if d.pos >= len(d.buf) {
			return nil, d.fail("unterminated string")
		}
		c := d.buf[d.pos]
		switch {
		case c == '"':
			d.pos++
			return d.buf[start:w], nil
		case c == '\\':
			if d.pos+1 >= len(d.buf) {
				return nil, d.fail("unterminated string")
			}
			esc := d.buf[d.pos+1]
			d.pos += 2
			var r byte
			switch esc {
			case '"', '\\', '/':
				r = esc
			case 'b':
				r = '\b'
			case 'f':
				r = '\f'
			case 'n':
				r = '\n'
			case 'r':
				r = '\r'
			case 't':
				r = '\t'
			case 'u':
				cp, ok := d.hex4()
				if !ok {
					return nil, d.fail("invalid \\u escape in a string")
				}
				if cp >= 0xD800 && cp < 0xDC00 { // high surrogate: needs a low one
					if d.pos+1 < len(d.buf) && d.buf[d.pos] == '\\' && d.buf[d.pos+1] == 'u' {
						d.pos += 2
						lo, ok := d.hex4()
						if !ok || lo < 0xDC00 || lo > 0xDFFF {
							return nil, d.fail("invalid surrogate pair in a string")
						}
						cp = 0x10000 + (cp-0xD800)<<10 + (lo - 0xDC00)
					} else {
						return nil, d.fail("invalid surrogate pair in a string")
					}
				} else if cp >= 0xDC00 && cp <= 0xDFFF {
					return nil, d.fail("invalid surrogate pair in a string")
				}
				w += utf8.EncodeRune(d.buf[w:], cp)
				continue
			default:
				return nil, d.fail("invalid escape in a string")
			}
			d.buf[w] = r
			w++
		case c < 0x20:
			return nil, d.fail("control character in a string")
		case c < utf8.RuneSelf:
			d.buf[w] = c
			w++
			d.pos++
		default:
			r, size := utf8.DecodeRune(d.buf[d.pos:])
			if r == utf8.RuneError && size == 1 {
				return nil, d.fail("string is not valid UTF-8")
			}
			copy(d.buf[w:], d.buf[d.pos:d.pos+size])
			w += size
			d.pos += size
		}
	}
}

func (d *decoder) hex4() (rune, bool) {
	if d.pos+4 > len(d.buf) {
		return 0, false
	}
	var r rune
	for _, c := range d.buf[d.pos : d.pos+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	d.pos += 4
	return r, true
}

// skip skips any JSON value (an unknown field's), bounded in depth.
func (d *decoder) skip(depth int) error {
	if depth > maxDepth {
		return d.fail("value nested too deeply")
	}
	d.ws()
	switch c := d.peek(); {
	case c == '"':
		_, err := d.str()
		return err
	case c == '{' || c == '[':
		end := byte('}')
		if c == '[' {
			end = ']'
		}
		d.pos++
		d.ws()
		if d.peek() == end {
			d.pos++
			return nil
		}
		for {
			d.ws()
			if c == '{' {
				if d.peek() != '"' {
					return d.fail("expected a field name")
				}
				if _, err := d.str(); err != nil {
					return err
				}
				d.ws()
				if d.peek() != ':' {
					return d.fail("expected ':' after a field name")
				}
				d.pos++
			}
			if err := d.skip(depth + 1); err != nil {
				return err
			}
			d.ws()
			n := d.peek()
			d.pos++
			if n == end {
				return nil
			}
			if n != ',' {
				return d.fail("malformed JSON")
			}
		}
	case c == 't':
		return d.literal("true")
	case c == 'f':
		return d.literal("false")
	case c == 'n':
		return d.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		_, _, err := d.integer()
		return err
	default:
		return d.fail("malformed JSON")
	}
}
