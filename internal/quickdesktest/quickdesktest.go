// Package quickdesktest holds webhook deliveries of a real QuickDesk
// signaling server (version 4.1.1.0), for the tests of fleetd's QuickDesk
// endpoint (SPEC §3b) and the seeds of its decoder's fuzz target.
//
// deliveries.jsonl is a byte-for-byte copy of the capture the team keeps
// in shared/quickdesk/ (its README says what each line is): one JSON
// object a line with source ("captured" or "constructed"), headers as sent
// and body, the raw body whose bytes X-Webhook-Signature signs with
// Secret. The copy lives in the module so tests and CI need nothing
// outside it; Sum pins it, and TestCaptureUnchanged checks every
// signature against its body, which no edited body would pass.
package quickdesktest

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
)

// Secret is the shared secret that signs every delivery.
const Secret = "s3cret"

// Sum is the SHA-256 of deliveries.jsonl as captured.
const Sum = "b6b1ca13d1bae08f8903b1f8359e9df6eca52ac3f0a71d218236865579527364"

//go:embed deliveries.jsonl
var raw []byte

// Raw returns the capture file as it is.
func Raw() []byte { return bytes.Clone(raw) }

// Delivery is one captured POST.
type Delivery struct {
	Source  string            `json:"source"`
	Headers map[string]string `json:"headers"`
	// Body is the raw body, byte for byte.
	Body string `json:"body"`
}

// Event returns the delivery's event name, read with encoding/json (only
// for naming test cases: the code under test has its own decoder).
func (d Delivery) Event() string {
	var env struct {
		Event string `json:"event"`
	}
	json.Unmarshal([]byte(d.Body), &env)
	return env.Event
}

// Deliveries returns every delivery of the capture, in file order. It
// panics on a capture that does not parse, which a test would report as
// the failure it is.
func Deliveries() []Delivery {
	var out []Delivery
	for i, line := range bytes.Split(bytes.TrimSpace(raw), []byte("\n")) {
		var d Delivery
		if err := json.Unmarshal(line, &d); err != nil {
			panic(fmt.Sprintf("quickdesktest: line %d: %v", i+1, err))
		}
		out = append(out, d)
	}
	return out
}
