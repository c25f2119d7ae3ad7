package ingest

import (
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/fleetd/fleetd/fleet"
)

// QuickDesk event names (SPEC §3b): the two that fleetd applies, and
// QuickDeskEventNames, the bounded set that metric labels fold the others
// to.
const (
	QuickDeskSecretRotated = "device.secret.rotated"
	QuickDeskOnlineChanged = "device.online.changed"
	// QuickDeskUnknown stands for any name outside QuickDeskEventNames.
	QuickDeskUnknown = "unknown"
)

// QuickDeskEventNames are the event types of QuickDesk's signaling server
// (the canonical list of its event bus, version 4.1.1.0) plus the
// webhook.test that its admin API sends, then QuickDeskUnknown. A metric
// labelled by event name takes its values from this list only, so a
// sender cannot grow the number of series.
var QuickDeskEventNames = []string{
	"device.bound", "device.added", "device.unbound", "device.ownership.lost",
	QuickDeskOnlineChanged, "device.session.updated", "device.access_code.changed",
	"device.remark.changed", "device.device_name.changed", QuickDeskSecretRotated,
	"favorite.added", "favorite.updated", "favorite.removed",
	"session.revoked", "turn.config.changed", "webhook.test",
	QuickDeskUnknown,
}

// FoldQuickDeskEvent returns name as it appears in QuickDeskEventNames, or
// QuickDeskUnknown.
func FoldQuickDeskEvent(name []byte) string {
	for _, n := range QuickDeskEventNames {
		if string(name) == n {
			return n
		}
	}
	return QuickDeskUnknown
}

// QuickDeskDelivery is one decoded QuickDesk webhook delivery.
type QuickDeskDelivery struct {
	// Event is what the delivery means for the fleet: an
	// EventSecretRotated or an EventOnlineChanged, or EventUnknown for a
	// delivery to acknowledge and ignore.
	Event fleet.Event
	// Name is the envelope's event name folded by FoldQuickDeskEvent; it
	// is "" when the body is rejected before its event name is known.
	Name string
}

// qdField is one decoded envelope field: the string or bool it holds
// (set is false when the field is absent or null).
type qdField struct {
	set bool
	s   string
	b   bool
}

// qdEnvelope collects the fields of an envelope in whatever order its
// keys arrive (QuickDesk sorts them, so data comes before event): the
// event type, which decides what is required, is known only at the end.
type qdEnvelope struct {
	event, timestamp qdField
	eventNotString   bool
	dataSeen         bool
	id, ts, typ      qdField // data.id, data.ts, data.type
	device           qdField // data.device_id
	innerDevice      qdField // data.data.device_id
	online           qdField // data.data.online
	// fieldErr is the first field of the wrong kind or value, reported
	// only if the event is one fleetd applies.
	fieldErr error
}

// DecodeQuickDesk parses one QuickDesk delivery (SPEC §3b): an envelope
// {"event": T, "timestamp": RFC 3339, "data": {...}}, keys in any order.
// data.id is the delivery id and data.ts (else timestamp, else now) the
// event time. device.secret.rotated needs data.device_id;
// device.online.changed needs data.data.device_id and data.data.online
// (each falls back to the other device id; when both are given they must
// agree, as must data.type and event). Any other event name decodes to
// EventUnknown whatever its fields, as unknown types of the main webhook
// do, but the body must still be one well-formed JSON object.
//
// Like Decode, it unescapes strings in place: the caller must own body
// and keep it unchanged while the event is in use. Any error is a
// *fleet.Error with code EINVALID whose message names the field; nothing
// of a rejected delivery is to be applied.
func DecodeQuickDesk(body []byte, now time.Time) (QuickDeskDelivery, error) {
	d := decoder{buf: body, nowMs: now.UnixMilli(), index: -1}
	var env qdEnvelope
	d.ws()
	if d.pos >= len(d.buf) {
		return QuickDeskDelivery{}, d.fail("body is empty: send one QuickDesk delivery {\"event\",\"timestamp\",\"data\"}")
	}
	if d.peek() != '{' {
		return QuickDeskDelivery{}, d.fail("body must be one JSON object {\"event\",\"timestamp\",\"data\"}")
	}
	if err := d.object(0, func(key string) error { return d.envelopeField(&env, key) }); err != nil {
		return QuickDeskDelivery{}, err
	}
	d.ws()
	if d.pos != len(d.buf) {
		return QuickDeskDelivery{}, d.fail("unexpected data after the JSON value")
	}
	if !env.event.set {
		if env.eventNotString {
			return QuickDeskDelivery{}, invalid("event must be a string")
		}
		return QuickDeskDelivery{}, invalid("event is required")
	}
	q := QuickDeskDelivery{Name: FoldQuickDeskEvent([]byte(env.event.s))}
	switch env.event.s {
	case QuickDeskSecretRotated:
		q.Event.Type = fleet.EventSecretRotated
	case QuickDeskOnlineChanged:
		q.Event.Type = fleet.EventOnlineChanged
	default:
		return q, nil // ignored, whatever its fields
	}
	if env.fieldErr != nil {
		return q, env.fieldErr
	}
	if !env.dataSeen {
		return q, invalid("data is required for " + env.event.s)
	}
	if env.typ.set && env.typ.s != env.event.s {
		return q, invalid("data.type " + quote(env.typ.s) + " does not match event " + quote(env.event.s))
	}
	if env.device.set && env.innerDevice.set && env.device.s != env.innerDevice.s {
		return q, invalid("data.device_id and data.data.device_id name different devices")
	}
	e := &q.Event
	e.DurationSec = -1
	e.ID = env.id.s
	switch e.Type {
	case fleet.EventSecretRotated:
		e.DeviceID = env.device.s
		if !env.device.set {
			e.DeviceID = env.innerDevice.s
			if !env.innerDevice.set {
				return q, invalid("data.device_id is required for " + env.event.s)
			}
		}
	case fleet.EventOnlineChanged:
		e.DeviceID = env.innerDevice.s
		if !env.innerDevice.set {
			e.DeviceID = env.device.s
			if !env.device.set {
				return q, invalid("data.data.device_id is required for " + env.event.s)
			}
		}
		if !env.online.set {
			return q, invalid("data.data.online is required for " + env.event.s)
		}
		e.Online = env.online.b
	}
	e.TS = d.nowMs
	field := ""
	switch {
	case env.ts.set:
		e.TS, field = parseQDTime(env.ts.s), "data.ts"
	case env.timestamp.set:
		e.TS, field = parseQDTime(env.timestamp.s), "timestamp"
	}
	if e.TS > d.nowMs+futureSkewMs {
		return q, invalid(field + " is more than 1 hour in the future")
	}
	return q, nil
}

func invalid(msg string) error { return fleet.Errorf(fleet.EINVALID, "%s", msg) }

// quote returns s in double quotes, cut to 64 bytes: enough to recognise a
// type in an error message without echoing a whole field back.
func quote(s string) string {
	if len(s) > 64 {
		n := 64
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		s = s[:n] + "…"
	}
	return `"` + s + `"`
}

// parseQDTime returns t, a time string already validated by qdTime, in
// Unix milliseconds.
func parseQDTime(s string) int64 {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t.UnixMilli()
}

// object reads a JSON object at d.pos, calling field for each key with
// d.pos at its value; field must consume the value. depth bounds nesting
// as skip does.
func (d *decoder) object(depth int, field func(key string) error) error {
	if depth > maxDepth {
		return d.fail("value nested too deeply")
	}
	d.pos++ // '{'
	d.ws()
	if d.peek() == '}' {
		d.pos++
		return nil
	}
	for {
		key, err := d.fieldName()
		if err != nil {
			return err
		}
		if err := field(key); err != nil {
			return err
		}
		d.ws()
		c := d.peek()
		d.pos++
		if c == '}' {
			return nil
		}
		if c != ',' {
			return d.fail("expected ',' or '}' in an object")
		}
	}
}

// envelopeField decodes one top-level field of the envelope. Syntax
// errors are returned; a value of the wrong kind is skipped and recorded
// in env.fieldErr.
func (d *decoder) envelopeField(env *qdEnvelope, key string) error {
	switch key {
	case "event":
		if c := d.peek(); c != '"' && c != 'n' {
			env.event, env.eventNotString = qdField{}, true
			return d.skip(1)
		}
		env.eventNotString = false
		return d.qdString(env, &env.event, "event", qdName)
	case "timestamp":
		return d.qdString(env, &env.timestamp, "timestamp", qdTime)
	case "data":
		switch d.peek() {
		case '{':
			env.dataSeen = true
			return d.object(1, func(k string) error { return d.dataField(env, k) })
		case 'n':
			return d.literal("null")
		}
		return d.qdWrong(env, 1, "data must be an object")
	}
	return d.skip(1)
}

// dataField decodes one field of data.
func (d *decoder) dataField(env *qdEnvelope, key string) error {
	switch key {
	case "id":
		return d.qdString(env, &env.id, "data.id", qdID)
	case "ts":
		return d.qdString(env, &env.ts, "data.ts", qdTime)
	case "type":
		return d.qdString(env, &env.typ, "data.type", qdName)
	case "device_id":
		return d.qdString(env, &env.device, "data.device_id", qdID)
	case "data":
		switch d.peek() {
		case '{':
			return d.object(2, func(k string) error { return d.innerField(env, k) })
		case 'n':
			return d.literal("null")
		}
		return d.qdWrong(env, 2, "data.data must be an object")
	}
	return d.skip(2)
}

// innerField decodes one field of data.data.
func (d *decoder) innerField(env *qdEnvelope, key string) error {
	switch key {
	case "device_id":
		return d.qdString(env, &env.innerDevice, "data.data.device_id", qdID)
	case "online":
		switch d.peek() {
		case 't':
			env.online = qdField{set: true, b: true}
			return d.literal("true")
		case 'f':
			env.online = qdField{set: true}
			return d.literal("false")
		case 'n':
			env.online = qdField{}
			return d.literal("null")
		}
		return d.qdWrong(env, 3, "data.data.online must be true or false")
	}
	return d.skip(3)
}

// Kinds of string field, for qdString's checks.
const (
	qdName = iota // an event name: any string (an unknown one is ignored)
	qdID          // fleet.ValidID
	qdTime        // RFC 3339
)

// qdString decodes a string field into f. null is the same as absent;
// another kind of value, or a string that fails its check, is recorded
// as env.fieldErr (the field stays unset).
func (d *decoder) qdString(env *qdEnvelope, f *qdField, name string, kind int) error {
	switch d.peek() {
	case 'n':
		*f = qdField{}
		return d.literal("null")
	case '"':
	default:
		return d.qdWrong(env, 3, name+" must be a string")
	}
	b, err := d.str()
	if err != nil {
		return err
	}
	s := unsafe.String(unsafe.SliceData(b), len(b))
	var msg string
	switch kind {
	case qdID:
		if !fleet.ValidID(s) {
			msg = name + " must be 1-128 characters of [A-Za-z0-9._:@-]"
		}
	case qdTime:
		if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
			msg = name + " must be an RFC 3339 time string"
		}
	}
	if msg != "" {
		*f = qdField{}
		if env.fieldErr == nil {
			env.fieldErr = invalid(msg)
		}
		return nil
	}
	*f = qdField{set: true, s: s}
	return nil
}

// qdWrong skips a value of the wrong kind and records msg.
func (d *decoder) qdWrong(env *qdEnvelope, depth int, msg string) error {
	if err := d.skip(depth); err != nil {
		return err
	}
	if env.fieldErr == nil {
		env.fieldErr = invalid(msg)
	}
	return nil
}
