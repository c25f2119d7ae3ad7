package ingest

import (
	"strings"
	"testing"
	"time"

	"github.com/fleetd/fleetd/fleet"
)

func TestDecodeDelivery(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	online := `{"type":"device.online.changed","qdDeviceId":"d1","online":true}`
	withID := `{"type":"device.online.changed","qdDeviceId":"d1","online":true,"id":"own"}`
	tests := map[string]struct {
		body, deliveryID string
		wantIDs          []string
		wantErr          string // a part of the message; "" for success
	}{
		"unsigned keeps ids as sent":   {"[" + online + "," + withID + "]", "", []string{"", "own"}, ""},
		"single event gets the id":     {online, "msg_1", []string{"msg_1"}, ""},
		"single in a batch gets :0":    {"[" + online + "]", "msg_1", []string{"msg_1"}, ""},
		"batch gets <id>:<i>":          {"[" + online + "," + withID + "," + online + "]", "msg_1", []string{"msg_1:0", "own", "msg_1:2"}, ""},
		"own id wins in a single":      {withID, "msg_1", []string{"own"}, ""},
		"empty batch":                  {"[]", "msg_1", nil, ""},
		"malformed webhook-id":         {online, "msg 1", nil, "webhook-id must be"},
		"webhook-id too long for :<i>": {"[" + online + "," + online + "]", strings.Repeat("m", 127), nil, "too long to derive"},
		"decode errors pass through":   {`[{"type":"device.online.changed"}]`, "msg_1", nil, "event 0"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			events, err := DecodeDelivery([]byte(tc.body), tc.deliveryID, now, 100)
			if tc.wantErr != "" {
				if fleet.ErrorCode(err) != fleet.EINVALID || !strings.Contains(fleet.ErrorMessage(err), tc.wantErr) {
					t.Fatalf("got %v, want EINVALID naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(events) != len(tc.wantIDs) {
				t.Fatalf("%d events, want %d", len(events), len(tc.wantIDs))
			}
			for i, e := range events {
				if e.ID != tc.wantIDs[i] {
					t.Errorf("event %d: id %q, want %q", i, e.ID, tc.wantIDs[i])
				}
			}
		})
	}
}

// TestEventsHint: a batch is decoded into one allocation, never one larger
// than the batch limit allows.
func TestEventsHint(t *testing.T) {
	for name, tc := range map[string]struct {
		body     string
		maxBatch int
		want     int
	}{
		"empty":       {"", 1000, 1},
		"one object":  {`{"type":"x"}`, 1000, 1},
		"small batch": {"[" + strings.Repeat("x", 78) + "]", 1000, 3},
		"capped":      {"[" + strings.Repeat("x", 100000) + "]", 1000, 1000},
	} {
		t.Run(name, func(t *testing.T) {
			if got := eventsHint([]byte(tc.body), tc.maxBatch); got != tc.want {
				t.Fatalf("eventsHint = %d, want %d", got, tc.want)
			}
		})
	}
}
