package ingest

import (
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

var now = time.Date(2026, 6, 28, 7, 30, 0, 0, time.UTC)

func decode(body string) ([]fleet.Event, error) {
	return Decode([]byte(body), nil, now, 1000)
}

func TestDecodeValid(t *testing.T) {
	for name, tc := range map[string]struct {
		body string
		want []fleet.Event
	}{
		"single online": {`{"type":"device.online.changed","qdDeviceId":"295758162","online":true}`,
			[]fleet.Event{{Type: fleet.EventOnlineChanged, DeviceID: "295758162", Online: true, TS: now.UnixMilli(), DurationSec: -1}}},
		"registered with user and ts string": {`{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"qz-win-105","os":"Windows","userId":"u@x","ts":"2026-06-28T07:32:35Z","id":"ev-1"}`,
			[]fleet.Event{{Type: fleet.EventDeviceRegistered, ID: "ev-1", DeviceID: "d1", WorkspaceID: "acme", Name: "qz-win-105", OS: "Windows", UserID: "u@x", TS: time.Date(2026, 6, 28, 7, 32, 35, 0, time.UTC).UnixMilli(), DurationSec: -1}}},
		"batch with ms ts and duration": {` [ {"type":"session.started","qdDeviceId":"d1","sessionId":"s1","ts":1782631955000},
			{"type":"session.ended","qdDeviceId":"d1","sessionId":"s1","status":"success","durationSec":120} ] `,
			[]fleet.Event{{Type: fleet.EventSessionStarted, DeviceID: "d1", SessionID: "s1", TS: 1782631955000, DurationSec: -1},
				{Type: fleet.EventSessionEnded, DeviceID: "d1", SessionID: "s1", Status: "success", DurationSec: 120, TS: now.UnixMilli()}}},
		"empty batch": {`[]`, nil},
		"unknown type ignores fields": {`{"type":"device.renamed","qdDeviceId":"???","x":[1,{"a":null}]}`,
			[]fleet.Event{{Type: fleet.EventUnknown}}},
		"unknown fields skipped, escapes decoded": {`{"type":"device.registered","qdDeviceId":"d1","workspaceId":"w","name":"caf\u00e9 \"x\" \ud83d\ude00","os":"Linux\n","extra":{"deep":[true,false,null,-1.5e3]}}`,
			[]fleet.Event{{Type: fleet.EventDeviceRegistered, DeviceID: "d1", WorkspaceID: "w", Name: "café \"x\" 😀", OS: "Linux\n", TS: now.UnixMilli(), DurationSec: -1}}},
		"null optional is absent": {`{"type":"device.deleted","qdDeviceId":"d1","id":null}`,
			[]fleet.Event{{Type: fleet.EventDeviceDeleted, DeviceID: "d1", TS: now.UnixMilli(), DurationSec: -1}}},
	} {
		t.Run(name, func(t *testing.T) {
			got, err := decode(tc.body)
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %d events, want %d: %+v", len(got), len(tc.want), got)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("event %d:\n got %+v\nwant %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	long := strings.Repeat("a", 129)
	for name, tc := range map[string]struct {
		body, msg string
	}{
		"empty":                  {``, "body is empty"},
		"not json":               {`hello`, "JSON object or an array"},
		"number":                 {`42`, "JSON object or an array"},
		"trailing":               {`{"type":"x"} {}`, "unexpected data"},
		"missing type":           {`{"qdDeviceId":"d1"}`, "event 0: type is required"},
		"type not string":        {`{"type":1}`, "event 0: type must be a string"},
		"missing device":         {`{"type":"device.online.changed","online":true}`, "event 0: qdDeviceId is required"},
		"missing online":         {`{"type":"device.online.changed","qdDeviceId":"d"}`, "online is required"},
		"online not bool":        {`{"type":"device.online.changed","qdDeviceId":"d","online":"true"}`, "online must be true or false"},
		"bad index named":        {`[{"type":"device.deleted","qdDeviceId":"ok"},{"type":"device.deleted","qdDeviceId":"a b"}]`, "event 1: qdDeviceId must be 1-128"},
		"id with brace":          {`{"type":"device.deleted","qdDeviceId":"a{b}"}`, "qdDeviceId must be 1-128"},
		"id with newline":        {`{"type":"device.deleted","qdDeviceId":"a\nb"}`, "qdDeviceId must be 1-128"},
		"id too long":            {`{"type":"device.deleted","qdDeviceId":"` + long + `"}`, "qdDeviceId must be 1-128"},
		"empty id":               {`{"type":"device.deleted","qdDeviceId":""}`, "qdDeviceId must be 1-128"},
		"bad delivery id":        {`{"type":"device.deleted","qdDeviceId":"d","id":"x y"}`, "id must be 1-128"},
		"name too long":          {`{"type":"device.registered","qdDeviceId":"d","workspaceId":"w","os":"L","name":"` + strings.Repeat("é", 257) + `"}`, "name must be at most 256"},
		"invalid utf8":           {"{\"type\":\"device.registered\",\"qdDeviceId\":\"d\",\"workspaceId\":\"w\",\"os\":\"L\",\"name\":\"\xff\"}", "not valid UTF-8"},
		"lone surrogate":         {`{"type":"device.registered","qdDeviceId":"d","workspaceId":"w","os":"L","name":"\ud800"}`, "surrogate"},
		"negative duration":      {`{"type":"session.ended","qdDeviceId":"d","sessionId":"s","status":"success","durationSec":-1}`, "durationSec must be a non-negative integer"},
		"fractional duration":    {`{"type":"session.ended","qdDeviceId":"d","sessionId":"s","status":"success","durationSec":1.5}`, "durationSec must be a non-negative integer"},
		"huge duration":          {`{"type":"session.ended","qdDeviceId":"d","sessionId":"s","status":"success","durationSec":99999999999999999999999}`, "durationSec must be a non-negative integer"},
		"duration over 366 days": {`{"type":"session.ended","qdDeviceId":"d","sessionId":"s","status":"success","durationSec":31622401}`, "at most 31622400"},
		"duration 1e17":          {`{"type":"session.ended","qdDeviceId":"d","sessionId":"s","status":"success","durationSec":100000000000000000}`, "at most 31622400"},
		"numeric string ts":      {`{"type":"device.deleted","qdDeviceId":"d","ts":"1782631955000"}`, "ts must be an RFC 3339"},
		"ts far future":          {`{"type":"device.deleted","qdDeviceId":"d","ts":"2026-06-28T09:30:01Z"}`, "more than 1 hour in the future"},
		"missing status":         {`{"type":"session.ended","qdDeviceId":"d","sessionId":"s"}`, "status is required"},
		"deep nesting":           {`{"type":"x","a":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "nested too deeply"},
		"array of non objects":   {`[1,2]`, "event 0: expected an event object"},
		"unterminated":           {`{"type":"device.deleted","qdDeviceId":"d`, "unterminated string"},
		"control char":           {"{\"type\":\"device.deleted\",\"qdDeviceId\":\"d\",\"x\":\"a\tb\"}", "control character"},
		"missing colon":          {`{"type" "x"}`, "expected ':'"},
		"trailing comma":         {`{"type":"x",}`, "expected a field name"},
		"batch over the limit":   {`[` + strings.Repeat(`{"type":"x"},`, 1000) + `{"type":"x"}]`, "more than 1000 events"},
		"registered without os":  {`{"type":"device.registered","qdDeviceId":"d","workspaceId":"w","name":"n"}`, "os is required"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := decode(tc.body)
			if fleet.ErrorCode(err) != fleet.EINVALID {
				t.Fatalf("err = %v, want invalid", err)
			}
			if !strings.Contains(fleet.ErrorMessage(err), tc.msg) {
				t.Fatalf("message %q does not contain %q", fleet.ErrorMessage(err), tc.msg)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"type":"device.online.changed","qdDeviceId":"295758162","online":true}`,
		`[{"type":"device.registered","qdDeviceId":"d1","workspaceId":"acme","name":"n","os":"Linux","userId":"u","id":"e1","ts":"2026-06-28T07:32:35Z"}]`,
		`[{"type":"session.started","qdDeviceId":"d1","sessionId":"s1","ts":1782631955000},{"type":"session.ended","qdDeviceId":"d1","sessionId":"s1","status":"success","durationSec":120}]`,
		`{"type":"x","a":{"b":[1,2,{"c":"\u00e9\ud83d\ude00"}]}}`, `[]`, `{}`, `[`, `"`, `{"type":"device.deleted","qdDeviceId":"d","ts":-1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := string(body)
		evs, err := Decode(body, nil, now, 1000)
		if err != nil {
			if fleet.ErrorCode(err) != fleet.EINVALID {
				t.Fatalf("non-invalid error %v for %q", err, orig)
			}
			return
		}
		for i, e := range evs {
			if e.Type == fleet.EventUnknown {
				continue
			}
			for _, id := range []string{e.DeviceID, e.WorkspaceID, e.SessionID} {
				if id != "" && !fleet.ValidID(id) {
					t.Fatalf("event %d: invalid id %q accepted from %q", i, id, orig)
				}
			}
			if e.DeviceID == "" || e.TS > now.UnixMilli()+futureSkewMs {
				t.Fatalf("event %d accepted without device or with future ts: %+v", i, e)
			}
		}
	})
}

func BenchmarkDecodeSingle(b *testing.B) {
	body := []byte(`{"type":"device.online.changed","qdDeviceId":"295758162","online":true,"id":"evt-000000001","ts":1782631955000}`)
	buf := make([]byte, len(body))
	dst := make([]fleet.Event, 0, 1)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		copy(buf, body)
		if _, err := Decode(buf, dst, now, 1000); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeBatch100(b *testing.B) {
	var sb strings.Builder
	sb.WriteByte('[')
	for i := range 100 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"type":"session.ended","qdDeviceId":"295758162","sessionId":"s-1","status":"success","durationSec":120,"id":"evt-000000001","ts":"2026-06-28T07:32:35Z"}`)
	}
	sb.WriteByte(']')
	body := []byte(sb.String())
	buf := make([]byte, len(body))
	dst := make([]fleet.Event, 0, 100)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		copy(buf, body)
		if _, err := Decode(buf, dst, now, 1000); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecodeAllocs keeps the single-event decode free of allocations.
func TestDecodeAllocs(t *testing.T) {
	body := []byte(`{"type":"device.online.changed","qdDeviceId":"295758162","online":true,"id":"evt-1","ts":1782631955000}`)
	buf := make([]byte, len(body))
	dst := make([]fleet.Event, 0, 1)
	n := testing.AllocsPerRun(100, func() {
		copy(buf, body)
		if _, err := Decode(buf, dst, now, 1000); err != nil {
			t.Fatal(err)
		}
	})
	if n > 0 {
		t.Fatalf("decode allocates %.0f times per event, budget 0", n)
	}
}
