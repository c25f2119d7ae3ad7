package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
	"github.com/fleetd/fleetd/internal/quickdesktest"
)

// qdNow is after every captured delivery (2026-12-01T20:02-20:04Z).
var qdNow = time.Date(2026, 12, 1, 20, 5, 0, 0, time.UTC)

func ms(s string) int64 {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UnixMilli()
}

// TestDecodeQuickDeskCaptured decodes every captured delivery as sent.
func TestDecodeQuickDeskCaptured(t *testing.T) {
	want := []QuickDeskDelivery{
		{Name: "device.secret.rotated", Event: fleet.Event{Type: fleet.EventSecretRotated, ID: "evt_d70b6e45-e51a-45a3-a1cd-364fb38737fa", DeviceID: "378283213", TS: ms("2026-12-01T20:02:01.041Z"), DurationSec: -1}},
		{Name: "webhook.test"},
		{Name: "turn.config.changed"},
		{Name: "session.revoked"},
		{Name: "device.online.changed", Event: fleet.Event{Type: fleet.EventOnlineChanged, ID: "evt_3c1f7a52-8d0e-4b7a-9a51-2f6b0c9e4d11", DeviceID: "378283213", Online: true, TS: ms("2026-12-01T20:03:10.512Z"), DurationSec: -1}},
		{Name: "device.online.changed", Event: fleet.Event{Type: fleet.EventOnlineChanged, ID: "evt_9b2e64d0-1f3a-4c55-8e7d-6a0d3b2c1f90", DeviceID: "378283213", Online: false, TS: ms("2026-12-01T20:04:45.100Z"), DurationSec: -1}},
	}
	ds := quickdesktest.Deliveries()
	if len(ds) != len(want) {
		t.Fatalf("%d deliveries, want %d", len(ds), len(want))
	}
	for i, d := range ds {
		t.Run(d.Event(), func(t *testing.T) {
			got, err := DecodeQuickDesk([]byte(d.Body), qdNow)
			if err != nil {
				t.Fatalf("delivery %d: %v", i, err)
			}
			if got != want[i] {
				t.Fatalf("delivery %d:\n got %+v\nwant %+v", i, got, want[i])
			}
		})
	}
}

func TestDecodeQuickDeskValid(t *testing.T) {
	online := func(id, dev string, on bool, ts int64) fleet.Event {
		return fleet.Event{Type: fleet.EventOnlineChanged, ID: id, DeviceID: dev, Online: on, TS: ts, DurationSec: -1}
	}
	for name, tc := range map[string]struct {
		body string
		want QuickDeskDelivery
	}{
		"keys in another order, spaces": {` { "timestamp" : "2026-12-01T20:00:00Z", "event":"device.online.changed",
			"data": {"ts":"2026-12-01T20:00:00.123456789Z", "data":{"online":true,"device_id":"1"}, "id":"evt_1"} } `,
			QuickDeskDelivery{Name: "device.online.changed", Event: online("evt_1", "1", true, ms("2026-12-01T20:00:00.123Z"))}},
		"ts falls back to timestamp": {`{"data":{"data":{"device_id":"1","online":false},"id":"e"},"event":"device.online.changed","timestamp":"2026-12-01T19:00:00Z"}`,
			QuickDeskDelivery{Name: "device.online.changed", Event: online("e", "1", false, ms("2026-12-01T19:00:00Z"))}},
		"no time at all is now": {`{"data":{"data":{"device_id":"1","online":false}},"event":"device.online.changed"}`,
			QuickDeskDelivery{Name: "device.online.changed", Event: online("", "1", false, qdNow.UnixMilli())}},
		"online device from data.device_id": {`{"data":{"device_id":"7","data":{"online":true}},"event":"device.online.changed"}`,
			QuickDeskDelivery{Name: "device.online.changed", Event: online("", "7", true, qdNow.UnixMilli())}},
		"rotation device from data.data.device_id": {`{"data":{"data":{"device_id":"7"},"id":"r1"},"event":"device.secret.rotated"}`,
			QuickDeskDelivery{Name: "device.secret.rotated", Event: fleet.Event{Type: fleet.EventSecretRotated, ID: "r1", DeviceID: "7", TS: qdNow.UnixMilli(), DurationSec: -1}}},
		"nulls are absent": {`{"data":{"id":null,"ts":null,"device_id":"7","data":null,"type":null},"event":"device.secret.rotated","timestamp":null}`,
			QuickDeskDelivery{Name: "device.secret.rotated", Event: fleet.Event{Type: fleet.EventSecretRotated, DeviceID: "7", TS: qdNow.UnixMilli(), DurationSec: -1}}},
		"escaped event name": {`{"data":{"device_id":"7"},"event":"device.secret.rotate\u0064"}`,
			QuickDeskDelivery{Name: "device.secret.rotated", Event: fleet.Event{Type: fleet.EventSecretRotated, DeviceID: "7", TS: qdNow.UnixMilli(), DurationSec: -1}}},
		"unknown event ignores its fields": {`{"data":{"id":"not an id","ts":5,"data":[1,{"x":null}]},"event":"device.renamed","timestamp":"yesterday"}`,
			QuickDeskDelivery{Name: "unknown"}},
		"known ignored event":                  {`{"data":{},"event":"favorite.added"}`, QuickDeskDelivery{Name: "favorite.added"}},
		"ignored event without data":           {`{"event":"webhook.test"}`, QuickDeskDelivery{Name: "webhook.test"}},
		"main webhook type is not QuickDesk's": {`{"event":"device.registered","data":{"device_id":"1"}}`, QuickDeskDelivery{Name: "unknown"}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := DecodeQuickDesk([]byte(tc.body), qdNow)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if got != tc.want {
				t.Fatalf("\n got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecodeQuickDeskInvalid(t *testing.T) {
	const on = `"event":"device.online.changed"`
	for name, tc := range map[string]struct {
		body, msg string
	}{
		"empty":                   {``, "body is empty"},
		"array":                   {`[{"event":"webhook.test"}]`, "one JSON object"},
		"not json":                {`event=webhook.test`, "one JSON object"},
		"truncated":               {`{"event":"webhook.test","data":{`, "expected a field name"},
		"trailing":                {`{"event":"webhook.test"}{}`, "unexpected data after the JSON value"},
		"trailing comma":          {`{"event":"webhook.test",}`, "expected a field name"},
		"no event":                {`{"data":{},"timestamp":"2026-12-01T20:00:00Z"}`, "event is required"},
		"event null":              {`{"event":null}`, "event is required"},
		"event not a string":      {`{"event":42}`, "event must be a string"},
		"invalid utf8 in ignored": {"{\"event\":\"webhook.test\",\"data\":{\"m\":\"\xff\"}}", "not valid UTF-8"},
		"deep nesting in ignored": {`{"event":"webhook.test","data":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, "nested too deeply"},
		"data not an object":      {`{"data":[1],` + on + `}`, "data must be an object"},
		"no data":                 {`{` + on + `}`, "data is required for device.online.changed"},
		"no device":               {`{"data":{"data":{"online":true}},` + on + `}`, "data.data.device_id is required for device.online.changed"},
		"no rotated device":       {`{"data":{"id":"e"},"event":"device.secret.rotated"}`, "data.device_id is required for device.secret.rotated"},
		"no online":               {`{"data":{"data":{"device_id":"1"}},` + on + `}`, "data.data.online is required"},
		"online a string":         {`{"data":{"data":{"device_id":"1","online":"true"}},` + on + `}`, "data.data.online must be true or false"},
		"inner data not object":   {`{"data":{"data":"x","device_id":"1"},` + on + `}`, "data.data must be an object"},
		"device not an id":        {`{"data":{"data":{"device_id":"a b","online":true}},` + on + `}`, "data.data.device_id must be 1-128"},
		"device a number":         {`{"data":{"data":{"device_id":378283213,"online":true}},` + on + `}`, "data.data.device_id must be a string"},
		"devices disagree":        {`{"data":{"device_id":"1","data":{"device_id":"2","online":true}},` + on + `}`, "name different devices"},
		"delivery id not an id":   {`{"data":{"id":"evt {x}","data":{"device_id":"1","online":true}},` + on + `}`, "data.id must be 1-128"},
		"ts a number":             {`{"data":{"ts":1764619321000,"data":{"device_id":"1","online":true}},` + on + `}`, "data.ts must be a string"},
		"ts not rfc3339":          {`{"data":{"ts":"2026-12-01 20:00:00","data":{"device_id":"1","online":true}},` + on + `}`, "data.ts must be an RFC 3339 time string"},
		"timestamp not rfc3339":   {`{"data":{"data":{"device_id":"1","online":true}},"timestamp":"now",` + on + `}`, "timestamp must be an RFC 3339 time string"},
		"ts in the future":        {`{"data":{"ts":"2026-12-01T21:05:01Z","data":{"device_id":"1","online":true}},` + on + `}`, "data.ts is more than 1 hour in the future"},
		"timestamp in the future": {`{"data":{"data":{"device_id":"1","online":true}},"timestamp":"2027-01-01T00:00:00Z",` + on + `}`, "timestamp is more than 1 hour in the future"},
		"type disagrees":          {`{"data":{"type":"device.secret.rotated","data":{"device_id":"1","online":true}},` + on + `}`, `data.type "device.secret.rotated" does not match event "device.online.changed"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := DecodeQuickDesk([]byte(tc.body), qdNow)
			var fe *fleet.Error
			if !errors.As(err, &fe) || fe.Code != fleet.EINVALID {
				t.Fatalf("err = %v, want an EINVALID fleet error", err)
			}
			if !strings.Contains(fe.Message, tc.msg) {
				t.Fatalf("message %q does not contain %q", fe.Message, tc.msg)
			}
		})
	}
}

// TestDecodeQuickDeskReserialised shows why the signature, not the
// decoder, is what tells a changed body: a re-serialised capture is the
// same delivery to the decoder (the endpoint refuses it on its signature).
func TestDecodeQuickDeskReserialised(t *testing.T) {
	for _, d := range quickdesktest.Deliveries() {
		var v any
		if err := json.Unmarshal([]byte(d.Body), &v); err != nil {
			t.Fatal(err)
		}
		re, _ := json.MarshalIndent(v, "", "  ")
		if bytes.Equal(re, []byte(d.Body)) {
			t.Fatalf("%s: re-serialising did not change the bytes", d.Event())
		}
		a, err1 := DecodeQuickDesk([]byte(d.Body), qdNow)
		b, err2 := DecodeQuickDesk(re, qdNow)
		if err1 != nil || err2 != nil || a != b {
			t.Fatalf("%s: %+v (%v) vs re-serialised %+v (%v)", d.Event(), a, err1, b, err2)
		}
	}
}

// FuzzDecodeQuickDesk checks the decoder against encoding/json as the
// reference, seeded with every captured delivery:
//   - whatever the input, it returns without panicking, and any error is
//     an EINVALID *fleet.Error (a 400, never a 500);
//   - a body that is not valid JSON is never accepted;
//   - an accepted body is one JSON object whose "event" is a string; the
//     returned Name is that string folded into QuickDeskEventNames;
//   - an applied event has a device id and delivery id that pass
//     fleet.ValidID (or an empty delivery id), the device id named by
//     the body, and a ts at most 1 h after now;
//   - an event other than the two applied ones decodes to EventUnknown.
func FuzzDecodeQuickDesk(f *testing.F) {
	for _, d := range quickdesktest.Deliveries() {
		f.Add([]byte(d.Body))
	}
	f.Add([]byte(`{"event":"device.online.changed","data":{"device_id":"1","data":{"device_id":"2","online":true}}}`))
	f.Add([]byte(`{"event":"device.secret.rotated","data":{"device_id":"1","type":"device.secret.rotated","ts":"2026-12-01T21:04:59.999999999Z"}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := bytes.Clone(body)
		valid := json.Valid(orig)
		q, err := DecodeQuickDesk(body, qdNow)
		if err != nil {
			var fe *fleet.Error
			if !errors.As(err, &fe) || fe.Code != fleet.EINVALID || fe.Message == "" {
				t.Fatalf("%q: error %v is not an EINVALID fleet error", orig, err)
			}
			return
		}
		if !valid {
			t.Fatalf("%q is not valid JSON but was accepted: %+v", orig, q)
		}
		// The reference reads exact keys, the last duplicate winning, as
		// the decoder does (a struct would match keys case-insensitively).
		var env map[string]json.RawMessage
		if err := json.Unmarshal(orig, &env); err != nil {
			t.Fatalf("%q accepted, but it is not a JSON object: %v", orig, err)
		}
		var event string
		if err := json.Unmarshal(env["event"], &event); err != nil {
			t.Fatalf("%q accepted, but its event is not a string: %v", orig, err)
		}
		if q.Name != FoldQuickDeskEvent([]byte(event)) {
			t.Fatalf("%q: Name %q, event %q", orig, q.Name, event)
		}
		e := q.Event
		switch e.Type {
		case fleet.EventUnknown:
			if e != (fleet.Event{}) {
				t.Fatalf("%q: ignored delivery carries an event %+v", orig, e)
			}
			if q.Name == QuickDeskSecretRotated || q.Name == QuickDeskOnlineChanged {
				t.Fatalf("%q: %s decoded as ignored", orig, q.Name)
			}
		case fleet.EventSecretRotated, fleet.EventOnlineChanged:
			if !fleet.ValidID(e.DeviceID) || e.ID != "" && !fleet.ValidID(e.ID) {
				t.Fatalf("%q: ids %q, %q", orig, e.DeviceID, e.ID)
			}
			var data, inner map[string]json.RawMessage
			var outerID, innerID string
			json.Unmarshal(env["data"], &data)
			json.Unmarshal(data["data"], &inner)
			json.Unmarshal(data["device_id"], &outerID)
			json.Unmarshal(inner["device_id"], &innerID)
			named := outerID == e.DeviceID || innerID == e.DeviceID
			if !named {
				t.Fatalf("%q: device %q is not the body's", orig, e.DeviceID)
			}
			if e.TS > qdNow.UnixMilli()+int64(time.Hour/time.Millisecond) {
				t.Fatalf("%q: ts %d more than 1 h in the future", orig, e.TS)
			}
			if e.DurationSec != -1 || e.SessionID != "" || e.WorkspaceID != "" {
				t.Fatalf("%q: fields of another event type set: %+v", orig, e)
			}
		default:
			t.Fatalf("%q: decoded to type %v", orig, e.Type)
		}
	})
}
